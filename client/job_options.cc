#include "client/job_options.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/job_limits.h"
#include "common/status_macros.h"
#include "common/units.h"

namespace ompq::client {
namespace {

constexpr size_t kMaxRequestIdLength = 128;

absl::StatusOr<int> ParseBits(absl::string_view text, absl::string_view flag,
                              int min_bits = limits::kMinWeightBits) {
  int bits = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &bits) || bits < min_bits ||
      bits > limits::kMaxBits) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": '", text,
                                                   "' is not a bit-width; use a whole number from ",
                                                   min_bits, " to ", limits::kMaxBits));
  }
  return bits;
}

absl::Status CheckNonNegative(double value, absl::string_view flag) {
  if (value < 0 || !std::isfinite(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be zero (default) or positive, got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<int>> ParseBitsList(absl::string_view text) {
  std::vector<int> bits;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    ASSIGN_OR_RETURN(int value, ParseBits(part, "--weight-bits"));
    if (std::find(bits.begin(), bits.end(), value) != bits.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--weight-bits: ", value, " is listed twice in '", text, "'"));
    }
    bits.push_back(value);
  }
  std::sort(bits.begin(), bits.end());
  return bits;
}

absl::StatusOr<int> ParsePinFirstLast(absl::string_view text) {
  if (absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(text), "none")) return 0;
  auto bits = ParseBits(text, "--pin-first-last");
  if (!bits.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(bits.status().message(), ", or 'none'"));
  }
  return bits;
}

absl::StatusOr<v1::LayerPin> ParsePin(absl::string_view text) {
  size_t eq = text.rfind('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pin '", text, "': expected NAME_REGEX=BITS, e.g. --pin 'layer1\\..*=4'"));
  }
  v1::LayerPin pin;
  pin.set_name_regex(std::string(text.substr(0, eq)));
  ASSIGN_OR_RETURN(int bits, ParseBits(text.substr(eq + 1), "--pin"));
  pin.set_bits(bits);
  return pin;
}

absl::StatusOr<std::pair<std::string, std::string>> ParseLabel(absl::string_view text) {
  std::pair<std::string, std::string> label = absl::StrSplit(text, absl::MaxSplits('=', 1));
  if (label.first.empty() || !absl::StrContains(text, '=')) {
    return absl::InvalidArgumentError(
        absl::StrCat("--label '", text, "': expected KEY=VALUE, e.g. --label team=vision"));
  }
  return label;
}

absl::StatusOr<v1::FinetuneMode> ParseFinetuneMode(absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower == "none") return v1::NONE;
  if (lower == "ptq") return v1::PTQ;
  if (lower == "qat") return v1::QAT;
  return absl::InvalidArgumentError(absl::StrCat("--finetune '", text, "': use none, ptq or qat"));
}

absl::StatusOr<v1::Objective> ParseObjective(absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower == "orthogonality") return v1::OBJECTIVE_ORTHOGONALITY;
  if (lower == "distortion") return v1::OBJECTIVE_DISTORTION;
  return absl::InvalidArgumentError(
      absl::StrCat("--objective '", text, "': use orthogonality or distortion"));
}

absl::StatusOr<v1::ExportProfile> ParseExportProfile(absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower == "default") return v1::EXPORT_PROFILE_DEFAULT;
  if (lower == "tensorrt") return v1::EXPORT_PROFILE_TENSORRT;
  return absl::InvalidArgumentError(
      absl::StrCat("--export-profile '", text, "': use default or tensorrt"));
}

std::string NormalizeJobName(absl::string_view name) {
  name = absl::StripAsciiWhitespace(name);
  if (absl::StartsWith(name, "jobs/")) return std::string(name);
  return absl::StrCat("jobs/", name);
}

