// Finding quantizable layers in an inlined TorchScript graph: every aten::conv1d/2d/3d,
// (non-transposed) aten::_convolution/convolution and aten::linear whose weight is a module
// parameter reached by a prim::GetAttr chain from `self`, with the BatchNorm that directly
// consumes its output. Shared by the quantization passes; no per-architecture tables.
#ifndef OMPQ_WORKERS_ENGINE_GRAPH_LAYERS_H_
#define OMPQ_WORKERS_ENGINE_GRAPH_LAYERS_H_

#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <optional>
#include <string>
#include <vector>

namespace ompq::engine {

/// The attribute names leading from `self` to `value`, or nullopt when `value` is not a
/// pure prim::GetAttr chain from `self`.
std::optional<std::vector<std::string>> AttributePath(torch::jit::Value* value,
                                                      const torch::jit::Value* self);

/// The tensor attribute at `path` in `module`, or nullopt when it is missing or not a
/// tensor, or (with `parameter_only`) a buffer rather than a parameter.
std::optional<torch::Tensor> ResolveTensor(const torch::jit::Module& module,
                                           const std::vector<std::string>& path,
                                           bool parameter_only);

/// "layer1.0.conv1" for [layer1, 0, conv1, weight]; a weight not called "weight" keeps
/// its own name so that layers stay distinct.
std::string LayerNameOf(const std::vector<std::string>& path);

/// "linear", "conv1d", "conv2d", "conv3d", "conv" (aten::_convolution: dimension from the
/// weight) or "" when `node` is not a quantizable layer op.
std::string LayerKindOf(const torch::jit::Node* node);

/// The aten::batch_norm that is the only consumer of `value`'s data, or null. Uses that
/// read only metadata do not count (scripted BatchNorm checks input.size() first).
torch::jit::Node* SoleBatchNormConsumer(torch::jit::Value* value);

/// One call site of a quantizable layer in an inlined graph.
struct LayerSiteNode {
  torch::jit::Node* node = nullptr;        // The conv/linear op.
  std::string name;                        // Module path, as in the state_dict.
  std::string kind;                        // conv1d|conv2d|conv3d|linear.
  std::vector<std::string> weight_path;    // GetAttr chain of the weight parameter.
  std::optional<std::vector<std::string>> bias_path;  // Of the bias tensor, when one.
  torch::jit::Node* batch_norm = nullptr;  // Sole BatchNorm consumer, or null.
};

/// Every layer call site of `graph` (already inlined), in graph order (nested blocks
/// included). Sites whose weight is not a parameter of `module` are left out.
std::vector<LayerSiteNode> FindLayerSites(torch::jit::Graph& graph,
                                          const torch::jit::Module& module);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_GRAPH_LAYERS_H_
