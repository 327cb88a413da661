#include "workers/engine/labelled_data.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_error.h"
#include "common/status_macros.h"

namespace ompq::engine {

absl::StatusOr<double> TopOne(ProbedModel& model, const torch::Tensor& inputs,
                              const torch::Tensor& labels) {
  int64_t correct = 0;
  for (int64_t start = 0; start < inputs.size(0); start += kForwardBatch) {
    const int64_t count = std::min(kForwardBatch, inputs.size(0) - start);
    ASSIGN_OR_RETURN(c10::IValue output, model.Forward(inputs.narrow(0, start, count)));
    if (!output.isTensor() || output.toTensor().dim() != 2 || output.toTensor().size(0) != count) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                        "evaluation needs a model whose output is [N, classes]");
    }
    torch::Tensor predicted = output.toTensor().argmax(1).to(torch::kCPU);
    correct += predicted.eq(labels.narrow(0, start, count)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / std::max<int64_t>(1, inputs.size(0));
}

absl::StatusOr<CalibrationData> LoadLabelledData(const std::string& path, const std::string& what) {
  ASSIGN_OR_RETURN(CalibrationData data, LoadCalibrationFile(path));
  if (!data.labels.has_value()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat("the ", what, " data has no labels: save a dict {'inputs': X, "
                                   "'labels': y} with torch.save, or an .npz with keys inputs and "
                                   "labels"));
  }
  torch::Tensor labels = *data.labels;
  if (labels.dim() != 1 || labels.size(0) != data.inputs.size(0) || labels.is_floating_point()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat(what, " labels must be integers, one per input (",
                                   data.inputs.size(0), "), got shape [",
                                   absl::StrJoin(labels.sizes(), ", "), "]"));
  }
  if (data.inputs.size(0) < 1) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat("the ", what, " data holds no samples"));
  }
  if (data.inputs.is_floating_point() && !torch::isfinite(data.inputs).all().item<bool>()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNonFiniteInput,
                      absl::StrCat("the ", what, " inputs contain NaN or Inf values"));
  }
  data.labels = labels.to(torch::kLong);
  return data;
}

absl::Status CheckLabelledAgainst(ProbedModel& model, const CalibrationData& data,
                                  const std::string& what) {
  torch::NoGradGuard no_grad;
  const torch::Tensor sample = data.inputs.narrow(0, 0, std::min<int64_t>(2, data.inputs.size(0)));
  absl::StatusOr<c10::IValue> output = model.Forward(sample);
  if (!output.ok()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                      absl::StrCat(what, " data: ", output.status().message()));
  }
  if (!output->isTensor() || output->toTensor().dim() != 2 ||
      output->toTensor().size(0) != sample.size(0)) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      what == "train"
                          ? "QAT trains with cross-entropy: it needs a model whose output is "
                            "[N, classes] (class scores)"
                          : "evaluation needs a model whose output is [N, classes] (class scores)");
  }
  const int64_t classes = output->toTensor().size(1);
  const torch::Tensor& labels = *data.labels;
  const int64_t low = labels.min().item<int64_t>(), high = labels.max().item<int64_t>();
  if (low < 0 || high >= classes) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat(what, " labels range over [", low, ", ", high,
                                   "] but the model outputs ", classes, " classes"));
  }
  return absl::OkStatus();
}

}  // namespace ompq::engine