absl::StatusOr<v1::JobState> ParseJobState(absl::string_view text) {
  v1::JobState state;
  std::string upper = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  if (v1::JobState_Parse(upper, &state) && state != v1::JOB_STATE_UNSPECIFIED) {
    return state;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--state '", text, "': use QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLING or CANCELLED"));
}

absl::StatusOr<JobPlan> BuildJobPlan(const JobFlags& flags) {
  JobPlan plan;
  v1::JobSpec& spec = plan.spec;
  if (flags.model.empty()) {
    return absl::InvalidArgumentError("missing MODEL: pass the TorchScript file to quantize");
  }
  if (flags.calib.empty()) {
    return absl::InvalidArgumentError(
        "--calib is required: pass a .pt/.npy/.npz file of calibration inputs");
  }
  plan.model_path = flags.model;
  plan.calib_path = flags.calib;
  plan.eval_path = flags.eval;
  plan.train_path = flags.train;
  spec.set_display_name(std::filesystem::path(flags.model).filename().string());

  if (flags.size.empty() && flags.bops.empty()) {
    return absl::InvalidArgumentError(
        "a budget is required: pass --size (e.g. 1.5MiB) and/or --bops (e.g. 75G)");
  }
  if (!flags.size.empty()) {
    auto size = ParseSize(flags.size);
    if (!size.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--size: ", size.status().message()));
    }
    spec.set_size_budget_bytes(*size);
  }
  if (!flags.bops.empty()) {
    auto bops = ParseCount(flags.bops);
    if (!bops.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--bops: ", bops.status().message()));
    }
    spec.set_bops_budget(*bops);
  }
  if (!flags.weight_bits.empty()) {
    ASSIGN_OR_RETURN(std::vector<int> bits, ParseBitsList(flags.weight_bits));
    for (int b : bits) spec.add_weight_bits(b);
  }
  if (flags.act_bits != 0) {
    ASSIGN_OR_RETURN(int act_bits, ParseBits(absl::StrCat(flags.act_bits), "--act-bits",
                                               limits::kMinActBits));
    spec.set_act_bits(act_bits);
  }
  if (!flags.pin_first_last.empty()) {
    ASSIGN_OR_RETURN(int bits, ParsePinFirstLast(flags.pin_first_last));
    spec.set_pin_first_last_bits(bits);
  }
  for (const std::string& text : flags.pins) {
    ASSIGN_OR_RETURN(*spec.add_pins(), ParsePin(text));
  }
  if (!flags.beta.empty()) {
    double beta = 0;
    if (!absl::SimpleAtod(flags.beta, &beta) || !std::isfinite(beta) || beta < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--beta '", flags.beta, "': use a number >= 0, e.g. 1.0 (0: every layer alike)"));
    }
    spec.set_beta(beta);
  }
  // Left unspecified unless given, so the server applies its own default.
  if (!flags.objective.empty()) {
    ASSIGN_OR_RETURN(v1::Objective objective, ParseObjective(flags.objective));
    spec.set_objective(objective);
  }
  if (!flags.export_profile.empty()) {
    ASSIGN_OR_RETURN(v1::ExportProfile profile, ParseExportProfile(flags.export_profile));
    spec.set_export_profile(profile);
  }
  if (!flags.finetune.empty()) {
    ASSIGN_OR_RETURN(v1::FinetuneMode mode, ParseFinetuneMode(flags.finetune));
    spec.set_finetune(mode);
  }
  if (flags.frontier_evals.has_value()) {
    if (*flags.frontier_evals < 0 || *flags.frontier_evals > limits::kFrontierPoints) {
      return absl::InvalidArgumentError(absl::StrCat("--frontier-evals must be in 0..",
                                                     limits::kFrontierPoints, " (got ",
                                                     *flags.frontier_evals, ")"));
    }
    if (*flags.frontier_evals > 0 && flags.eval.empty()) {
      return absl::InvalidArgumentError(
          "--frontier-evals measures top-1 on the eval data: pass --eval FILE");
    }
    spec.set_frontier_evals(*flags.frontier_evals);
  }
  RETURN_IF_ERROR(CheckNonNegative(flags.iters, "--iters"));
  RETURN_IF_ERROR(CheckNonNegative(flags.epochs, "--epochs"));
  RETURN_IF_ERROR(CheckNonNegative(flags.lr, "--lr"));
  RETURN_IF_ERROR(CheckNonNegative(flags.calib_samples, "--calib-samples"));
  spec.set_iters(flags.iters);
  spec.set_epochs(flags.epochs);
  spec.set_lr(flags.lr);
  spec.set_calib_samples(flags.calib_samples);
  if (flags.search_samples != 0 && flags.search_samples < limits::kMinSearchSamples) {
    return absl::InvalidArgumentError(absl::StrCat("--search-samples must be at least ",
                                                   limits::kMinSearchSamples, " (got ",
                                                   flags.search_samples, ")"));
  }
  spec.set_search_samples(flags.search_samples);
  spec.set_seed(flags.seed);
  if (!flags.timeout.empty()) {
    auto timeout = ParseDuration(flags.timeout);
    if (!timeout.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--timeout: ", timeout.status().message()));
    }
    int64_t millis = absl::ToInt64Milliseconds(*timeout);
    spec.mutable_timeout()->set_seconds(millis / 1000);
    spec.mutable_timeout()->set_nanos(static_cast<int32_t>(millis % 1000) * 1000000);
  }
  if (flags.request_id.size() > kMaxRequestIdLength) {
    return absl::InvalidArgumentError(absl::StrCat("--request-id is ", flags.request_id.size(),
                                                   " characters; use at most ",
                                                   kMaxRequestIdLength));
  }
  plan.request_id = flags.request_id;
  for (const std::string& text : flags.labels) {
    ASSIGN_OR_RETURN(auto label, ParseLabel(text));
    (*spec.mutable_labels())[label.first] = label.second;
  }
  return plan;
}

}  // namespace ompq::client
