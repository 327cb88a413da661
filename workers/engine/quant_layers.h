// The layers the quantizer works on: the searched layers found again in the probed graph,
// with their (BatchNorm-folded) float weights, how their op applies the weight, their
// fitted weight quantizers and what reconstruction did to them.
#ifndef OMPQ_WORKERS_ENGINE_QUANT_LAYERS_H_
#define OMPQ_WORKERS_ENGINE_QUANT_LAYERS_H_

#include <torch/script.h>

#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/engine/adaround.h"
#include "workers/engine/probed_model.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

struct QuantLayer {
  std::string name;
  std::string weight_key;  // The weight's state_dict key (encodings.json, ONNX).
  std::string kind;
  int bits = 8;
  std::vector<int> sites;  // Call sites; the first one is reconstructed.
  // The working model's tensors, changed in place.
  torch::Tensor weight;
  torch::Tensor bias;  // Undefined when the layer has none.
  bool folded = false;  // BatchNorm folded (its tensors below turned into x + bias).
  torch::Tensor bn_weight, bn_bias, bn_mean, bn_var;
  double bn_eps = 1e-5;
  // The float layer after folding: what the quantized weight approximates.
  torch::Tensor fp_weight, fp_bias;
  std::optional<LayerOp> op;
  QuantParams weight_params;
  torch::Tensor codes;
  torch::Tensor nearest_weight;  // Dequantized nearest rounding, as installed.
  // Reconstruction results.
  double mse_nearest = std::nan("");
  double mse_quantized = std::nan("");
  int64_t samples = 0;
  std::string method = "nearest";
  std::string note;
};

/// A constant of the graph, or a module attribute reached by a GetAttr chain from self.
std::optional<c10::IValue> StaticValue(torch::jit::Value* value, const torch::jit::Module& module,
                                       const torch::jit::Value* self);

/// The inference-mode BatchNorm that alone consumes the site's output, with static eps,
/// running statistics and a shift to fold into (its own, or the layer's bias when
/// `layer_has_bias`); nullopt when there is none or it cannot be folded.
std::optional<BatchNormParams> InferenceBatchNorm(const LayerSiteNode& site,
                                                  const torch::jit::Module& module,
                                                  const torch::jit::Value* self,
                                                  bool layer_has_bias);

/// The layers of `work` that the search allocated `bits` to (by name), in execution
/// order. NO_QUANTIZABLE_LAYERS when none is found in the graph.
absl::StatusOr<std::vector<QuantLayer>> PlanLayers(
    ProbedModel& work, const std::unordered_map<std::string, int>& bits);

/// Puts the layer's quantized weight (BatchNorm folded) into the working model.
void InstallWeight(QuantLayer& layer, const torch::Tensor& quantized);

/// Rounds the bias of every layer with one call site, weights and input quantized at up to
/// 8 bits, to the grid a runtime's integer kernel adds it on: integer multiples of
/// s_x * s_w[c] (in float32, as ONNX's DequantizeLinear of int32 computes it). The model
/// then computes what its ONNX export (int32 biases) computes. Call after the weights and
/// activation quantizers are final, and again after InstallWeight (which restores the
/// float bias of a folded layer). Returns the number of layers rounded. Both profiles:
/// where the file keeps biases float (tensorrt), runtimes that fuse a layer into an integer
/// kernel round it onto this grid themselves (ONNX Runtime does).
int QuantizeBiases(std::vector<QuantLayer>& layers, const ProbeSession& session);

/// Fits every layer's per-channel weight quantizer at its bits (the clipping search of
/// quantizer.h) and installs nearest rounding; the layers are shared out over all cores,
/// largest first. Each layer's result is the same as fitting it alone. Symmetric grids
/// under ExportProfile::kTensorRt.
absl::Status FitWeights(std::vector<QuantLayer>& layers, ExportProfile profile);

/// Fits the activation quantizer at every input of `layers` (act_bits, symmetric under
/// ExportProfile::kTensorRt) in one forward pass
/// of `work` over the first calibration inputs: fewer than all where the largest layer
/// input would take more than half of `max_capture_bytes`. `progress(fitted, sites)`
/// returning false cancels. Returns the samples the pass used.
absl::StatusOr<int64_t> CalibrateActivations(ProbedModel& work,
                                             const std::vector<QuantLayer>& layers,
                                             const torch::Tensor& calib, int act_bits,
                                             ExportProfile profile, int64_t max_capture_bytes,
                                             const std::function<bool(int, int)>& progress);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_QUANT_LAYERS_H_
