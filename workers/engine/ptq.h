// Post-training reconstruction (FINETUNING with --finetune ptq): in execution order, each
// residual block the graph reveals is reconstructed as one unit (BRECQ, brecq.h: the
// rounding of all its layers learned jointly on the block output), every other layer alone
// (AdaRound, adaround.h: the layer's output on its quantized inputs matches the float
// model's). A unit's learned rounding is kept only when it beats nearest rounding.
#ifndef OMPQ_WORKERS_ENGINE_PTQ_H_
#define OMPQ_WORKERS_ENGINE_PTQ_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "workers/engine/probed_model.h"
#include "workers/engine/quant_layers.h"

namespace ompq::engine {

struct PtqOptions {
  int64_t iters = 1000;  // Steps per unit.
  int64_t seed = 0;
  int64_t max_capture_bytes = int64_t{768} << 20;  // Inputs and targets held per unit.
};

/// Progress of the reconstruction: `fraction` of it done, and what runs; false stops it.
using PtqProgressFn = std::function<bool(double fraction, const std::string& message)>;

/// Reconstructs `layers` of `work` (calibrated, nearest rounding installed) against the
/// float model `fp` on the calibration inputs `calib`, installing the learned rounding.
/// Returns report.json's quantization.units. CANCELLED when `progress` says stop.
absl::StatusOr<nlohmann::json> RunPtq(const PtqOptions& options, ProbedModel& fp,
                                      ProbedModel& work, std::vector<QuantLayer>& layers,
                                      const torch::Tensor& calib, const PtqProgressFn& progress);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_PTQ_H_
