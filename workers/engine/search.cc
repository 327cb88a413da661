#include "workers/engine/search.h"

#include <ATen/Parallel.h>
#include <re2/re2.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/digest.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/bit_allocation.h"
#include "workers/engine/job_inputs.h"
#include "workers/engine/layer_discovery.h"
#include "workers/engine/layer_distortion.h"
#include "workers/engine/orthogonality.h"
#include "workers/engine/report_html.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

absl::Status Cancelled() {
  return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled, "the search was cancelled");
}

// Options errors are the caller's (the server validates job specs first), so they carry
// no job failure reason.
absl::Status ValidateOptions(const SearchOptions& options) {
  if (!options.size_budget_bytes.has_value() && !options.bops_budget.has_value()) {
    return absl::InvalidArgumentError("a size or a BOPs budget is required");
  }
  if (options.size_budget_bytes.value_or(1) <= 0 || options.bops_budget.value_or(1) <= 0) {
    return absl::InvalidArgumentError("budgets must be positive");
  }
  if (options.weight_bits.empty()) return absl::InvalidArgumentError("weight_bits is empty");
  for (int bits : options.weight_bits) {
    if (bits < 1 || bits > 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight bit-width ", bits, " is outside 1..16"));
    }
  }
  if (options.act_bits < limits::kMinActBits || options.act_bits > limits::kMaxBits) {
    return absl::InvalidArgumentError(absl::StrCat("act_bits ", options.act_bits, " is outside ",
                                                   limits::kMinActBits, "..", limits::kMaxBits));
  }
  if (options.pin_first_last_bits < 0 || options.pin_first_last_bits > 16) {
    return absl::InvalidArgumentError("pin_first_last_bits must be 0 (none) or 1..16");
  }
  for (const auto& [pattern, bits] : options.pins) {
    if (bits < 1 || bits > 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("pin '", pattern, "': bits ", bits, " is outside 1..16"));
    }
    RE2 regex(pattern, RE2::Quiet);
    if (!regex.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("pin '", pattern, "' is not a valid regex: ", regex.error()));
    }
  }
  if (options.beta.has_value() && !(*options.beta >= 0 && std::isfinite(*options.beta))) {
    return absl::InvalidArgumentError("beta must be finite and >= 0");
  }
  if (options.search_samples < limits::kMinSearchSamples) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat("search_samples is ", options.search_samples,
                                   "; orthogonality needs at least 2 samples"));
  }
  return absl::OkStatus();
}

// The first `samples` calibration inputs, checked.
absl::StatusOr<torch::Tensor> SearchInputs(const CalibrationData& calibration, int samples,
                                           const torch::Device& device) {
  const torch::Tensor& all = calibration.inputs;
  if (all.size(0) < 2) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat("the calibration file holds ", all.size(0),
                                   " sample(s); the search needs at least 2"));
  }
  torch::Tensor inputs = all.narrow(0, 0, std::min<int64_t>(all.size(0), samples));
  if (inputs.is_floating_point()) {
    const int64_t bad = (~torch::isfinite(inputs)).sum().item<int64_t>();
    if (bad > 0) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNonFiniteInput,
                        absl::StrCat("the first ", inputs.size(0), " calibration inputs contain ",
                                     bad, " NaN or Inf values"));
    }
  }
  return inputs.to(device);
}

// Candidate sets after pins: first/last, then regex pins in order (later ones win).
struct PinPlan {
  std::vector<std::optional<int>> bits;  // Per layer.
  std::vector<std::string> warnings;
  nlohmann::json pins_json = nlohmann::json::array();
};

PinPlan PlanPins(const SearchOptions& options, const std::vector<LayerInfo>& layers) {
  PinPlan plan;
  plan.bits.assign(layers.size(), std::nullopt);
  if (options.pin_first_last_bits > 0) {
    plan.bits.front() = options.pin_first_last_bits;
    plan.bits.back() = options.pin_first_last_bits;
  }
  for (const auto& [pattern, bits] : options.pins) {
    RE2 regex(pattern, RE2::Quiet);
    nlohmann::json matched = nlohmann::json::array();
    for (size_t i = 0; i < layers.size(); ++i) {
      if (RE2::FullMatch(layers[i].name, regex)) {
        plan.bits[i] = bits;
        matched.push_back(layers[i].name);
      }
    }
    if (matched.empty())
      plan.warnings.push_back(absl::StrCat("pin '", pattern, "' matched no layer"));
    plan.pins_json.push_back({{"pattern", pattern}, {"bits", bits}, {"layers", matched}});
  }
  return plan;
}

