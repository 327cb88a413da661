// Labelled data (eval and QAT training files) and what is measured with it: loading and
// checking it against the model, and top-1 accuracy.
#ifndef OMPQ_WORKERS_ENGINE_LABELLED_DATA_H_
#define OMPQ_WORKERS_ENGINE_LABELLED_DATA_H_

#include <string>

#include "absl/status/statusor.h"
#include "workers/engine/probed_model.h"
#include "workers/engine/tensor_io.h"

namespace ompq::engine {

/// Labelled data (`what`: "eval" or "train"): inputs with one integer label each, finite.
/// INVALID_INPUT or NON_FINITE_INPUT with the reason otherwise.
absl::StatusOr<CalibrationData> LoadLabelledData(const std::string& path, const std::string& what);

/// Labelled data against the model: a forward pass of two samples must give [2, classes]
/// and every label must lie in [0, classes).
absl::Status CheckLabelledAgainst(ProbedModel& model, const CalibrationData& data,
                                  const std::string& what);

/// The fraction of `inputs` whose arg-max class is the label.
absl::StatusOr<double> TopOne(ProbedModel& model, const torch::Tensor& inputs,
                              const torch::Tensor& labels);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_LABELLED_DATA_H_
