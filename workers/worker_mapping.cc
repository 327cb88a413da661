#include "workers/worker_mapping.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/job_limits.h"

namespace ompq::worker {
namespace {

// Rough share of a job's time per stage, measured on small CNNs on CPU: the forward pass
// with the Gram matrices dominates, model loading and export are short.
double StageWeight(v1::Stage stage) {
  switch (stage) {
    case v1::FETCHING_INPUTS:
      return 5;
    case v1::ANALYZING:
      return 10;
    case v1::ORTHOGONALITY:
      return 55;
    case v1::SOLVING:
      return 20;
    case v1::CALIBRATING:
      return 10;
    case v1::FINETUNING:
      return 100;
    case v1::EVALUATING:
      return 20;
    case v1::EXPORTING:
      return 10;
    default:
      return 0;
  }
}

// Reads report[key...] as T, or says which field is wrong.
template <typename T>
absl::StatusOr<T> Field(const nlohmann::json& object, const std::string& path,
                        const std::string& key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    return absl::InvalidArgumentError(absl::StrCat("report.json lacks ", path, key));
  }
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("report.json field ", path, key, " has the wrong type: ", e.what()));
  }
}

engine::ExportProfile ToExportProfile(v1::ExportProfile profile) {
  return profile == v1::EXPORT_PROFILE_TENSORRT ? engine::ExportProfile::kTensorRt
                                                : engine::ExportProfile::kDefault;
}

}  // namespace

engine::SearchOptions ToSearchOptions(const v1::JobSpec& spec, const std::string& model_path,
                                      const std::string& calib_path, const std::string& device) {
  engine::SearchOptions options;
  options.model_path = model_path;
  options.calib_path = calib_path;
  if (spec.has_size_budget_bytes()) options.size_budget_bytes = spec.size_budget_bytes();
  if (spec.has_bops_budget()) options.bops_budget = spec.bops_budget();
  if (!spec.weight_bits().empty()) {
    options.weight_bits.assign(spec.weight_bits().begin(), spec.weight_bits().end());
  }
  if (spec.act_bits() != 0) options.act_bits = spec.act_bits();
  if (spec.has_pin_first_last_bits()) options.pin_first_last_bits = spec.pin_first_last_bits();
  for (const v1::LayerPin& pin : spec.pins()) {
    options.pins.emplace_back(pin.name_regex(), pin.bits());
  }
  if (spec.has_beta()) options.beta = spec.beta();
  // A spec the server filled in names its objective; UNSPECIFIED keeps the engine's default.
  if (spec.objective() == v1::OBJECTIVE_ORTHOGONALITY) {
    options.objective = engine::Objective::kOrthogonality;
  } else if (spec.objective() == v1::OBJECTIVE_DISTORTION) {
    options.objective = engine::Objective::kDistortion;
  }
  options.export_profile = ToExportProfile(spec.export_profile());
  if (spec.search_samples() != 0) options.search_samples = spec.search_samples();
  options.seed = spec.seed();
  options.device = device;
  return options;
}

engine::QuantizeOptions ToQuantizeOptions(const v1::JobSpec& spec, const std::string& model_path,
                                          const std::string& calib_path,
                                          const std::string& eval_path,
                                          const std::string& train_path, const std::string& device,
                                          const std::string& out_dir) {
  engine::QuantizeOptions options;
  options.model_path = model_path;
  options.calib_path = calib_path;
  options.eval_path = eval_path;
  options.train_path = train_path;
  options.finetune = spec.finetune() == v1::NONE  ? engine::FinetuneMode::kNone
                     : spec.finetune() == v1::QAT ? engine::FinetuneMode::kQat
                                                  : engine::FinetuneMode::kPtq;
  if (spec.act_bits() != 0) options.act_bits = spec.act_bits();
  options.export_profile = ToExportProfile(spec.export_profile());
  if (spec.calib_samples() > 0) options.calib_samples = spec.calib_samples();
  options.frontier_evals = spec.has_frontier_evals()
                               ? spec.frontier_evals()
                               : (eval_path.empty() ? 0 : limits::kDefaultFrontierEvals);
  if (spec.iters() > 0) options.iters = spec.iters();
  if (spec.epochs() > 0) options.epochs = spec.epochs();
  if (spec.lr() > 0) options.lr = spec.lr();
  options.seed = spec.seed();
  options.device = device;
  options.out_dir = out_dir;
  return options;
}

