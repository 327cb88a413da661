// Block reconstruction (BRECQ, Li et al. 2021, "BRECQ: Pushing the Limit of Post-Training
// Quantization by Block Reconstruction"): the AdaRound rounding variables of all layers of
// a residual block (graph_layers.h FindResidualBlocks) are learned jointly, so that the
// block's output on quantized inputs matches the float model's block output (MSE; the
// Fisher weighting of the paper is left out).
//
// The block runs as a graph of its own: its nodes are cloned out of the model's inlined
// forward graph (BlockGraph), with the weights of its layers as graph inputs (the soft,
// gradient-carrying AdaRound weights during learning) and the activation quantizers at its
// layers' inputs as aten::fake_quantize_per_tensor_affine (a straight-through gradient).
// Each step so costs the block alone, not the forward pass up to it.
#ifndef OMPQ_WORKERS_ENGINE_BRECQ_H_
#define OMPQ_WORKERS_ENGINE_BRECQ_H_

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/engine/adaround.h"
#include "workers/engine/graph_layers.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// A per-tensor activation quantizer, applied as fake quantization.
struct ActFakeQuant {
  double scale = 1;
  int64_t zero_point = 0;
  int64_t quant_min = 0;
  int64_t quant_max = 255;
};

/// The activation quantizer at the input of layer site `site`, or nullopt for none.
using ActivationAt = std::function<std::optional<ActFakeQuant>(int site)>;

/// One residual block as a function out = f(self, x, weights...).
class BlockGraph {
 public:
  /// Clones `block` (found in `graph` with `sites`) into a graph of its own. With
  /// `weights_as_inputs`, the weight of each layer becomes an input (layer_names() order;
  /// a layer with several sites in the block has one); otherwise the module's weights are
  /// read. Each `tap_kind` node becomes `activation(site)` as fake quantization, or is
  /// dropped when that is nullopt or `activation` is null.
  static absl::StatusOr<BlockGraph> Extract(torch::jit::Graph& graph, const ResidualBlock& block,
                                            const std::vector<LayerSiteNode>& sites,
                                            const std::string& tap_kind,
                                            const ActivationAt& activation, bool weights_as_inputs);

  /// The layers whose weights are inputs, in input order.
  const std::vector<std::string>& layer_names() const { return layer_names_; }
  const torch::jit::Graph& graph() const { return *graph_; }

  /// Runs the block on `x` with `module` as self (the module the graph came from, or one
  /// loaded from the same file). Throws c10::Error as LibTorch does.
  torch::Tensor Run(const torch::jit::Module& module, const torch::Tensor& x,
                    const std::vector<torch::Tensor>& weights = {}) const;

 private:
  std::shared_ptr<torch::jit::Graph> graph_;
  std::shared_ptr<torch::jit::GraphFunction> function_;
  std::vector<std::string> layer_names_;
};

/// What a block reconstruction produced, per layer in layer_names() order.
struct BrecqResult {
  std::vector<torch::Tensor> codes;    // int64, in [0, 2^b - 1].
  std::vector<torch::Tensor> weights;  // Dequantised codes, float32.
  double mse_nearest = 0;              // Block output MSE with round-to-nearest.
  double mse_brecq = 0;                // The same with the returned codes.
  bool kept_nearest = false;           // Learning did not beat nearest: nearest codes.
  int64_t samples = 0;
};

/// Learns the rounding of the block's layers jointly: `quantized` (weights as inputs, run
/// on `module`) on `inputs` (the block inputs the quantized model produces) against
/// `targets` (the float block outputs). `fp_weights` and `params` follow
/// quantized.layer_names(). Same loss, regulariser and annealing as RunAdaRound, one
/// optimizer over every layer's V; `progress` is called after every step (false: CANCELLED).
/// Deterministic for options.seed.
absl::StatusOr<BrecqResult> RunBlockReconstruction(
    const BlockGraph& quantized, const torch::jit::Module& module,
    const std::vector<torch::Tensor>& fp_weights, const std::vector<QuantParams>& params,
    const torch::Tensor& inputs, const torch::Tensor& targets, const AdaRoundOptions& options,
    const ProgressCallback& progress = nullptr);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_BRECQ_H_