nlohmann::json OptionalInt(const std::optional<int64_t>& value) {
  return value.has_value() ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

absl::Status WriteFileAtomically(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", temporary.string()));
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot rename to ", path.string(), ": ", error.message()));
  }
  return absl::OkStatus();
}

// One frontier point as report.json carries it (the objective in the report's sign: a
// weighted distortion for kDistortion, sum c_i b_i for kOrthogonality).
nlohmann::json FrontierJson(const std::vector<FrontierPoint>& points, double sign,
                            const std::vector<std::vector<double>>& distortion,
                            const std::vector<std::vector<int>>& layer_bits) {
  nlohmann::json out = nlohmann::json::array();
  for (const FrontierPoint& point : points) {
    const Allocation& a = point.allocation;
    nlohmann::json entry = {{"size_budget_bytes", point.size_budget_bytes},
                            {"size_bytes", a.size_bytes},
                            {"bops", a.bops},
                            {"objective", sign * a.objective},
                            {"bits", a.bits}};
    if (!distortion.empty()) {
      // The unweighted prediction: the sum of the layers' D at their bits.
      double total = 0;
      for (size_t i = 0; i < a.bits.size(); ++i) {
        const auto& bits = layer_bits[i];
        const size_t j = std::find(bits.begin(), bits.end(), a.bits[i]) - bits.begin();
        if (j < bits.size()) total += distortion[i][j];
      }
      entry["distortion"] = total;
    }
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace

const char* ObjectiveName(Objective objective) {
  switch (objective) {
    case Objective::kOrthogonality:
      return "orthogonality";
    case Objective::kDistortion:
      return "distortion";
  }
  return "orthogonality";
}

absl::StatusOr<SearchResult> RunSearch(const SearchOptions& options, const ProgressFn& progress) {
  RETURN_IF_ERROR(ValidateOptions(options));
  const Clock::time_point start = Clock::now();
  if (progress && !progress(Stage::kAnalyzing, 0.0, "loading the model")) return Cancelled();
  InputPaths paths;
  paths.model = options.model_path;
  paths.calib = options.calib_path;
  paths.device = options.device;
  ASSIGN_OR_RETURN(const JobInputs inputs, LoadJobInputs(paths));
  ASSIGN_OR_RETURN(SearchResult result, RunSearch(options, inputs, progress));
  // The analysis includes the loading.
  nlohmann::json& timings = result.report["timings_seconds"];
  const double loading = SecondsSince(start) - timings["total"].get<double>();
  timings["analyze"] = timings["analyze"].get<double>() + loading;
  timings["total"] = SecondsSince(start);
  return result;
}

absl::StatusOr<SearchResult> RunSearch(const SearchOptions& options, const JobInputs& job,
                                       const ProgressFn& progress) {
  const Clock::time_point start = Clock::now();
  RETURN_IF_ERROR(ValidateOptions(options));
  auto report = [&](Stage stage, double fraction, const std::string& message) -> absl::Status {
    if (progress && !progress(stage, fraction, message)) return Cancelled();
    return absl::OkStatus();
  };
  InitTorchThreads();
  // No autograd state anywhere in the search: less memory, no version counters.
  c10::InferenceMode inference_mode;

  // --- ANALYZING: check the inputs, rewrite the graph (the files are loaded already).
  RETURN_IF_ERROR(report(Stage::kAnalyzing, 0.3, "checking the calibration inputs"));
  const LoadedModel& model = job.model;
  const std::string& model_digest = job.model_digest;
  ASSIGN_OR_RETURN(torch::Tensor inputs,
                   SearchInputs(CalibrationData{job.calib, std::nullopt}, options.search_samples,
                                model.device));
  RETURN_IF_ERROR(report(Stage::kAnalyzing, 0.5, "finding the quantizable layers"));
  const bool measure_distortion = options.objective == Objective::kDistortion;
  ASSIGN_OR_RETURN(TappedModel tapped,
                   TappedModel::Create(model.module, model.device, measure_distortion));
  const double analyze_seconds = SecondsSince(start);

  // --- ORTHOGONALITY: one forward pass forming every layer's Gram, then ORM.
  const Clock::time_point orthogonality_start = Clock::now();
  RETURN_IF_ERROR(report(Stage::kOrthogonality, 0.0,
                         absl::StrCat("forward pass over ", inputs.size(0), " samples")));
  ASSIGN_OR_RETURN(
      LayerFeatures features, tapped.Collect(inputs, options.seed, [&](int measured, int sites) {
        const double fraction = std::min(1.0, measured / static_cast<double>(sites));
        return !progress || progress(Stage::kOrthogonality, 0.95 * fraction,
                                     absl::StrCat("measured ", measured, " of ", sites, " layers"));
      }));
  RETURN_IF_ERROR(report(Stage::kOrthogonality, 0.95, "checking the rewritten graph"));
  std::string check_skipped;
  RETURN_IF_ERROR(tapped.CheckAgainstModel(inputs, features.output, options.seed, &check_skipped));
  features.output = c10::IValue();
  const double beta =
      options.beta.value_or(measure_distortion ? kDefaultDistortionBeta : kDefaultBeta);
  ASSIGN_OR_RETURN(Orthogonality orthogonality,
                   ComputeOrthogonality(features.grams, features.samples, beta));
  const std::vector<LayerInfo>& layers = features.layers;
  PinPlan pins = PlanPins(options, layers);
  std::vector<int> candidates(options.weight_bits);
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  std::vector<std::vector<int>> layer_bits;
  for (size_t i = 0; i < layers.size(); ++i) {
    layer_bits.push_back(pins.bits[i].has_value() ? std::vector<int>{*pins.bits[i]} : candidates);
  }
  // D_i(b) at each layer's candidates, from the weights and inputs the pass measured.
  std::vector<std::vector<double>> distortion;
  double distortion_seconds = 0;
  if (measure_distortion) {
    const Clock::time_point distortion_start = Clock::now();
    RETURN_IF_ERROR(report(Stage::kOrthogonality, 0.97, "measuring each layer's distortion"));
    ASSIGN_OR_RETURN(distortion, LayerDistortions(features.weights, features.input_energy,
                                                  layer_bits, options.export_profile));
    distortion_seconds = SecondsSince(distortion_start);
  }
  features.weights.clear();
  features.input_energy.clear();
  const double orthogonality_seconds = SecondsSince(orthogonality_start);

  // --- SOLVING: the exact integer program.
  const Clock::time_point solve_start = Clock::now();
  RETURN_IF_ERROR(report(Stage::kSolving, 0.0, "allocating bits"));
  AllocationProblem problem;
  int64_t quantized_params = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    AllocationLayer layer;
    layer.params = layers[i].params;
    layer.macs = layers[i].macs;
    layer.act_bits = options.act_bits;
    layer.candidates = layer_bits[i];
    // The program wants c_i > 0; a huge beta can underflow exp() for the least
    // important layers, which then simply get the fewest bits.
    layer.coefficient = std::max(orthogonality.coefficient[i], std::numeric_limits<double>::min());
    if (measure_distortion) {
      // Maximise -sum_i theta_i D_i(b_i).
      for (double d : distortion[i]) layer.values.push_back(-orthogonality.importance[i] * d);
    }
    problem.layers.push_back(std::move(layer));
    quantized_params += layers[i].params;
  }
  const int64_t total_params = tapped.total_parameters();
  problem.other_bytes = 4 * (total_params - quantized_params);
  problem.size_budget_bytes = options.size_budget_bytes;
  problem.bops_budget = options.bops_budget;
  ASSIGN_OR_RETURN(Allocation allocation, SolveAllocation(problem));
  RETURN_IF_ERROR(report(Stage::kSolving, 0.5, "solving the size-quality frontier"));
  // The frontier is advice: a problem it cannot span (a BOPs budget below every size)
  // leaves it empty rather than failing the job.
  const double sign = measure_distortion ? -1.0 : 1.0;
  absl::StatusOr<std::vector<FrontierPoint>> frontier = SolveFrontier(problem, limits::kFrontierPoints);
  RETURN_IF_ERROR(report(Stage::kSolving, 1.0, "bits allocated"));
  const double solve_seconds = SecondsSince(solve_start);

  // --- The report (PRODUCT.md report.json, plus diagnostics).
  std::vector<std::string> warnings = pins.warnings;
  if (!check_skipped.empty()) {
    warnings.push_back(
        absl::StrCat("the rewritten graph was not checked against the model: ", check_skipped));
  }
  for (int i : orthogonality.constant_layers) {
    warnings.push_back(absl::StrCat("layer '", layers[i].name,
                                    "' gives the same output for every sample; its "
                                    "orthogonality to other layers is taken as 0"));
  }
  nlohmann::json layers_json = nlohmann::json::array();
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerInfo& layer = layers[i];
    layers_json.push_back({
        {"name", layer.name},
        {"kind", layer.kind},
        {"weight_shape", layer.weight_shape},
        {"params", layer.params},
        {"macs", layer.macs},
        {"bits", allocation.bits[i]},
        {"act_bits", options.act_bits},
        {"pinned", pins.bits[i].has_value()},
        {"gamma", orthogonality.gamma[i]},
        {"importance", orthogonality.importance[i]},
        {"coefficient", orthogonality.coefficient[i]},
        {"calls", layer.calls},
        {"after_batch_norm", layer.after_batch_norm},
        {"output_shape", layer.output_shape},
    });
    if (measure_distortion) {
      nlohmann::json table = nlohmann::json::object();
      for (size_t j = 0; j < layer_bits[i].size(); ++j) {
        table[std::to_string(layer_bits[i][j])] = distortion[i][j];
      }
      layers_json.back()["distortion"] = std::move(table);
    }
  }
  SearchResult result;
  nlohmann::json& out = result.report;
  out["job"] = "";
  out["model"] = {{"digest", model_digest},
                  {"parameters", total_params},
                  {"fp32_size_bytes", 4 * total_params},
                  {"quantized_parameters", quantized_params},
                  {"other_bytes", problem.other_bytes}};
  // What stays FP32 (counted in other_bytes), and why.
  out["unquantized"] = nlohmann::json::array();
  for (const UnquantizedParameter& parameter : tapped.unquantized()) {
    out["unquantized"].push_back(
        {{"name", parameter.name}, {"params", parameter.params}, {"reason", parameter.reason}});
  }
  out["search"] = {{"objective", ObjectiveName(options.objective)},
                   {"beta", beta},
                   {"samples", features.samples},
                   {"weight_bits", candidates},
                   {"act_bits", options.act_bits},
                   {"export_profile", ExportProfileName(options.export_profile)},
                   {"seed", options.seed},
                   {"pin_first_last_bits", options.pin_first_last_bits},
                   {"pins", pins.pins_json},
                   {"device", model.device.str()},
                   {"threads", at::get_num_threads()},
                   {"tap_sites", tapped.tap_sites()}};
  if (measure_distortion) out["search"]["distortion_seconds"] = distortion_seconds;
  out["layers"] = std::move(layers_json);
  out["orm"] = orthogonality.orm;
  out["budget"] = {{"size_bytes", OptionalInt(options.size_budget_bytes)},
                   {"bops", OptionalInt(options.bops_budget)}};
  // For kDistortion the objective is the weighted distortion minimised and lp_bound the
  // relaxation's lower bound on it.
  out["result"] = {{"size_bytes", allocation.size_bytes},
                   {"bops", allocation.bops},
                   {"objective", sign * allocation.objective},
                   {"lp_bound", sign * allocation.lp_bound},
                   {"nodes", allocation.nodes}};
  if (frontier.ok()) {
    out["frontier"] = FrontierJson(*frontier, sign, distortion, layer_bits);
  } else {
    out["frontier"] = nlohmann::json::array();
    warnings.push_back(absl::StrCat("no size-quality frontier: ", frontier.status().message()));
  }
  out["warnings"] = warnings;
  out["timings_seconds"] = {{"analyze", analyze_seconds},
                            {"orthogonality", orthogonality_seconds},
                            {"solve", solve_seconds},
                            {"finetune", 0.0},
                            {"evaluate", 0.0},
                            {"export", 0.0},
                            {"total", SecondsSince(start)}};
  return result;
}

absl::StatusOr<std::vector<std::string>> WriteArtifacts(const nlohmann::json& report,
                                                        const std::string& out_dir) {
  std::error_code error;
  std::filesystem::create_directories(out_dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", error.message()));
  }
  if (!report.contains("layers") || !report["layers"].is_array()) {
    return absl::InvalidArgumentError("the report has no layers array");
  }
  // bit_config.json keeps execution order, which readers of the file expect.
  nlohmann::ordered_json bit_config = nlohmann::ordered_json::object();
  try {
    for (const nlohmann::json& layer : report["layers"]) {
      bit_config[layer.at("name").get<std::string>()] = layer.at("bits").get<int>();
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed report layers: ", e.what()));
  }
  const std::filesystem::path dir(out_dir);
  RETURN_IF_ERROR(WriteFileAtomically(dir / "report.json", report.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomically(dir / "bit_config.json", bit_config.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomically(dir / "report.html", RenderReportHtml(report)));
  return std::vector<std::string>{"report.json", "bit_config.json", "report.html"};
}

}  // namespace ompq::engine
