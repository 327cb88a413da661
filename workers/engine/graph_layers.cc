#include "workers/engine/graph_layers.h"

#include <algorithm>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ompq::engine {

using torch::jit::Node;
using torch::jit::Value;

std::optional<std::vector<std::string>> AttributePath(Value* value, const Value* self) {
  std::vector<std::string> path;
  while (value != self) {
    Node* node = value->node();
    if (node->kind() != torch::jit::prim::GetAttr) return std::nullopt;
    path.push_back(node->s(torch::jit::attr::name));
    value = node->input(0);
  }
  std::reverse(path.begin(), path.end());
  return path;
}

std::optional<torch::Tensor> ResolveTensor(const torch::jit::Module& module,
                                           const std::vector<std::string>& path,
                                           bool parameter_only) {
  if (path.empty()) return std::nullopt;
  c10::intrusive_ptr<c10::ivalue::Object> object = module._ivalue();
  for (size_t i = 0; i < path.size(); ++i) {
    const c10::ClassTypePtr& type = object->type();
    c10::optional<size_t> slot = type->findAttributeSlot(path[i]);
    if (!slot.has_value()) return std::nullopt;
    c10::IValue value = object->getSlot(*slot);
    if (i + 1 == path.size()) {
      if (!value.isTensor()) return std::nullopt;
      if (parameter_only && !type->is_parameter(*slot)) return std::nullopt;
      return value.toTensor();
    }
    if (!value.isObject()) return std::nullopt;
    object = value.toObject();
  }
  return std::nullopt;
}

std::string LayerNameOf(const std::vector<std::string>& path) {
  if (path.back() != "weight" || path.size() == 1) return absl::StrJoin(path, ".");
  return absl::StrJoin(path.begin(), path.end() - 1, ".");
}

std::string LayerKindOf(const Node* node) {
  const std::string op = node->kind().toQualString();
  if (op == "aten::linear") return "linear";
  if (op == "aten::conv1d") return "conv1d";
  if (op == "aten::conv2d") return "conv2d";
  if (op == "aten::conv3d") return "conv3d";
  if (op == "aten::_convolution" || op == "aten::convolution") {
    // Traced convolutions: input 6 is `transposed`; transposed convolutions are not layers.
    if (node->inputs().size() < 7) return "";
    c10::optional<c10::IValue> transposed = torch::jit::toIValue(node->input(6));
    if (!transposed.has_value() || !transposed->isBool() || transposed->toBool()) return "";
    return "conv";
  }
  return "";
}

Node* SoleBatchNormConsumer(Value* value) {
  static const std::unordered_set<std::string> kMetadataOps = {
      "aten::size",   "aten::dim",    "aten::numel",
      "aten::len",    "prim::shape",  "prim::device",
      "prim::dtype",  "prim::layout", "aten::is_floating_point",
      "prim::is_cuda"};
  Node* batch_norm = nullptr;
  for (const torch::jit::Use& use : value->uses()) {
    const std::string op = use.user->kind().toQualString();
    if (op == "aten::batch_norm" && use.offset == 0 && batch_norm == nullptr) {
      batch_norm = use.user;
    } else if (kMetadataOps.count(op) == 0) {
      return nullptr;
    }
  }
  return batch_norm;
}

namespace {

void CollectLayerNodes(torch::jit::Block* block, std::vector<Node*>& found) {
  for (Node* node : block->nodes()) {
    if (!LayerKindOf(node).empty()) found.push_back(node);
    for (torch::jit::Block* inner : node->blocks()) CollectLayerNodes(inner, found);
  }
}

}  // namespace

std::vector<LayerSiteNode> FindLayerSites(torch::jit::Graph& graph,
                                          const torch::jit::Module& module) {
  std::vector<Node*> nodes;
  CollectLayerNodes(graph.block(), nodes);
  const Value* self = graph.inputs()[0];
  std::vector<LayerSiteNode> sites;
  for (Node* node : nodes) {
    std::optional<std::vector<std::string>> path = AttributePath(node->input(1), self);
    if (!path.has_value()) continue;
    std::optional<torch::Tensor> weight = ResolveTensor(module, *path, /*parameter_only=*/true);
    if (!weight.has_value() || weight->dim() < 2) continue;
    std::string kind = LayerKindOf(node);
    if (kind == "conv") {
      if (weight->dim() < 3 || weight->dim() > 5) continue;
      kind = absl::StrCat("conv", weight->dim() - 2, "d");
    }
    LayerSiteNode site;
    site.node = node;
    site.name = LayerNameOf(*path);
    site.kind = kind;
    site.weight_path = *path;
    if (node->inputs().size() > 2) {
      std::optional<std::vector<std::string>> bias = AttributePath(node->input(2), self);
      if (bias.has_value() && ResolveTensor(module, *bias, false).has_value()) {
        site.bias_path = std::move(bias);
      }
    }
    site.batch_norm = SoleBatchNormConsumer(node->output());
    sites.push_back(std::move(site));
  }
  return sites;
}

}  // namespace ompq::engine
