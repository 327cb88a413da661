// After the search: quantize the model at the bit-widths the search chose, recover
// accuracy by post-training reconstruction, evaluate, and export (ALGORITHM.md "After the
// search", PRODUCT.md artifacts).
//
//   CALIBRATING  BatchNorm folded into the layer it follows; every layer in execution order
//                gets a per-channel weight quantizer (MSE clipping search) with nearest
//                rounding (all layers' ranges fitted at once on every core) and a
//                per-tensor activation quantizer at its input, calibrated in one forward
//                pass on the inputs the already-quantized layers before it produce
//                (probed_model.h).
//   FINETUNING   (ptq, ptq.h) in execution order, each residual block the graph reveals is
//                reconstructed as one unit (BRECQ, brecq.h: the rounding of all its layers
//                learned jointly on the block output), every other layer alone (AdaRound:
//                the layer's output on its quantized inputs matches the float model's).
//                (qat, qat_training.h) the whole model trains on labelled data
//                (cross-entropy, Adam) with weights and activations fake-quantized, step
//                sizes learned (LSQ, qat.h).
//   EVALUATING   (with eval data) top-1 of the float model, of the calibrated model with
//                nearest rounding, and of the finetuned one.
//   EXPORTING    model_quantized.pt: the model with its weights replaced by the quantized
//                (BatchNorm-folded) values and aten::fake_quantize_per_tensor_affine at the
//                input of every quantized layer, loadable by torch.jit.load; encodings.json;
//                model_quantized.onnx from the same graph (onnx_export.h), left out with
//                the reason in report["export"]["onnx"] when the graph has an op it does
//                not know. Before evaluation, biases are rounded to the int32 grid the ONNX
//                export uses (QuantizeBiases), so every artifact computes the same.
//
// The graph work reuses the search's approach: the forward graph is inlined, layers are
// found by graph rewriting (graph_layers.h), and a probe op at each layer's input captures
// inputs and applies activation quantization while the quantizers are being fitted.
#ifndef OMPQ_WORKERS_ENGINE_QUANTIZE_H_
#define OMPQ_WORKERS_ENGINE_QUANTIZE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/job_limits.h"
#include "nlohmann/json.hpp"
#include "workers/engine/job_inputs.h"
#include "workers/engine/qat.h"
#include "workers/engine/search.h"

namespace ompq::engine {

/// Default AdaRound iterations per layer (--iters 0).
inline constexpr int64_t kDefaultPtqIters = limits::kDefaultPtqIters;

/// What follows calibration (--finetune).
enum class FinetuneMode { kNone, kPtq, kQat };

/// "none", "ptq", "qat": the report's and the CLI's words.
const char* FinetuneModeName(FinetuneMode mode);

struct QuantizeOptions {
  std::string model_path;  // The TorchScript archive the search ran on.
  std::string calib_path;  // Calibration inputs (labels, if any, are ignored).
  std::string eval_path;   // Labelled eval data, or empty for no evaluation.
  std::string train_path;  // Labelled training data (QAT only).
  FinetuneMode finetune = FinetuneMode::kPtq;  // kNone keeps nearest rounding.
  int act_bits = limits::kDefaultActBits;
  // The grid of every stage and the form of model_quantized.onnx (quantizer.h).
  ExportProfile export_profile = ExportProfile::kDefault;
  int calib_samples = limits::kDefaultCalibSamples;  // Calibration inputs used (the first ones).
  int64_t iters = kDefaultPtqIters;  // AdaRound steps per layer.
  int64_t epochs = kDefaultQatEpochs;       // QAT passes over the training data.
  double lr = kDefaultQatLr;                // QAT learning rate (Adam).
  int64_t qat_batch_size = kQatBatchSize;   // QAT samples per step.
  int64_t seed = 0;
  std::string device = "cpu";
  int frontier_evals = 0;  // Frontier points whose top-1 is measured (with eval data).
  // Bound on the inputs and targets held for one layer's reconstruction; fewer samples
  // are used for a layer whose inputs are larger.
  int64_t max_capture_bytes = int64_t{768} << 20;
  std::string out_dir;  // model_quantized.pt/.onnx and encodings.json are written here.
};

/// Checks eval data before any long work: a labelled file whose inputs the model accepts,
/// whose output is [N, classes] and whose labels lie in [0, classes). INVALID_INPUT or
/// INPUT_MISMATCH with the reason otherwise.
absl::Status CheckEvalData(const QuantizeOptions& options);

/// The same checks for the QAT training data (options.train_path), which must be present
/// when options.finetune is kQat; OK without it otherwise.
absl::Status CheckTrainData(const QuantizeOptions& options);

/// Quantizes with the bits of `report["layers"]` (the search's report), finetunes,
/// evaluates, writes model_quantized.pt, encodings.json and (when the graph translates)
/// model_quantized.onnx into options.out_dir, and adds
/// to `report`: "quantization" (per-layer reconstruction errors; with QAT, "qat": epochs,
/// lr, steps, training loss before and after), "accuracy" (with eval data), "export"
/// ("onnx": exported or skipped with the reason) and timings
/// "finetune", "evaluate", "export". Returns the file names written.
/// CANCELLED when `progress` returns false.
absl::StatusOr<std::vector<std::string>> RunQuantization(const QuantizeOptions& options,
                                                         nlohmann::json& report,
                                                         const ProgressFn& progress);

/// The files `options` names, for LoadJobInputs (training data only with QAT).
InputPaths InputPathsOf(const QuantizeOptions& options);

/// The same on inputs already loaded (the paths of `options` are unused): the model is
/// copied for quantizing, never reloaded.
absl::StatusOr<std::vector<std::string>> RunQuantization(const QuantizeOptions& options,
                                                         const JobInputs& inputs,
                                                         nlohmann::json& report,
                                                         const ProgressFn& progress);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_QUANTIZE_H_
