// AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
// Quantization"): learns, per weight, whether to round down or up so that a layer's output
// on calibration data stays close to its floating-point output.
//
// The quantizer grid (scale, zero point per output channel) is fixed beforehand
// (FitWeightQuantizer); only the rounding is learned:
//   soft weight  w~ = s * (clamp(floor(w / s) + z + h(V), 0, 2^b - 1) - z)
//   h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1), zeta = 1.1, gamma = -0.1
//   loss = rec + lambda * sum(1 - |2 h(V) - 1|^beta)   (the regulariser after a warm start)
// with beta annealed linearly from beta_start to beta_end. V starts where h(V) equals the
// fractional part of w / s, i.e. at the unquantized weight. The final rounding is up where
// V >= 0 (h(V) >= 0.5).
//
// AdaRoundWeight holds V for one layer and exposes its soft and hard weights and the
// regulariser, so a block reconstruction (BRECQ) can optimise several layers under one
// loss; RunAdaRound is the single-layer reconstruction built from it.
#ifndef OMPQ_WORKERS_ENGINE_ADAROUND_H_
#define OMPQ_WORKERS_ENGINE_ADAROUND_H_

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// How a weight is applied to its input.
struct LayerOp {
  enum class Kind { kLinear, kConv };
  Kind kind = Kind::kLinear;
  // Convolution only (the dimension comes from the weight: [O, I/groups, k...]). One value
  // applies to every spatial dimension.
  std::vector<int64_t> stride = {1};
  std::vector<int64_t> padding = {0};
  std::vector<int64_t> dilation = {1};
  int64_t groups = 1;
};

/// y = op(x, weight, bias) (bias may be undefined). INVALID_ARGUMENT with torch's message
/// when the shapes do not fit.
absl::StatusOr<torch::Tensor> ApplyLayer(const LayerOp& op, const torch::Tensor& x,
                                         const torch::Tensor& weight, const torch::Tensor& bias);

/// The learnable rounding of one layer's weight.
class AdaRoundWeight {
 public:
  /// V initialised so that the soft weight equals the clipped weight. Works on weight's
  /// device, in float32. INVALID_ARGUMENT when params are not per channel for `weight`.
  static absl::StatusOr<AdaRoundWeight> Create(const torch::Tensor& weight,
                                               const QuantParams& params);

  /// The rounding variable to hand to an optimizer (requires grad).
  torch::Tensor& v() { return v_; }

  /// Differentiable (in V) dequantised weight with soft rounding h(V).
  torch::Tensor SoftWeight() const;
  /// sum(1 - |2 h(V) - 1|^beta): pushes every h(V) towards 0 or 1.
  torch::Tensor Regularizer(double beta) const;
  /// Integer codes with the learned rounding (up where V >= 0), int64 in [0, 2^b - 1].
  torch::Tensor HardCodes() const;
  /// Integer codes of round-to-nearest, the baseline AdaRound improves on.
  torch::Tensor NearestCodes() const;
  /// Dequantised float32 weight for given codes.
  torch::Tensor Dequantize(const torch::Tensor& codes) const;

 private:
  AdaRoundWeight() = default;
  torch::Tensor H() const;  // The rectified sigmoid h(V), in [0, 1].

  torch::Tensor floor_;    // floor(w / s) + z, float32, same shape as the weight.
  torch::Tensor nearest_;  // clamp(round(w / s) + z), float32.
  torch::Tensor scale_;    // [O, 1, ...] float32, broadcasts against the weight.
  torch::Tensor zero_;     // [O, 1, ...] float32.
  torch::Tensor v_;        // The rounding variable, float32, requires grad.
  double quant_min_ = 0;
  double quant_max_ = 0;
};

/// Optimisation settings (defaults follow AdaRound/BRECQ, with fewer iterations).
struct AdaRoundOptions {
  int64_t iters = 2000;           // Optimizer steps.
  int64_t batch_size = 32;        // Samples per step, drawn without replacement.
  double learning_rate = 1e-2;    // Adam on V.
  double reg_weight = 0.01;       // lambda.
  double beta_start = 20.0;       // Regulariser temperature at the end of the warm start...
  double beta_end = 2.0;          // ...annealed linearly to this at the last step.
  double warm_start = 0.2;        // Fraction of steps with the reconstruction loss alone.
  uint64_t seed = 0;              // Batch sampling; the only randomness.
  int64_t eval_batch_size = 256;  // Samples per forward pass when measuring the MSE.
};

/// The regulariser's beta at step `iter`, or nullopt during the warm start (no regulariser).
std::optional<double> AdaRoundBeta(int64_t iter, const AdaRoundOptions& options);

/// Reconstruction loss of a batch: squared error summed over the channel dimension (dim 1)
/// and averaged over every other position (samples and spatial positions), as in BRECQ.
torch::Tensor ReconstructionLoss(const torch::Tensor& output, const torch::Tensor& target);

/// Mean squared error of `forward(x)` against `y` over samples [0, n), in batches of
/// `batch_size`, where `batch(indices)` returns (x, y); no gradients. How AdaRound and BRECQ
/// decide whether learned rounding beat nearest rounding.
double BatchedMse(
    int64_t n, int64_t batch_size,
    const std::function<std::pair<torch::Tensor, torch::Tensor>(const torch::Tensor&)>& batch,
    const std::function<torch::Tensor(const torch::Tensor&)>& forward);

/// Called with the fraction of steps done; returning false stops the run (CANCELLED).
using ProgressCallback = std::function<bool(double)>;

/// What a single-layer AdaRound produced.
struct AdaRoundResult {
  torch::Tensor codes;        // int64, weight's shape, in [0, 2^b - 1].
  torch::Tensor weight;       // Dequantised codes, float32, on the weight's device.
  double mse_nearest = 0;     // Mean squared output error with round-to-nearest.
  double mse_adaround = 0;    // The same with the returned codes.
  bool kept_nearest = false;  // Learning did not beat nearest: codes are the nearest ones.
};

/// One layer's reconstruction: inputs [N, ...] (on any device; batches move to the
/// weight's device), targets the FP outputs for those inputs, or undefined to use
/// op(inputs, weight, bias). The reported MSEs are over all N inputs.
absl::StatusOr<AdaRoundResult> RunAdaRound(const torch::Tensor& weight, const torch::Tensor& bias,
                                           const LayerOp& op, const QuantParams& params,
                                           const torch::Tensor& inputs,
                                           const torch::Tensor& targets,
                                           const AdaRoundOptions& options,
                                           const ProgressCallback& progress = nullptr);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_ADAROUND_H_
