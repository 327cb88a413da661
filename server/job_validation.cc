#include "server/job_validation.h"

#include <re2/re2.h>

#include <cmath>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/digest.h"
#include "common/job_limits.h"
#include "common/status_macros.h"

namespace ompq {
namespace {

using limits::kMaxBits;
constexpr int kMinBits = limits::kMinWeightBits;
constexpr size_t kMaxRequestIdLength = 128;
constexpr size_t kMaxLabels = 64;
constexpr size_t kMaxLabelKeyLength = 63;
constexpr size_t kMaxLabelValueLength = 256;
constexpr size_t kMaxDisplayNameLength = 256;
constexpr size_t kMaxPins = 1024;
constexpr int kMaxWeightBitChoices = kMaxBits;

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

bool InBitRange(int bits) { return bits >= kMinBits && bits <= kMaxBits; }

bool IsPrintable(absl::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return false;
    }
  }
  return true;
}

absl::Status CheckRequiredDigest(const std::string& digest, absl::string_view field,
                                 absl::string_view what) {
  if (digest.empty()) {
    return Invalid(absl::StrCat("spec.", field, " is required: upload the ", what,
                                " with BlobService.Write and pass its digest \"sha256:<hex>\""));
  }
  if (!IsValidDigest(digest)) {
    return Invalid(absl::StrCat("spec.", field, " '", digest,
                                "' is not a digest: expected \"sha256:\" and 64 lowercase hex "
                                "digits"));
  }
  return absl::OkStatus();
}

absl::Status CheckOptionalDigest(const std::string& digest, absl::string_view field) {
  if (digest.empty() || IsValidDigest(digest)) {
    return absl::OkStatus();
  }
  return Invalid(absl::StrCat("spec.", field, " '", digest,
                              "' is not a digest: expected \"sha256:\" and 64 lowercase hex "
                              "digits, or leave it empty"));
}

absl::Status CheckBudgets(const v1::JobSpec& spec) {
  if (!spec.has_size_budget_bytes() && !spec.has_bops_budget()) {
    return Invalid(
        "spec: a budget is required: set size_budget_bytes (--size) or bops_budget (--bops)");
  }
  if (spec.has_size_budget_bytes() && spec.size_budget_bytes() <= 0) {
    return Invalid(
        absl::StrCat("spec.size_budget_bytes must be > 0, got ", spec.size_budget_bytes()));
  }
  if (spec.has_bops_budget() && spec.bops_budget() <= 0) {
    return Invalid(absl::StrCat("spec.bops_budget must be > 0, got ", spec.bops_budget()));
  }
  return absl::OkStatus();
}

absl::Status CheckAndFillBits(v1::JobSpec* spec) {
  if (spec->weight_bits_size() > kMaxWeightBitChoices) {
    return Invalid(absl::StrCat("spec.weight_bits has ", spec->weight_bits_size(),
                                " entries; give at most ", kMaxWeightBitChoices,
                                " distinct values in 1..16"));
  }
  std::set<int> seen;
  for (int bits : spec->weight_bits()) {
    if (!InBitRange(bits)) {
      return Invalid(absl::StrCat("spec.weight_bits: ", bits,
                                  " is out of range; each bit-width must be in 1..16"));
    }
    if (!seen.insert(bits).second) {
      return Invalid(
          absl::StrCat("spec.weight_bits: ", bits, " is listed twice; list each bit-width once"));
    }
  }
  if (spec->weight_bits().empty()) {
    for (int bits = limits::kDefaultMinWeightBits; bits <= limits::kDefaultMaxWeightBits; ++bits) {
      spec->add_weight_bits(bits);
    }
  }
  if (spec->act_bits() == 0) {
    spec->set_act_bits(limits::kDefaultActBits);
  } else if (spec->act_bits() < limits::kMinActBits || spec->act_bits() > kMaxBits) {
    return Invalid(absl::StrCat("spec.act_bits must be in ", limits::kMinActBits, "..", kMaxBits,
                                " (or 0 for the default ", limits::kDefaultActBits, "), got ",
                                spec->act_bits()));
  }
  if (!spec->has_pin_first_last_bits()) {
    spec->set_pin_first_last_bits(limits::kDefaultPinFirstLastBits);
  } else if (spec->pin_first_last_bits() != 0 && !InBitRange(spec->pin_first_last_bits())) {
    return Invalid(absl::StrCat("spec.pin_first_last_bits must be in 1..16, or 0 for no pin, got ",
                                spec->pin_first_last_bits()));
  }
  return absl::OkStatus();
}

