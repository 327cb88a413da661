#include "workers/engine/graph_layers.h"

#include <algorithm>
#include <functional>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/match.h"
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
  if (path.back() != "weight" || path.size() == 1) {
    // Attention's packed `in_proj_weight` names the layer `in_proj`, as out_proj is.
    std::string name = absl::StrJoin(path, ".");
    if (path.back().size() > 7 && absl::EndsWith(name, "_weight")) name.resize(name.size() - 7);
    return name;
  }
  return absl::StrJoin(path.begin(), path.end() - 1, ".");
}

std::string OpAt(const Node* node) {
  std::vector<std::string> path;
  if (c10::optional<torch::jit::InlinedCallStackPtr> stack = node->callstack()) {
    for (const torch::jit::InlinedCallStackEntry& entry : (*stack)->vec()) {
      const c10::optional<torch::jit::ModuleInstanceInfo>& info = std::get<2>(entry);
      // A method called on the module itself adds no path ("SELF").
      if (info.has_value() && !info->instance_name().empty() && info->instance_name() != "SELF") {
        path.push_back(info->instance_name());
      }
    }
  }
  return absl::StrCat("op ", node->kind().toQualString(), " at module ",
                      path.empty() ? std::string("(top level)") : absl::StrJoin(path, "."));
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
    site.weight_key = absl::StrJoin(*path, ".");
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

std::vector<UnquantizedParameter> UnquantizedParameters(torch::jit::Graph& graph,
                                                        const torch::jit::Module& module,
                                                        const std::vector<LayerSiteNode>& sites) {
  std::unordered_set<std::string> weights;
  std::unordered_map<std::string, std::string> reasons;
  for (const LayerSiteNode& site : sites) {
    weights.insert(site.weight_key);
    if (site.bias_path)
      reasons.emplace(absl::StrJoin(*site.bias_path, "."), "bias of layer " + site.name);
    if (site.batch_norm != nullptr) {
      for (Value* input : site.batch_norm->inputs()) {
        std::optional<std::vector<std::string>> path = AttributePath(input, graph.inputs()[0]);
        if (path.has_value() && !path->empty()) {
          reasons.emplace(absl::StrJoin(*path, "."), "folded into layer " + site.name);
        }
      }
    }
  }
  // Other parameters: the op that first reads each (through its attribute read).
  std::function<void(torch::jit::Block*)> visit = [&](torch::jit::Block* block) {
    for (Node* node : block->nodes()) {
      for (torch::jit::Block* inner : node->blocks()) visit(inner);
      if (node->kind() != torch::jit::prim::GetAttr || node->output()->uses().empty()) continue;
      std::optional<std::vector<std::string>> path =
          AttributePath(node->output(), graph.inputs()[0]);
      if (!path.has_value() || path->empty()) continue;
      const Node* user = node->output()->uses()[0].user;
      reasons.emplace(absl::StrJoin(*path, "."),
                      absl::StrCat("used by ", user->kind().toQualString()));
    }
  };
  visit(graph.block());
  std::vector<UnquantizedParameter> found;
  std::unordered_set<const c10::TensorImpl*> seen;
  for (const torch::jit::NameTensor& parameter : module.named_parameters(/*recurse=*/true)) {
    if (!seen.insert(parameter.value.unsafeGetTensorImpl()).second) continue;  // Shared.
    if (weights.count(parameter.name) > 0) continue;
    auto reason = reasons.find(parameter.name);
    found.push_back({parameter.name, parameter.value.numel(),
                     reason == reasons.end() ? "not used by the forward pass" : reason->second});
  }
  return found;
}

namespace {

bool IsTensor(const Value* value) { return value->type()->cast<c10::TensorType>() != nullptr; }

// The top-level node of graph.block() that contains `node` (itself when top-level).
Node* TopLevelOwner(Node* node, const torch::jit::Block* top) {
  while (node->owningBlock() != top && node->owningBlock()->owningNode() != nullptr) {
    node = node->owningBlock()->owningNode();
  }
  return node;
}

// Values a top-level node reads from outside itself (its inputs and those of nested nodes
// defined outside it): its dependencies in the top-level data flow.
void CollectDeps(Node* node, Node* owner, const torch::jit::Block* top, std::vector<Value*>& deps) {
  for (Value* input : node->inputs()) {
    if (TopLevelOwner(input->node(), top) != owner) deps.push_back(input);
  }
  for (torch::jit::Block* inner : node->blocks()) {
    for (Node* nested : inner->nodes()) CollectDeps(nested, owner, top, deps);
    CollectDeps(inner->return_node(), owner, top, deps);
  }
}

// Top-level data flow of an inlined graph: what each node reads, which values depend on
// the data inputs (not on `self` alone), which nodes feed the graph's outputs.
struct DataFlow {
  std::vector<Node*> order;
  std::unordered_map<Node*, int> position;
  std::unordered_map<Node*, std::vector<Value*>> deps;
  std::unordered_set<const Value*> data;  // Values that depend on a data input.
  std::unordered_set<Node*> live;         // Nodes the graph's outputs depend on.
};

DataFlow AnalyseDataFlow(torch::jit::Graph& graph) {
  DataFlow flow;
  const torch::jit::Block* top = graph.block();
  for (size_t i = 1; i < graph.inputs().size(); ++i) flow.data.insert(graph.inputs()[i]);
  for (Node* node : graph.nodes()) {
    flow.position[node] = static_cast<int>(flow.order.size());
    flow.order.push_back(node);
    std::vector<Value*>& deps = flow.deps[node];
    CollectDeps(node, node, top, deps);
    const bool data = std::any_of(deps.begin(), deps.end(),
                                  [&](const Value* v) { return flow.data.count(v) > 0; });
    if (data) {
      for (Value* output : node->outputs()) flow.data.insert(output);
    }
  }
  std::vector<Value*> pending(graph.outputs().begin(), graph.outputs().end());
  while (!pending.empty()) {
    Node* node = pending.back()->node();
    pending.pop_back();
    if (flow.position.count(node) == 0 || !flow.live.insert(node).second) continue;
    const std::vector<Value*>& deps = flow.deps[node];
    pending.insert(pending.end(), deps.begin(), deps.end());
  }
  return flow;
}

// The data-dependent top-level nodes `roots` depend on, not looking past `stop`; the data
// values they read from outside that set are added to `reads`.
std::unordered_set<Node*> DataAncestors(const DataFlow& flow, const std::vector<Value*>& roots,
                                        const Value* stop, std::unordered_set<Value*>* reads) {
  std::unordered_set<Node*> nodes;
  std::vector<Value*> pending = roots;
  while (!pending.empty()) {
    Value* value = pending.back();
    pending.pop_back();
    if (flow.data.count(value) == 0) continue;
    if (reads != nullptr) reads->insert(value);
    if (value == stop || flow.position.count(value->node()) == 0) continue;
    if (!nodes.insert(value->node()).second) continue;
    const std::vector<Value*>& deps = flow.deps.at(value->node());
    pending.insert(pending.end(), deps.begin(), deps.end());
  }
  return nodes;
}

bool EndsBlock(const Node* node) {
  static const std::unordered_set<std::string> kActivations = {
      "aten::relu", "aten::relu_", "aten::relu6", "aten::hardtanh", "aten::hardtanh_"};
  return kActivations.count(node->kind().toQualString()) > 0;
}

}  // namespace

std::vector<ResidualBlock> FindResidualBlocks(torch::jit::Graph& graph,
                                              const std::vector<LayerSiteNode>& sites,
                                              const std::string& tap_kind) {
  const DataFlow flow = AnalyseDataFlow(graph);
  const torch::jit::Block* top = graph.block();
  std::map<std::string, int> sites_per_name;
  for (const LayerSiteNode& site : sites) ++sites_per_name[site.name];
  auto position_of = [&](Value* value) {
    auto it = flow.position.find(value->node());
    return it == flow.position.end() ? -1 : it->second;
  };
  // A layer's input, seen through the tap.
  auto layer_input = [&](const LayerSiteNode& site) {
    Value* input = site.node->input(0);
    if (!tap_kind.empty() && input->node()->kind().toQualString() == tap_kind) {
      input = input->node()->input(0);
    }
    return input;
  };

  std::vector<ResidualBlock> blocks;
  for (Node* add : flow.order) {
    const std::string op = add->kind().toQualString();
    if ((op != "aten::add" && op != "aten::add_") || add->inputs().size() < 2) continue;
    Value* a = add->input(0);
    Value* b = add->input(1);
    if (!IsTensor(a) || !IsTensor(b) || flow.data.count(a) == 0 || flow.data.count(b) == 0) {
      continue;
    }
    // The block input: the latest tensor both operands depend on.
    std::unordered_set<Value*> reads_a, reads_b;
    DataAncestors(flow, {a}, nullptr, &reads_a);
    DataAncestors(flow, {b}, nullptr, &reads_b);
    Value* input = nullptr;
    for (Value* value : reads_a) {
      if (reads_b.count(value) == 0 || !IsTensor(value)) continue;
      if (input == nullptr || position_of(value) > position_of(input)) input = value;
    }
    if (input == nullptr) continue;

    ResidualBlock block;
    block.input = input;
    block.output = add->output();
    std::unordered_set<Value*> reads;
    std::unordered_set<Node*> nodes = DataAncestors(flow, {a, b}, input, &reads);
    nodes.insert(add);
    if (add->output()->uses().size() == 1) {
      Node* user = add->output()->uses()[0].user;
      if (user->owningBlock() == top && EndsBlock(user) && user->input(0) == add->output()) {
        nodes.insert(user);
        block.output = user->output();
      }
    }
    // Self-contained: the only data it reads from before it is its input.
    const bool closed = std::all_of(reads.begin(), reads.end(), [&](Value* value) {
      return value == input || nodes.count(value->node()) > 0;
    });
    if (!closed) continue;
    // Nothing computed inside is used after the block, except the output.
    bool escapes = false;
    for (Node* node : nodes) {
      for (Value* value : node->outputs()) {
        if (value == block.output) continue;
        for (const torch::jit::Use& use : value->uses()) {
          Node* user = TopLevelOwner(use.user, top);
          if (nodes.count(user) == 0 &&
              (flow.live.count(user) > 0 || user == graph.return_node())) {
            escapes = true;
          }
        }
      }
    }
    if (escapes) continue;
    bool nested_site = false;
    for (size_t s = 0; s < sites.size(); ++s) {
      if (nodes.count(TopLevelOwner(sites[s].node, top)) == 0) continue;
      if (sites[s].node->owningBlock() != top) nested_site = true;
      block.sites.push_back(static_cast<int>(s));
      if (block.input_site < 0 && layer_input(sites[s]) == input) {
        block.input_site = static_cast<int>(s);
      }
    }
    if (nested_site || block.sites.empty() || block.input_site < 0) continue;
    std::map<std::string, int> inside;
    for (int s : block.sites) ++inside[sites[s].name];
    const bool shared = std::any_of(inside.begin(), inside.end(), [&](const auto& entry) {
      return sites_per_name[entry.first] != entry.second;
    });
    if (shared) continue;

    // A block inside this one is merged into it; a partial overlap keeps the earlier one.
    const std::unordered_set<int> mine(block.sites.begin(), block.sites.end());
    auto common = [&](const ResidualBlock& earlier) {
      return static_cast<size_t>(std::count_if(earlier.sites.begin(), earlier.sites.end(),
                                               [&](int s) { return mine.count(s) > 0; }));
    };
    const bool partial = std::any_of(blocks.begin(), blocks.end(), [&](const ResidualBlock& e) {
      const size_t n = common(e);
      return n > 0 && n < e.sites.size();
    });
    if (partial) continue;
    std::vector<ResidualBlock> kept;
    for (ResidualBlock& earlier : blocks) {
      if (common(earlier) == 0) kept.push_back(std::move(earlier));
    }
    kept.push_back(std::move(block));
    blocks = std::move(kept);
  }
  return blocks;
}

std::vector<Node*> BlockNodes(torch::jit::Graph& graph, const ResidualBlock& block) {
  const torch::jit::Block* top = graph.block();
  std::unordered_set<Node*> found;
  std::vector<Value*> pending = {block.output};
  while (!pending.empty()) {
    Value* value = pending.back();
    pending.pop_back();
    Node* node = value->node();
    if (value == block.input || node->owningBlock() != top || !found.insert(node).second) {
      continue;  // Also graph inputs: their node (the param node) is in no block's list.
    }
    std::vector<Value*> deps;
    CollectDeps(node, node, top, deps);
    pending.insert(pending.end(), deps.begin(), deps.end());
  }
  std::vector<Node*> ordered;
  for (Node* node : graph.nodes()) {
    if (found.count(node) > 0) ordered.push_back(node);
  }
  return ordered;
}

int FoldStaticIfs(torch::jit::Graph& graph, const torch::jit::Module& module) {
  const Value* self = graph.inputs()[0];
  // The bool a condition always has, when it is a constant or a module attribute.
  auto static_bool = [&](Value* condition) -> std::optional<bool> {
    if (c10::optional<c10::IValue> constant = torch::jit::toIValue(condition)) {
      if (constant->isBool()) return constant->toBool();
      return std::nullopt;
    }
    std::optional<std::vector<std::string>> path = AttributePath(condition, self);
    // `training` is left alone: a saved model still switches with train() / eval().
    if (!path.has_value() || path->empty() || path->back() == "training") return std::nullopt;
    c10::intrusive_ptr<c10::ivalue::Object> object = module._ivalue();
    for (size_t i = 0; i < path->size(); ++i) {
      c10::optional<size_t> slot = object->type()->findAttributeSlot((*path)[i]);
      if (!slot.has_value()) return std::nullopt;
      c10::IValue attribute = object->getSlot(*slot);
      if (i + 1 == path->size()) {
        if (!attribute.isBool()) return std::nullopt;
        return attribute.toBool();
      }
      if (!attribute.isObject()) return std::nullopt;
      object = attribute.toObject();
    }
    return std::nullopt;
  };
  int folded = 0;
  // Folding brings the taken branch's nodes (and the ifs inside it) to the outer block, so
  // repeat until no foldable if is left.
  std::function<bool(torch::jit::Block*)> fold_one = [&](torch::jit::Block* block) {
    for (Node* node : block->nodes()) {
      if (node->kind() == torch::jit::prim::If) {
        if (std::optional<bool> taken = static_bool(node->input(0))) {
          torch::jit::Block* branch = node->blocks()[*taken ? 0 : 1];
          for (auto it = branch->nodes().begin(); it != branch->nodes().end();) {
            Node* moved = *it;
            ++it;
            moved->moveBefore(node);
          }
          for (size_t i = 0; i < node->outputs().size(); ++i) {
            node->output(i)->replaceAllUsesWith(branch->outputs()[i]);
          }
          node->destroy();
          return true;
        }
      }
      for (torch::jit::Block* inner : node->blocks()) {
        if (fold_one(inner)) return true;
      }
    }
    return false;
  };
  while (fold_one(graph.block())) ++folded;
  if (folded > 0) graph.lint();
  return folded;
}

}  // namespace ompq::engine
