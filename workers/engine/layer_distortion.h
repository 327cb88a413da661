// Each layer's measured weight distortion at each candidate bit-width, for the `distortion`
// objective (docs/algorithm.md, "The distortion objective"):
//
//   D_i(b) = sum_{o,k} (Q_b(W) - W)_{ok}^2 h_k  /  sum_{o,k} W_{ok}^2 h_k
//
// W is the layer's weight as the PTQ stage quantizes it (BatchNorm folded), o its output
// channel and k the input element a weight reads; h_k is the mean square of that input
// channel over the search batch (and positions), from the same forward pass as the
// orthogonality. It is tr(dW H dW^T) / tr(W H W^T) with H = X X^T reduced to its diagonal:
// exact in expectation when rounding errors are uncorrelated along a row, and one pass over
// each input instead of a K x K matrix per layer. Q_b is the PTQ stage's per-channel weight
// quantizer (quantizer.h) with a coarser grid of clipping ratios, on at most
// kDistortionElements weights of each layer (whole output channels, evenly strided): the
// distortion then costs a fraction of a forward pass, not several.
#ifndef OMPQ_WORKERS_ENGINE_LAYER_DISTORTION_H_
#define OMPQ_WORKERS_ENGINE_LAYER_DISTORTION_H_

#include <torch/types.h>

#include <vector>

#include "absl/status/statusor.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// The clipping search of D_i(b): 10 ratios from 1 down to 0.28 (the PTQ stage searches 80
/// from 1 to 0.21). D ranks bit-widths, about 4x apart each; the coarser grid moves it by
/// far less. The grid is the profile's (symmetric for kTensorRt), as the job's own.
QuantizerOptions DistortionQuantizerOptions(int bits, ExportProfile profile);

/// Weight elements of a layer D is measured on, at most (more when one channel is larger).
inline constexpr int64_t kDistortionElements = int64_t{1} << 16;

/// Output channels 0, s, 2s, ... are measured: s = ceil(rows / ceil(kDistortionElements /
/// row_size)), 1 for a layer within the bound.
int64_t DistortionRowStride(int64_t rows, int64_t row_size);

/// Input elements InputChannelEnergy reads, at most (whole samples, at least one).
inline constexpr int64_t kEnergyElements = int64_t{1} << 22;

/// h per input channel of a layer input `x` ([N, ...]), float64 on the CPU: the mean of
/// x^2 over every dimension but the channel one (dim 1 for convolutions, the last for
/// linear), over the first samples that hold at most kEnergyElements values.
torch::Tensor InputChannelEnergy(const torch::Tensor& x, bool linear);

/// D(b) for each of `bits` (ascending), made non-increasing in b (a wider grid never
/// counts as worse). `weight` is [O, C/groups, ...] or [O, C]; `input_energy` is [C], or
/// undefined to weigh every weight element alike.
/// INVALID_ARGUMENT when the shapes do not fit. A layer whose weighted energy is zero
/// (all-zero weights or inputs) has D = 0 at every width.
absl::StatusOr<std::vector<double>> LayerDistortion(const torch::Tensor& weight,
                                                    const torch::Tensor& input_energy,
                                                    const std::vector<int>& bits,
                                                    ExportProfile profile);

/// LayerDistortion for every layer, the layers shared out over all cores (largest first);
/// each result is the same as computing it alone.
absl::StatusOr<std::vector<std::vector<double>>> LayerDistortions(
    const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& input_energy,
    const std::vector<std::vector<int>>& bits, ExportProfile profile);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_LAYER_DISTORTION_H_
