// encodings.json (PRODUCT.md "Artifacts"): the quantization encodings of every quantized
// tensor in the layout AIMET exports (format version 0.6.1) and other deployment
// toolchains (e.g. Qualcomm's converters' quantization overrides) read:
//
//   {"version": "0.6.1",
//    "activation_encodings": {"<tensor>": [{"bitwidth": 8, "dtype": "int",
//                             "is_symmetric": "False", "max": .., "min": .., "offset": ..,
//                             "scale": ..}]},
//    "param_encodings": {"<state_dict key of the weight>": [one object per output channel]}}
//
// As in AIMET, is_symmetric is the string "True" or "False" and offset = -zero_point, so
// a value is (q + offset) * scale for an unsigned code q in [0, 2^bitwidth - 1] (from 1
// in the tensorrt profile's narrow weight range, where min = -max).
#ifndef OMPQ_WORKERS_ENGINE_ENCODINGS_H_
#define OMPQ_WORKERS_ENGINE_ENCODINGS_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// The encodings format version written to "version".
inline constexpr char kEncodingsVersion[] = "0.6.1";

/// One encoding as a JSON object, keys in AIMET's order.
nlohmann::ordered_json EncodingToJson(const Encoding& encoding);

/// Collects encodings in the order they are added and renders encodings.json.
class EncodingsBuilder {
 public:
  /// A per-tensor activation quantizer for the tensor `name` (e.g. a layer's input).
  /// INVALID_ARGUMENT for an empty name or a per-channel quantizer; ALREADY_EXISTS for a
  /// name given twice.
  absl::Status AddActivation(const std::string& name, const QuantParams& params);

  /// A parameter quantizer (by state_dict key, "layer.weight"), one entry per channel.
  /// INVALID_ARGUMENT for an empty name or invalid params; ALREADY_EXISTS for a repeat.
  absl::Status AddParam(const std::string& name, const QuantParams& params);

  /// The whole document.
  nlohmann::ordered_json Build() const;

 private:
  nlohmann::ordered_json activations_ = nlohmann::ordered_json::object();
  nlohmann::ordered_json params_ = nlohmann::ordered_json::object();
};

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_ENCODINGS_H_