absl::Status CheckPins(const v1::JobSpec& spec) {
  if (spec.pins_size() > static_cast<int>(kMaxPins)) {
    return Invalid(absl::StrCat("spec.pins has ", spec.pins_size(), " entries; at most ", kMaxPins,
                                " are allowed"));
  }
  for (int i = 0; i < spec.pins_size(); ++i) {
    const v1::LayerPin& pin = spec.pins(i);
    const std::string field = absl::StrCat("spec.pins[", i, "]");
    if (pin.name_regex().empty()) {
      return Invalid(absl::StrCat(field,
                                  ".name_regex is empty; give a regular expression "
                                  "matching layer names, e.g. \"layer1\\..*\""));
    }
    RE2 re(pin.name_regex(), RE2::Quiet);
    if (!re.ok()) {
      return Invalid(absl::StrCat(field, ".name_regex '", pin.name_regex(),
                                  "' is not a valid regular expression (RE2): ", re.error()));
    }
    if (!InBitRange(pin.bits())) {
      return Invalid(absl::StrCat(field, ".bits must be in 1..16, got ", pin.bits()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckObjective(v1::JobSpec* spec) {
  if (!v1::Objective_IsValid(spec->objective())) {
    return Invalid(absl::StrCat("spec.objective ", static_cast<int>(spec->objective()),
                                " is not a known objective; use OBJECTIVE_ORTHOGONALITY or "
                                "OBJECTIVE_DISTORTION"));
  }
  if (spec->objective() == v1::OBJECTIVE_UNSPECIFIED) spec->set_objective(kDefaultObjective);
  if (spec->has_frontier_evals()) {
    if (spec->frontier_evals() < 0 || spec->frontier_evals() > limits::kFrontierPoints) {
      return Invalid(absl::StrCat("spec.frontier_evals must be in 0..", limits::kFrontierPoints,
                                  ", got ", spec->frontier_evals()));
    }
    if (spec->frontier_evals() > 0 && spec->eval_digest().empty()) {
      return Invalid(
          "spec.frontier_evals: measuring the frontier's top-1 needs eval data: pass --eval "
          "FILE, or leave --frontier-evals out");
    }
  } else {
    spec->set_frontier_evals(spec->eval_digest().empty() ? 0 : limits::kDefaultFrontierEvals);
  }
  return absl::OkStatus();
}

absl::Status CheckExportProfile(v1::JobSpec* spec) {
  if (!v1::ExportProfile_IsValid(spec->export_profile())) {
    return Invalid(absl::StrCat("spec.export_profile ", static_cast<int>(spec->export_profile()),
                                " is not a known profile; use EXPORT_PROFILE_DEFAULT or "
                                "EXPORT_PROFILE_TENSORRT"));
  }
  if (spec->export_profile() == v1::EXPORT_PROFILE_UNSPECIFIED) {
    spec->set_export_profile(v1::EXPORT_PROFILE_DEFAULT);
  }
  return absl::OkStatus();
}

absl::Status CheckFinetune(v1::JobSpec* spec) {
  if (!v1::FinetuneMode_IsValid(spec->finetune())) {
    return Invalid(absl::StrCat("spec.finetune ", static_cast<int>(spec->finetune()),
                                " is not a known mode; use NONE"));
  }
  if (spec->finetune() == v1::FINETUNE_MODE_UNSPECIFIED) {
    spec->set_finetune(kDefaultFinetuneMode);
  }
  // QAT trains on labelled data; no other mode reads training data.
  if (spec->finetune() == v1::QAT && spec->train_digest().empty()) {
    return Invalid(
        "spec.train_digest: --finetune qat trains on labelled data: pass --train FILE (a "
        "torch.save'd dict {'inputs': X, 'labels': y} or an .npz with keys inputs and labels)");
  }
  if (spec->finetune() != v1::QAT && !spec->train_digest().empty()) {
    return Invalid(
        "spec.train_digest: training data is only used by --finetune qat; add --finetune qat "
        "or leave --train out");
  }
  if (spec->iters() < 0) {
    return Invalid(absl::StrCat("spec.iters must be >= 0 (0: default), got ", spec->iters()));
  }
  if (spec->epochs() < 0) {
    return Invalid(absl::StrCat("spec.epochs must be >= 0 (0: default), got ", spec->epochs()));
  }
  if (!std::isfinite(spec->lr()) || spec->lr() < 0) {
    return Invalid(
        absl::StrCat("spec.lr must be a finite number >= 0 (0: default), got ", spec->lr()));
  }
  return absl::OkStatus();
}

absl::Status CheckSamples(v1::JobSpec* spec) {
  if (spec->search_samples() == 0) {
    spec->set_search_samples(limits::kDefaultSearchSamples);
  } else if (spec->search_samples() < limits::kMinSearchSamples) {
    return Invalid(absl::StrCat("spec.search_samples must be >= ", limits::kMinSearchSamples,
                                " (0 for the default ", limits::kDefaultSearchSamples, "), got ",
                                spec->search_samples()));
  }
  if (spec->calib_samples() == 0) {
    spec->set_calib_samples(limits::kDefaultCalibSamples);
  } else if (spec->calib_samples() < 0) {
    return Invalid(absl::StrCat("spec.calib_samples must be > 0 (0 for the default ",
                                limits::kDefaultCalibSamples, "), got ", spec->calib_samples()));
  }
  return absl::OkStatus();
}

absl::Status CheckMisc(const v1::JobSpec& spec) {
  if (spec.has_beta() && (!std::isfinite(spec.beta()) || spec.beta() < 0)) {
    return Invalid(absl::StrCat("spec.beta must be a finite number >= 0, got ", spec.beta()));
  }
  if (spec.has_timeout()) {
    const auto& t = spec.timeout();
    const bool positive = t.seconds() > 0 || (t.seconds() == 0 && t.nanos() > 0);
    if (!positive || t.nanos() < 0 || t.nanos() >= 1000000000) {
      return Invalid("spec.timeout must be a positive duration, e.g. --timeout 30m");
    }
  }
  if (spec.display_name().size() > kMaxDisplayNameLength || !IsPrintable(spec.display_name())) {
    return Invalid(absl::StrCat("spec.display_name must be at most ", kMaxDisplayNameLength,
                                " printable characters"));
  }
  if (spec.labels_size() > static_cast<int>(kMaxLabels)) {
    return Invalid(absl::StrCat("spec.labels has ", spec.labels_size(), " entries; at most ",
                                kMaxLabels, " are allowed"));
  }
  for (const auto& [key, value] : spec.labels()) {
    bool key_ok = !key.empty() && key.size() <= kMaxLabelKeyLength && absl::ascii_isalnum(key[0]);
    for (char c : key) {
      key_ok = key_ok && (absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.');
    }
    if (!key_ok) {
      return Invalid(absl::StrCat("spec.labels: key '", key,
                                  "' is not valid; use 1-63 letters, digits, '_', '-' or '.', "
                                  "starting with a letter or digit (--label key=value)"));
    }
    if (value.size() > kMaxLabelValueLength || !IsPrintable(value)) {
      return Invalid(absl::StrCat("spec.labels['", key, "']: the value must be at most ",
                                  kMaxLabelValueLength, " printable characters"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateAndFillSpec(v1::JobSpec* spec) {
  RETURN_IF_ERROR(CheckRequiredDigest(spec->model_digest(), "model_digest", "model"));
  RETURN_IF_ERROR(CheckRequiredDigest(spec->calib_digest(), "calib_digest", "calibration data"));
  RETURN_IF_ERROR(CheckOptionalDigest(spec->eval_digest(), "eval_digest"));
  RETURN_IF_ERROR(CheckOptionalDigest(spec->train_digest(), "train_digest"));
  RETURN_IF_ERROR(CheckBudgets(*spec));
  RETURN_IF_ERROR(CheckAndFillBits(spec));
  RETURN_IF_ERROR(CheckPins(*spec));
  RETURN_IF_ERROR(CheckSamples(spec));
  RETURN_IF_ERROR(CheckMisc(*spec));
  RETURN_IF_ERROR(CheckObjective(spec));
  RETURN_IF_ERROR(CheckExportProfile(spec));
  return CheckFinetune(spec);
}

absl::Status ValidateRequestId(const std::string& request_id) {
  if (request_id.size() > kMaxRequestIdLength || !IsPrintable(request_id)) {
    return Invalid(absl::StrCat("request_id must be at most ", kMaxRequestIdLength,
                                " printable characters, e.g. a UUID"));
  }
  return absl::OkStatus();
}

absl::Status ValidateJobName(const std::string& name, const std::string& field) {
  absl::string_view id = name;
  bool ok = absl::ConsumePrefix(&id, "jobs/") && !id.empty() && id.size() <= 64;
  for (char c : id) {
    ok = ok && (absl::ascii_isalnum(c) || c == '-' || c == '_');
  }
  if (ok) {
    return absl::OkStatus();
  }
  if (name.empty()) {
    return Invalid(absl::StrCat(field, " is required: pass a job name such as \"jobs/<id>\""));
  }
  return Invalid(absl::StrCat(field, " '", name,
                              "' is not a job name: expected \"jobs/<id>\" as CreateJob returned"));
}

absl::StatusOr<LabelFilter> ParseLabelFilter(const std::string& label) {
  if (label.empty()) {
    return LabelFilter{};
  }
  const size_t eq = label.find('=');
  if (eq == std::string::npos || eq == 0) {
    return Invalid(absl::StrCat("label filter '", label, "' must be \"key=value\""));
  }
  return LabelFilter{label.substr(0, eq), label.substr(eq + 1)};
}

absl::Status ValidateListRequest(const v1::ListJobsRequest& request) {
  if (request.page_size() < 0) {
    return Invalid(
        absl::StrCat("page_size must be >= 0 (0: the default 50), got ", request.page_size()));
  }
  if (!v1::JobState_IsValid(request.state())) {
    return Invalid(absl::StrCat("state ", static_cast<int>(request.state()),
                                " is not a job state; use QUEUED, RUNNING, SUCCEEDED, FAILED, "
                                "CANCELLING or CANCELLED"));
  }
  return ParseLabelFilter(request.label()).status();
}

}  // namespace ompq
