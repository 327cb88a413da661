// Quantization-aware training (--finetune qat) building blocks: quantizers whose step
// sizes are learned with LSQ (Esser et al., "Learned Step Size Quantization", ICLR 2020)
// and the defaults of --epochs and --lr. The training loop itself lives in quantize.cc,
// beside the probed model whose forward pass applies these quantizers.
//
// Forward: x' = (clamp(round(x / s) + z, 0, 2^bits - 1) - z) * s, exactly as
// aten::fake_quantize_per_{tensor,channel}_affine, so the exported model computes what
// was trained. Backward: straight-through for x inside the range (zero outside), LSQ's
// gradient for s scaled by g = 1 / sqrt(n * (2^bits - 1)) with n the elements one step
// size covers (a weight channel; one sample's activation tensor). Zero points stay as
// calibrated: only the step sizes (and the weights) are learned.
#ifndef OMPQ_WORKERS_ENGINE_QAT_H_
#define OMPQ_WORKERS_ENGINE_QAT_H_

#include <torch/types.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/job_limits.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// --epochs 0: one pass over the training data (QAT here starts from calibrated
/// quantizers, so a short run already recovers most of the loss).
inline constexpr int64_t kDefaultQatEpochs = limits::kDefaultQatEpochs;
/// --lr 0: Adam's learning rate for the weights and step sizes (LSQ's finetuning rates
/// are of this order; larger ones move low-bit step sizes too far in one step).
inline constexpr double kDefaultQatLr = limits::kDefaultQatLr;
/// Training samples per step.
inline constexpr int64_t kQatBatchSize = limits::kQatBatchSize;

/// A fake quantizer with a learned step size (per tensor or per output channel).
class LsqQuantizer {
 public:
  /// Starts from a fitted quantizer; the step sizes live on `device` as a float32 leaf
  /// that requires grad. INVALID_ARGUMENT for params without scales.
  static absl::StatusOr<LsqQuantizer> From(const QuantParams& params, const torch::Device& device);

  /// Fake-quantizes `x` (per channel along dim 0 when the params are per channel) with
  /// the current step sizes; differentiable in x and the step sizes.
  torch::Tensor Apply(const torch::Tensor& x) const;

  /// The learned step sizes (the optimizer's parameter).
  const torch::Tensor& scale() const { return scale_; }

  /// Keeps every step size at or above kMinScale after an optimizer step.
  void ClampScale();

  /// The quantizer with the learned step sizes (float64, CPU) and the original zero points.
  QuantParams Params() const;

 private:
  QuantParams params_;
  torch::Tensor scale_;       // float32, requires grad.
  torch::Tensor zero_point_;  // float32 (what the learnable ATen ops take), fixed.
};

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_QAT_H_
