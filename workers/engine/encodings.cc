#include "workers/engine/encodings.h"

#include "absl/strings/str_cat.h"

namespace ompq::engine {
namespace {

// A list of encodings under `name` in `section`, after the checks both kinds share.
absl::Status Add(nlohmann::ordered_json& section, const std::string& name,
                 const QuantParams& params) {
  if (name.empty()) return absl::InvalidArgumentError("an encoding needs a tensor name");
  if (section.contains(name)) {
    return absl::AlreadyExistsError(absl::StrCat("encoding for '", name, "' added twice"));
  }
  std::vector<Encoding> encodings = EncodingsOf(params);
  if (encodings.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("quantizer of '", name, "' has no scale"));
  }
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Encoding& e : encodings) {
    if (!(e.scale > 0) || e.bitwidth < 1 || e.bitwidth > 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("quantizer of '", name, "' has a non-positive scale or bad bitwidth"));
    }
    list.push_back(EncodingToJson(e));
  }
  section[name] = std::move(list);
  return absl::OkStatus();
}

}  // namespace

nlohmann::ordered_json EncodingToJson(const Encoding& encoding) {
  nlohmann::ordered_json j;
  j["bitwidth"] = encoding.bitwidth;
  j["dtype"] = "int";
  // AIMET writes Python's str(bool); readers of its files compare against these strings.
  j["is_symmetric"] = encoding.is_symmetric ? "True" : "False";
  j["max"] = encoding.max;
  j["min"] = encoding.min;
  j["offset"] = encoding.offset;
  j["scale"] = encoding.scale;
  return j;
}

absl::Status EncodingsBuilder::AddActivation(const std::string& name, const QuantParams& params) {
  if (params.axis != -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation '", name, "' must use a per-tensor quantizer"));
  }
  return Add(activations_, name, params);
}

absl::Status EncodingsBuilder::AddParam(const std::string& name, const QuantParams& params) {
  return Add(params_, name, params);
}

nlohmann::ordered_json EncodingsBuilder::Build() const {
  nlohmann::ordered_json doc;
  doc["version"] = kEncodingsVersion;
  doc["activation_encodings"] = activations_;
  doc["param_encodings"] = params_;
  return doc;
}

}  // namespace ompq::engine
