// Finds the quantizable layers of a TorchScript model from its graph and measures them in
// one forward pass: shapes, MACs and each layer's centred Gram matrix, formed the moment
// the layer's output exists (features are never all held at once).
//
// How: the instrumented model (instrumented_model.h) with an output hook at every layer
// call site: every aten::conv1d/conv2d/conv3d, (non-transposed) aten::_convolution/
// convolution and aten::linear whose weight is a parameter reached by a prim::GetAttr
// chain from `self` is a layer, named by that chain ("layer1.0.conv1", the state_dict
// module path). The hook (after the BatchNorm that is the sole consumer of the layer's
// output, when there is one) forwards the tensor to a collector. No per-architecture
// tables.
#ifndef OMPQ_WORKERS_ENGINE_LAYER_DISCOVERY_H_
#define OMPQ_WORKERS_ENGINE_LAYER_DISCOVERY_H_

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/engine/centred_gram.h"
#include "workers/engine/graph_layers.h"

namespace ompq::engine {

/// One quantizable layer, as measured in the forward pass.
struct LayerInfo {
  std::string name;  // State_dict module path ("layer1.0.conv1").
  std::string kind;  // "conv1d", "conv2d", "conv3d" or "linear".
  std::vector<int64_t> weight_shape;
  int64_t params = 0;                 // Weight elements.
  int64_t macs = 0;                   // Per input sample, summed over all calls.
  int calls = 0;                      // Times the layer ran in one forward pass.
  bool after_batch_norm = false;      // Features taken after the BatchNorm consuming it.
  std::vector<int64_t> output_shape;  // Of the first call, batch dimension included.
};

/// Result of the measuring pass, layers in execution order (order of first call).
struct LayerFeatures {
  std::vector<LayerInfo> layers;
  std::vector<std::vector<double>> grams;  // Centred Gram per layer: N*N, row-major.
  int64_t samples = 0;                     // N.
  c10::IValue output;                      // The model's output on the batch.
  // With measured inputs only, per layer: the weight as the quantizer sees it (BatchNorm
  // folded, float, CPU) and h per input channel (layer_distortion.h).
  std::vector<torch::Tensor> weights;
  std::vector<torch::Tensor> input_energy;
};

/// Called after each layer's first call with the number of layers measured so far and
/// the number of tap sites in the graph. Returning false cancels the pass.
using TapProgressFn = std::function<bool(int measured, int sites)>;

/// The model with its forward graph rewritten to carry taps. Move-only.
class TappedModel {
 public:
  /// Rewrites `module`'s forward. NO_QUANTIZABLE_LAYERS when the graph has no layer. With
  /// `measure_inputs`, every layer's input is hooked too and Collect() also gives the
  /// weights and input energies the distortion objective needs.
  static absl::StatusOr<TappedModel> Create(const torch::jit::Module& module,
                                            const torch::Device& device = torch::kCPU,
                                            bool measure_inputs = false);

  TappedModel(TappedModel&&) noexcept;
  TappedModel& operator=(TappedModel&&) noexcept;
  ~TappedModel();

  /// Number of tap sites (distinct call sites of layers) in the rewritten graph.
  int tap_sites() const;
  /// Parameter elements of the whole model (shared parameters counted once).
  int64_t total_parameters() const;
  /// The parameters that are no layer's weight (graph_layers.h): they stay FP32.
  const std::vector<UnquantizedParameter>& unquantized() const;
  /// The rewritten graph, for tests and diagnostics.
  std::shared_ptr<torch::jit::Graph> graph() const;

  /// Runs the untouched (inlined) forward graph on the first two samples of `inputs`
  /// and checks its output matches the first rows of `output`, what Collect() gave for
  /// all of `inputs`: INTERNAL when they differ. When the model rejects the two-sample
  /// batch, or its output has no batch dimension, the check is skipped (OK) and
  /// `skipped`, if given, says why.
  absl::Status CheckAgainstModel(const torch::Tensor& inputs, const c10::IValue& output,
                                 int64_t seed, std::string* skipped = nullptr) const;

  /// One forward pass over `inputs` ([N, ...], N >= 2) measuring every layer that runs.
  /// INPUT_MISMATCH when the model throws, CANCELLED when `progress` says stop,
  /// NON_FINITE_INPUT when a layer produces NaN/Inf.
  absl::StatusOr<LayerFeatures> Collect(const torch::Tensor& inputs, int64_t seed,
                                        const TapProgressFn& progress) const;

 private:
  struct State;
  explicit TappedModel(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_LAYER_DISCOVERY_H_
