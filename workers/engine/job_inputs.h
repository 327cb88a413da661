// A job's input files, loaded and checked once for all the stages that use them: the
// model (kept untouched; a stage that changes weights works on CopyModel), its digest,
// the calibration inputs and any labelled eval or training data.
#ifndef OMPQ_WORKERS_ENGINE_JOB_INPUTS_H_
#define OMPQ_WORKERS_ENGINE_JOB_INPUTS_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {

struct InputPaths {
  std::string model;  // TorchScript archive.
  std::string calib;  // Calibration inputs (labels, if any, are ignored).
  std::string eval;   // Labelled eval data, or empty.
  std::string train;  // Labelled training data (QAT), or empty.
  std::string device = "cpu";
};

struct JobInputs {
  // As loaded, never changed by a stage. Its tensors are inference tensors: run it under
  // c10::InferenceMode, or use CopyModel.
  LoadedModel model;
  std::string model_digest;  // "sha256:<hex>" of the model file.
  torch::Tensor calib;       // Every calibration input, on the CPU.
  std::optional<CalibrationData> eval;   // Labelled, finite.
  std::optional<CalibrationData> train;  // Labelled, finite.
};

/// Reads the labelled files first (cheap checks fail fast), then loads the model while
/// the digest and the calibration file are read on another thread. Errors carry job
/// failure reasons (tensor_io.h, torchscript_model.h, labelled_data.h).
absl::StatusOr<JobInputs> LoadJobInputs(const InputPaths& paths);

/// Eval and training data against the model: two samples give [2, classes] and every
/// label lies in [0, classes). INVALID_INPUT or INPUT_MISMATCH with the reason otherwise.
absl::Status CheckLabelledInputs(const JobInputs& inputs);

/// A copy of the model with its own parameters (ordinary tensors), types and graphs, for
/// a stage that runs outside InferenceMode, changes weights or rewrites the graph.
absl::StatusOr<LoadedModel> CopyModel(const LoadedModel& model);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_JOB_INPUTS_H_
