// QAT (FINETUNING with --finetune qat) on the probed working model.
#ifndef OMPQ_WORKERS_ENGINE_QAT_TRAINING_H_
#define OMPQ_WORKERS_ENGINE_QAT_TRAINING_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/engine/probed_model.h"
#include "workers/engine/qat.h"
#include "workers/engine/quant_layers.h"
#include "workers/engine/tensor_io.h"

namespace ompq::engine {

struct QatTrainOptions {
  int64_t epochs = kDefaultQatEpochs;   // Passes over the training data.
  double lr = kDefaultQatLr;            // Adam's learning rate.
  int64_t batch_size = kQatBatchSize;   // Samples per step.
  int64_t seed = 0;                     // Shuffling.
};

// QAT: the whole working model trains on the labelled data with cross-entropy and Adam;
// every quantized layer's (BatchNorm-folded) weight is a latent float tensor fake-quantized
// in the forward pass, and the weight and activation step sizes are learned (LSQ). Starts
// from the calibrated quantizers with the float weights (so step 0 is nearest rounding),
// ends with the weights on their learned grids installed and the learned activation step
// sizes set: exactly what EVALUATING measures and EXPORTING writes. `progress` gets the
// fraction of all steps done and is checked before every step.
absl::StatusOr<nlohmann::json> RunQat(
    const QatTrainOptions& options, ProbedModel& work, std::vector<QuantLayer>& layers,
    const CalibrationData& train,
    const std::function<absl::Status(double, const std::string&)>& progress);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_QAT_TRAINING_H_
