#include "workers/engine/job_inputs.h"

#include <future>
#include <memory>

#include "common/digest.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/labelled_data.h"
#include "workers/engine/probed_model.h"

namespace ompq::engine {

absl::StatusOr<JobInputs> LoadJobInputs(const InputPaths& paths) {
  InitTorchThreads();
  // The data are ordinary tensors (the quantizer's passes run outside InferenceMode);
  // the model's are inference tensors, which the search's forward pass runs faster on
  // (measured ~10% on MobileNetV2): stages that run outside InferenceMode use CopyModel.
  torch::NoGradGuard no_grad;
  JobInputs inputs;
  if (!paths.eval.empty()) {
    ASSIGN_OR_RETURN(CalibrationData eval, LoadLabelledData(paths.eval, "eval"));
    inputs.eval = std::move(eval);
  }
  if (!paths.train.empty()) {
    ASSIGN_OR_RETURN(CalibrationData train, LoadLabelledData(paths.train, "train"));
    inputs.train = std::move(train);
  }
  // Loading the archive compiles the model's code on one core; the digest and the
  // calibration inputs are read on another meanwhile.
  struct SideInputs {
    absl::StatusOr<std::string> digest;
    absl::StatusOr<CalibrationData> calibration;
  };
  std::future<SideInputs> side = std::async(std::launch::async, [&paths] {
    torch::NoGradGuard side_no_grad;
    return SideInputs{DigestOfFile(paths.model), LoadCalibrationFile(paths.calib)};
  });
  absl::StatusOr<LoadedModel> loaded = [&] {
    c10::InferenceMode inference_mode;
    return LoadTorchScriptModel(paths.model, paths.device);
  }();
  SideInputs side_inputs = side.get();
  RETURN_IF_ERROR(loaded.status());
  inputs.model = *std::move(loaded);
  ASSIGN_OR_RETURN(inputs.model_digest, std::move(side_inputs.digest));
  ASSIGN_OR_RETURN(CalibrationData calibration, std::move(side_inputs.calibration));
  inputs.calib = std::move(calibration.inputs);
  return inputs;
}

absl::Status CheckLabelledInputs(const JobInputs& inputs) {
  if (!inputs.eval.has_value() && !inputs.train.has_value()) return absl::OkStatus();
  c10::InferenceMode inference_mode;  // The model's tensors are inference tensors.
  // The probed graph runs as the quantizer's will; no probe is active here.
  ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> model, ProbedModel::Create(inputs.model));
  if (inputs.eval.has_value()) RETURN_IF_ERROR(CheckLabelledAgainst(*model, *inputs.eval, "eval"));
  if (inputs.train.has_value()) {
    RETURN_IF_ERROR(CheckLabelledAgainst(*model, *inputs.train, "train"));
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedModel> CopyModel(const LoadedModel& model) {
  LoadedModel copy;
  copy.device = model.device;
  // Outside InferenceMode, so that the copies are ordinary tensors.
  c10::InferenceMode not_inference(false);
  torch::NoGradGuard no_grad;
  RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInternal, reason::kInternal,
                            "cannot copy the model", [&] { copy.module = model.module.clone(); }));
  return copy;
}

}  // namespace ompq::engine
