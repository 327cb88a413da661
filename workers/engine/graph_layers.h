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

/// "op aten::X at module a.b" (the module path from the node's inlined call stack; "(top
/// level)" for the model's own forward), for messages.
std::string OpAt(const torch::jit::Node* node);

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
  std::string weight_key;                  // Its state_dict key: "layer1.0.conv1.weight".
  std::optional<std::vector<std::string>> bias_path;  // Of the bias tensor, when one.
  torch::jit::Node* batch_norm = nullptr;  // Sole BatchNorm consumer, or null.
};

/// Every layer call site of `graph` (already inlined), in graph order (nested blocks
/// included). Sites whose weight is not a parameter of `module` are left out.
std::vector<LayerSiteNode> FindLayerSites(torch::jit::Graph& graph,
                                          const torch::jit::Module& module);

/// A parameter of the model that is no layer's weight, and what the forward does with it.
struct UnquantizedParameter {
  std::string name;    // Its state_dict key.
  int64_t params = 0;  // Elements.
  std::string reason;  // "bias of layer fc", "folded into layer conv1", "used by aten::X"...
};

/// Every parameter of `module` that is not the weight of one of `sites`, in state_dict
/// order: these stay FP32. The reason comes from the first use of the parameter in `graph`.
std::vector<UnquantizedParameter> UnquantizedParameters(torch::jit::Graph& graph,
                                                        const torch::jit::Module& module,
                                                        const std::vector<LayerSiteNode>& sites);

/// A residual block: the layers whose outputs reach an aten::add/add_ that merges two
/// paths from one common input (a skip connection).
struct ResidualBlock {
  std::vector<int> sites;               // Indices into the sites given, execution order.
  int input_site = -1;                  // A site whose input is the block input.
  torch::jit::Value* input = nullptr;   // The common input of both paths.
  torch::jit::Value* output = nullptr;  // The add's output, or the activation right after.
};

/// The residual blocks of an inlined graph, in execution order, found from the data flow
/// alone: for each top-level aten::add/add_ of two tensors, the latest tensor both operands
/// depend on is the block input; the layers between it and the add are the block; an
/// elementwise activation (relu, relu6, hardtanh) that is the add's only consumer ends the
/// block. Kept only when the block is self-contained (it reads no other data than its
/// input, no inner value is used after it, its layers are top-level and have no site
/// outside it) and some layer reads the block input directly; a block inside a later one
/// is merged into it. `tap_kind`, when not empty, names an op inserted at layer inputs
/// (the quantizer's probe) that is seen through when matching a layer's input.
std::vector<ResidualBlock> FindResidualBlocks(torch::jit::Graph& graph,
                                              const std::vector<LayerSiteNode>& sites,
                                              const std::string& tap_kind = "");

/// The top-level nodes of `graph` that `block`'s output depends on, not looking past its
/// input, in graph order: the block's own nodes and the attribute reads and constants they
/// use. Cloning them gives the block as a graph of its own.
std::vector<torch::jit::Node*> BlockNodes(torch::jit::Graph& graph, const ResidualBlock& block);

/// Replaces every prim::If whose condition is a constant or a bool attribute of `module`
/// (reached by a GetAttr chain from `self`, e.g. a scripted `if self.use_res_connect:`)
/// by the branch it takes: such a model's graph then holds each layer call once, and the
/// skip connections in those branches become visible to FindResidualBlocks. Returns the
/// number of ifs folded. The module's attributes must not change afterwards.
int FoldStaticIfs(torch::jit::Graph& graph, const torch::jit::Module& module);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_GRAPH_LAYERS_H_
