#include "workers/engine/frontier_eval.h"

#include <cmath>
#include <memory>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/labelled_data.h"
#include "workers/engine/probed_model.h"
#include "workers/engine/quant_layers.h"

namespace ompq::engine {

std::vector<size_t> FrontierEvalPoints(size_t points, int evals) {
  std::vector<size_t> picked;
  if (points == 0 || evals <= 0) return picked;
  if (evals == 1) return {points - 1};  // The largest size: the most the budget can buy.
  if (static_cast<size_t>(evals) >= points) {
    for (size_t k = 0; k < points; ++k) picked.push_back(k);
    return picked;
  }
  for (int k = 0; k < evals; ++k) {
    const size_t index = static_cast<size_t>(
        std::llround(static_cast<double>(k) * static_cast<double>(points - 1) / (evals - 1)));
    if (picked.empty() || picked.back() != index) picked.push_back(index);
  }
  return picked;
}

absl::Status EvaluateFrontier(const JobInputs& inputs, const torch::Tensor& calib, int act_bits,
                              ExportProfile profile, int64_t max_capture_bytes, int evals,
                              nlohmann::json& report,
                              const std::function<bool(int, int)>& progress) {
  if (!inputs.eval.has_value() || evals <= 0 || !report.contains("frontier") ||
      !report["frontier"].is_array()) {
    return absl::OkStatus();
  }
  nlohmann::json& frontier = report["frontier"];
  std::vector<std::string> names;
  try {
    for (const nlohmann::json& layer : report.at("layers")) names.push_back(layer.at("name"));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed search report: ", e.what()));
  }
  const std::vector<size_t> picked = FrontierEvalPoints(frontier.size(), evals);
  const int total = static_cast<int>(picked.size());
  for (int done = 0; done < total; ++done) {
    if (progress && !progress(done, total)) {
      return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled,
                        "quantization was cancelled");
    }
    nlohmann::json& point = frontier[picked[done]];
    std::unordered_map<std::string, int> bits;
    const std::vector<int> point_bits = point.at("bits").get<std::vector<int>>();
    if (point_bits.size() != names.size()) {
      return absl::InvalidArgumentError("a frontier point has a different number of layers");
    }
    for (size_t i = 0; i < names.size(); ++i) bits[names[i]] = point_bits[i];
    // A fresh copy each time: the point's weights and activation ranges start from the
    // float model, as the job's own calibration does.
    ASSIGN_OR_RETURN(LoadedModel copy, CopyModel(inputs.model));
    ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> model, ProbedModel::Create(std::move(copy)));
    ASSIGN_OR_RETURN(std::vector<QuantLayer> layers, PlanLayers(*model, bits));
    RETURN_IF_ERROR(FitWeights(layers, profile));
    ASSIGN_OR_RETURN(
        const int64_t samples,
        CalibrateActivations(*model, layers, calib, act_bits, profile, max_capture_bytes, nullptr));
    (void)samples;
    QuantizeBiases(layers, model->session());  // As the job's own model (quantize.cc).
    ASSIGN_OR_RETURN(double top1, TopOne(*model, inputs.eval->inputs, *inputs.eval->labels));
    point["top1_nearest"] = top1;
  }
  return absl::OkStatus();
}

}  // namespace ompq::engine
