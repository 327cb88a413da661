// Uniform affine quantizers for post-training quantization (ALGORITHM.md "After the
// search"): weights per output channel, activations per tensor, both with a clipping range
// chosen by an Lp (MSE-like) search as in BRECQ; BatchNorm folding; encodings of the result.
//
// Convention (the same as torch.fake_quantize_per_{tensor,channel}_affine with
// quant_min = 0, quant_max = 2^bits - 1):
//   code   q = clamp(round(x / s) + z, 0, 2^bits - 1)   (round half to even)
//   value  x' = (q - z) * s
// with scale s > 0 and an integer zero point z in [0, 2^bits - 1]. Encodings use AIMET's
// offset = -z, so that min = offset * s (or (offset + 1) * s in a narrow range) and
// max = (offset + 2^bits - 1) * s.
//
// The clipping search, exactly (tests/quant/quant_reference.py mirrors it in numpy):
//   For each channel (or the whole tensor) with data x: lo0 = min(min(x), 0),
//   hi0 = max(max(x), 0) (zero is always representable). For k = 0 .. num_candidates - 1,
//   r_k = 1 - k * ratio_step and
//     asymmetric: lo = r_k * lo0, hi = r_k * hi0,
//                 s = max((hi - lo) / (2^bits - 1), kMinScale), z = clamp(round(-lo / s), 0, qmax)
//     symmetric:  m = r_k * max(-lo0, hi0), s = max(2 m / (2^bits - 1), kMinScale),
//                 z = 2^(bits - 1)  (torch's symmetric quint8 choice: z = 128 at 8 bits)
//     narrow range (symmetric only): codes 1 .. 2^bits - 1, s = max(m / (2^(bits-1) - 1),
//                 kMinScale), z = 2^(bits - 1): signed codes -(2^(b-1) - 1) .. 2^(b-1) - 1,
//                 TensorRT's weight range ([-127, 127] at 8 bits).
//   loss_k = sum |x - x'|^p over the data; the first k with the smallest loss wins.
//   Data with min >= 0 (after a ReLU) has lo0 = 0, so z = 0: the whole grid is unsigned.
//   Ranges and grids are float64; the element-wise error is float32 (the weights' own
//   precision, and several times faster) summed in float64, so a float64 reference picks
//   the same k except where two candidates' losses agree to float32 rounding.
//   Activations with more than max_search_elements elements are searched on the strided
//   subset x.flatten()[::stride], stride = ceil(numel / max); their lo0/hi0 still come from
//   the whole tensor.
#ifndef OMPQ_WORKERS_ENGINE_QUANTIZER_H_
#define OMPQ_WORKERS_ENGINE_QUANTIZER_H_

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace ompq::engine {

/// Smallest scale a quantizer uses, so that an all-zero channel still has a valid grid.
inline constexpr double kMinScale = 1e-8;

/// How a clipping range is chosen.
struct QuantizerOptions {
  int bits = 8;                           // 1..16 (2..16 when symmetric).
  bool symmetric = false;                 // Weights and activations default to asymmetric.
  bool narrow_range = false;              // Symmetric only: the lowest code is left out.
  double p = 2.4;                         // Norm of the search loss (BRECQ uses 2.4).
  int num_candidates = 80;                // Clip ratios 1, 1 - step, ..., searched.
  double ratio_step = 0.01;               // r_k = 1 - k * ratio_step, must stay > 0.
  int64_t max_search_elements = 1 << 20;  // Per-tensor search subsamples above this.
};

/// The form a job's quantized model is exported in (--export-profile), which fixes the grid
/// every stage quantizes on, so that what is evaluated is what is exported:
///   kDefault   asymmetric weights and activations; biases on the int32 grid s_x * s_w.
///   kTensorRt  symmetric weights and activations (z = 2^(bits-1), so the signed int8 codes
///              have zero point 0) and float biases: what TensorRT's ONNX parser accepts.
enum class ExportProfile { kDefault, kTensorRt };

/// "default", "tensorrt": the report's and the CLI's words.
const char* ExportProfileName(ExportProfile profile);

/// Whether weights and activations are quantized symmetrically under `profile`.
inline bool SymmetricGrid(ExportProfile profile) { return profile == ExportProfile::kTensorRt; }

/// The weight quantizer options of `profile` at `bits` (the clipping search's defaults):
/// kTensorRt's are symmetric with a narrow range.
QuantizerOptions WeightQuantizerOptions(int bits, ExportProfile profile);

/// A fitted quantizer: one (scale, zero point) per channel, or one for the whole tensor.
struct QuantParams {
  int bits = 8;
  bool symmetric = false;
  bool narrow_range = false;  // Codes from 1 (symmetric grids only).
  int64_t axis = -1;          // -1: per tensor; 0: per output channel (dim 0).
  torch::Tensor scale;        // float64 [C], C = 1 per tensor, on the CPU.
  torch::Tensor zero_point;   // int64 [C], each in [quant_min(), quant_max()], on the CPU.

  int64_t quant_min() const { return narrow_range ? 1 : 0; }
  int64_t quant_max() const { return (int64_t{1} << bits) - 1; }
  int64_t channels() const { return scale.defined() ? scale.numel() : 0; }
};

/// One encoding as deployment toolchains read it (AIMET layout): offset = -zero_point.
struct Encoding {
  int bitwidth = 8;
  double scale = 1.0;
  int64_t offset = 0;
  double min = 0.0;  // (offset + quant_min) * scale: the smallest representable value.
  double max = 0.0;  // (offset + 2^bitwidth - 1) * scale: the largest.
  bool is_symmetric = false;
};

/// Per-output-channel quantizer for a weight [O, ...] (dim 0 is the output channel, as for
/// Conv*d and Linear). INVALID_ARGUMENT for bad options, a 0-d or empty or non-finite weight.
absl::StatusOr<QuantParams> FitWeightQuantizer(const torch::Tensor& weight,
                                               const QuantizerOptions& options);

/// Per-tensor quantizer calibrated on a batch of activations (any shape).
absl::StatusOr<QuantParams> FitActivationQuantizer(const torch::Tensor& activations,
                                                   const QuantizerOptions& options);

/// The grid for given ranges without a search (candidate k = 0 above): lo/hi are [C]
/// (C = 1 when axis is -1), widened to include zero first. axis as in QuantParams.
absl::StatusOr<QuantParams> QuantParamsFromRange(const torch::Tensor& lo, const torch::Tensor& hi,
                                                 int bits, bool symmetric, int64_t axis);

/// Integer codes (int64, same shape as x) in [quant_min(), quant_max()].
absl::StatusOr<torch::Tensor> Quantize(const torch::Tensor& x, const QuantParams& params);

/// (codes - z) * s as `dtype`, on the device of `codes`.
absl::StatusOr<torch::Tensor> Dequantize(const torch::Tensor& codes, const QuantParams& params,
                                         torch::ScalarType dtype = torch::kFloat);

/// Dequantize(Quantize(x)) in the dtype and on the device of x.
absl::StatusOr<torch::Tensor> QuantizeDequantize(const torch::Tensor& x, const QuantParams& params);

/// One Encoding per channel (or a single one per tensor).
std::vector<Encoding> EncodingsOf(const QuantParams& params);

/// A BatchNorm layer's inference state. weight/bias may be undefined (affine=False).
struct BatchNormParams {
  torch::Tensor running_mean;  // [O]
  torch::Tensor running_var;   // [O]
  torch::Tensor weight;        // gamma [O], or undefined for 1.
  torch::Tensor bias;          // beta [O], or undefined for 0.
  double eps = 1e-5;
};

/// A layer's weight and bias after folding.
struct FoldedLayer {
  torch::Tensor weight;
  torch::Tensor bias;  // Always defined after folding.
};

/// Folds an inference-mode BatchNorm into the conv or linear layer it directly follows:
///   w' = w * g / sqrt(var + eps) (per output channel, dim 0), b' = (b - mean) * g /
///   sqrt(var + eps) + beta. `bias` may be undefined (no bias). Computed in float64,
///   returned in weight's dtype. INVALID_ARGUMENT for mismatched shapes.
absl::StatusOr<FoldedLayer> FoldBatchNorm(const torch::Tensor& weight, const torch::Tensor& bias,
                                          const BatchNormParams& bn);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_QUANTIZER_H_