absl::StatusOr<v1::JobResult> ToJobResult(const nlohmann::json& report) {
  v1::JobResult result;
  if (!report.contains("result") || !report["result"].is_object()) {
    return absl::InvalidArgumentError("report.json lacks result");
  }
  const nlohmann::json& totals = report["result"];
  auto size = Field<int64_t>(totals, "result.", "size_bytes");
  auto bops = Field<int64_t>(totals, "result.", "bops");
  auto objective = Field<double>(totals, "result.", "objective");
  auto lp_bound = Field<double>(totals, "result.", "lp_bound");
  for (const absl::Status& s :
       {size.status(), bops.status(), objective.status(), lp_bound.status()}) {
    if (!s.ok()) return s;
  }
  result.set_size_bytes(*size);
  result.set_bops(*bops);
  result.set_objective(*objective);
  result.set_lp_bound(*lp_bound);
  if (report.contains("model") && report["model"].is_object()) {
    auto fp32 = Field<int64_t>(report["model"], "model.", "fp32_size_bytes");
    if (fp32.ok()) result.set_fp32_size_bytes(*fp32);
  }

  if (!report.contains("layers") || !report["layers"].is_array()) {
    return absl::InvalidArgumentError("report.json lacks layers");
  }
  for (size_t i = 0; i < report["layers"].size(); ++i) {
    const nlohmann::json& layer = report["layers"][i];
    const std::string path = absl::StrCat("layers[", i, "].");
    v1::LayerResult* out = result.add_layers();
    auto name = Field<std::string>(layer, path, "name");
    auto bits = Field<int>(layer, path, "bits");
    auto params = Field<int64_t>(layer, path, "params");
    if (!name.ok()) return name.status();
    if (!bits.ok()) return bits.status();
    if (!params.ok()) return params.status();
    out->set_name(*name);
    out->set_bits(*bits);
    out->set_params(*params);
    // Descriptive fields: kept when present, defaults otherwise.
    out->set_kind(layer.value("kind", ""));
    out->set_macs(layer.value("macs", int64_t{0}));
    out->set_importance(layer.value("importance", 0.0));
    out->set_pinned(layer.value("pinned", false));
  }

  if (report.contains("accuracy") && report["accuracy"].is_object()) {
    const nlohmann::json& accuracy = report["accuracy"];
    result.mutable_accuracy()->set_fp32(accuracy.value("fp32", 0.0));
    result.mutable_accuracy()->set_quantized_before_finetune(
        accuracy.value("quantized_before_finetune", 0.0));
    result.mutable_accuracy()->set_quantized(accuracy.value("quantized", 0.0));
  }
  return result;
}

v1::Stage ToProtoStage(engine::Stage stage) {
  switch (stage) {
    case engine::Stage::kAnalyzing:
      return v1::ANALYZING;
    case engine::Stage::kOrthogonality:
      return v1::ORTHOGONALITY;
    case engine::Stage::kSolving:
      return v1::SOLVING;
    case engine::Stage::kCalibrating:
      return v1::CALIBRATING;
    case engine::Stage::kFinetuning:
      return v1::FINETUNING;
    case engine::Stage::kEvaluating:
      return v1::EVALUATING;
    case engine::Stage::kExporting:
      return v1::EXPORTING;
  }
  return v1::STAGE_UNSPECIFIED;
}

JobProgress::JobProgress(std::vector<v1::Stage> stages) : stages_(std::move(stages)) {
  for (v1::Stage stage : stages_) total_weight_ += StageWeight(stage);
}

std::vector<v1::Stage> JobProgress::SearchStages() {
  return {v1::FETCHING_INPUTS, v1::ANALYZING, v1::ORTHOGONALITY, v1::SOLVING, v1::EXPORTING};
}

std::vector<v1::Stage> JobProgress::StagesFor(const v1::JobSpec& spec) {
  std::vector<v1::Stage> stages = {v1::FETCHING_INPUTS, v1::ANALYZING, v1::ORTHOGONALITY,
                                   v1::SOLVING, v1::CALIBRATING};
  if (spec.finetune() != v1::NONE) stages.push_back(v1::FINETUNING);
  if (!spec.eval_digest().empty()) stages.push_back(v1::EVALUATING);
  stages.push_back(v1::EXPORTING);
  return stages;
}

double JobProgress::Percent(v1::Stage stage, double fraction) {
  auto it = std::find(stages_.begin(), stages_.end(), stage);
  if (it == stages_.end() || total_weight_ <= 0) return reached_;
  double done = 0;
  for (auto before = stages_.begin(); before != it; ++before) done += StageWeight(*before);
  done += StageWeight(stage) * std::clamp(fraction, 0.0, 1.0);
  reached_ = std::max(reached_, 100.0 * done / total_weight_);
  return reached_;
}

}  // namespace ompq::worker
