#include "workers/engine/transformer_rewrite.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/jit.h>
#include <torch/script.h>

#include <cmath>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/engine/graph_layers.h"

namespace ompq::engine {

using torch::jit::Node;
using torch::jit::Value;

namespace {

constexpr char kAttentionOp[] = "aten::_native_multi_head_attention";
constexpr char kEncoderLayerOp[] = "aten::_transformer_encoder_layer_fwd";

std::optional<int64_t> ConstantInt(Value* value) {
  c10::optional<c10::IValue> constant = torch::jit::toIValue(value);
  if (!constant.has_value() || !constant->isInt()) return std::nullopt;
  return constant->toInt();
}

std::optional<double> ConstantDouble(Value* value) {
  c10::optional<c10::IValue> constant = torch::jit::toIValue(value);
  if (!constant.has_value() || !constant->isDouble()) return std::nullopt;
  return constant->toDouble();
}

std::optional<bool> ConstantBool(Value* value) {
  c10::optional<c10::IValue> constant = torch::jit::toIValue(value);
  if (!constant.has_value() || !constant->isBool()) return std::nullopt;
  return constant->toBool();
}

bool IsNone(Value* value) { return value->mustBeNone(); }

// What both fused ops share: packed self-attention of `x` (batch first, [B, T, E]), as
// aten's kernel computes it: q, k, v from one projection, q divided by sqrt(head size),
// softmax over the keys, then the output projection. TorchScript source lines.
std::string AttentionSource(const std::string& x, const std::string& out, int64_t embed_dim,
                            int64_t heads) {
  const int64_t head_dim = embed_dim / heads;
  return absl::StrFormat(
      "    b = %1$s.size(0)\n"
      "    t = %1$s.size(1)\n"
      "    qkv = torch.linear(%1$s, qkv_weight, qkv_bias)\n"
      "    parts = torch.chunk(qkv, 3, -1)\n"
      "    q = parts[0].reshape([b, t, %3$d, %4$d]).transpose(1, 2)\n"
      "    k = parts[1].reshape([b, t, %3$d, %4$d]).transpose(1, 2)\n"
      "    v = parts[2].reshape([b, t, %3$d, %4$d]).transpose(1, 2)\n"
      "    scores = torch.matmul(q / %5$.17g, k.transpose(-2, -1))\n"
      "    weights = torch.softmax(scores, -1)\n"
      "    context = torch.matmul(weights, v).transpose(1, 2).reshape([b, t, %6$d])\n"
      "    %2$s = torch.linear(context, proj_weight, proj_bias)\n",
      x, out, heads, head_dim, std::sqrt(static_cast<double>(head_dim)), embed_dim);
}

constexpr char kAttentionArgs[] =
    "qkv_weight: Tensor, qkv_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor";

// The replacement's inputs are the fused node's tensor inputs at these positions.
struct Replacement {
  std::string source;          // def rewritten(...) -> Tensor
  std::vector<size_t> inputs;  // Positions in the fused node's inputs.
};

// Why `node` (an attention op) cannot be rewritten, or "" when it can.
std::string AttentionObstacle(Node* node, size_t first_arg) {
  if (node->input(first_arg) != node->input(first_arg + 1) ||
      node->input(first_arg) != node->input(first_arg + 2)) {
    return "query, key and value differ";
  }
  return "";
}

std::optional<Replacement> MultiHeadAttention(Node* node, std::string* why) {
  const std::optional<int64_t> embed_dim = ConstantInt(node->input(3));
  const std::optional<int64_t> heads = ConstantInt(node->input(4));
  if (!embed_dim || !heads || *heads <= 0 || *embed_dim % *heads != 0) {
    *why = "embed_dim and num_head are not constants";
    return std::nullopt;
  }
  if (*why = AttentionObstacle(node, 0); !why->empty()) return std::nullopt;
  if (!IsNone(node->input(9))) {
    *why = "it is given a mask";
    return std::nullopt;
  }
  if (!node->output(1)->uses().empty()) {
    *why = "its attention weights are used";
    return std::nullopt;
  }
  Replacement r;
  r.source = absl::StrCat("def rewritten(x: Tensor, ", kAttentionArgs, ") -> Tensor:\n",
                          AttentionSource("x", "y", *embed_dim, *heads), "    return y\n");
  r.inputs = {0, 5, 6, 7, 8};
  return r;
}

std::optional<Replacement> EncoderLayer(Node* node, std::string* why) {
  const std::optional<int64_t> embed_dim = ConstantInt(node->input(1));
  const std::optional<int64_t> heads = ConstantInt(node->input(2));
  const std::optional<bool> use_gelu = ConstantBool(node->input(7));
  const std::optional<bool> norm_first = ConstantBool(node->input(8));
  const std::optional<double> eps = ConstantDouble(node->input(9));
  if (!embed_dim || !heads || *heads <= 0 || *embed_dim % *heads != 0 || !use_gelu || !norm_first ||
      !eps) {
    *why = "its sizes and flags are not constants";
    return std::nullopt;
  }
  if (!IsNone(node->input(18))) {
    *why = "it is given a mask";
    return std::nullopt;
  }
  // aten's transformer_encoder_layer_forward: attention and feed-forward blocks, each
  // with its residual, LayerNorm before (norm_first) or after.
  auto norm = [&](const std::string& v, int which) {
    return absl::StrFormat(
        "    %1$s = torch.layer_norm(%1$s, [%2$d], norm_weight_%3$d, "
        "norm_bias_%3$d, %4$.17g)\n",
        v, *embed_dim, which, *eps);
  };
  std::string body = "    x = src\n";
  if (*norm_first) body += norm("x", 1);
  body += AttentionSource("x", "x", *embed_dim, *heads);
  body += "    x = x + src\n";
  if (!*norm_first) body += norm("x", 1);
  body += "    y = x\n";
  if (*norm_first) body += norm("y", 2);
  body += "    y = torch.linear(y, ffn_weight_1, ffn_bias_1)\n";
  body += *use_gelu ? "    y = torch.gelu(y)\n" : "    y = torch.relu(y)\n";
  body += "    y = torch.linear(y, ffn_weight_2, ffn_bias_2)\n";
  body += "    x = y + x\n";
  if (!*norm_first) body += norm("x", 2);
  Replacement r;
  r.source = absl::StrCat(
      "def rewritten(src: Tensor, ", kAttentionArgs,
      ", norm_weight_1: Tensor, norm_bias_1: Tensor, norm_weight_2: Tensor, "
      "norm_bias_2: Tensor, ffn_weight_1: Tensor, ffn_bias_1: Tensor, ffn_weight_2: Tensor, "
      "ffn_bias_2: Tensor) -> Tensor:\n",
      body, "    return x\n");
  r.inputs = {0, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 17};
  return r;
}

std::optional<Replacement> ReplacementFor(Node* node, std::string* why) {
  const std::string op = node->kind().toQualString();
  if (op == kAttentionOp) return MultiHeadAttention(node, why);
  if (op == kEncoderLayerOp) return EncoderLayer(node, why);
  return std::nullopt;
}

bool IsFused(const Node* node) {
  const std::string op = node->kind().toQualString();
  return op == kAttentionOp || op == kEncoderLayerOp;
}

void CollectFused(torch::jit::Block* block, std::vector<Node*>& found) {
  for (Node* node : block->nodes()) {
    if (IsFused(node)) found.push_back(node);
    for (torch::jit::Block* inner : node->blocks()) CollectFused(inner, found);
  }
}

}  // namespace

int UnfuseTransformerOps(torch::jit::Graph& graph) {
  std::vector<Node*> fused;
  CollectFused(graph.block(), fused);
  int rewritten = 0;
  for (Node* node : fused) {
    std::string why;
    std::optional<Replacement> replacement = ReplacementFor(node, &why);
    if (!replacement.has_value()) continue;
    std::shared_ptr<torch::jit::CompilationUnit> unit = torch::jit::compile(replacement->source);
    std::shared_ptr<torch::jit::Graph> callee =
        torch::jit::toGraphFunction(unit->get_function("rewritten")).graph()->copy();
    torch::jit::Inline(*callee);
    std::vector<Value*> inputs;
    for (size_t position : replacement->inputs) inputs.push_back(node->input(position));
    torch::jit::WithInsertPoint insert_point(node);
    std::vector<Value*> outputs = torch::jit::insertGraph(graph, *callee, inputs);
    TORCH_CHECK(outputs.size() == 1, "the rewrite of ", node->kind().toQualString(), " has ",
                outputs.size(), " outputs");
    node->output(0)->replaceAllUsesWith(outputs[0]);
    node->destroy();
    ++rewritten;
  }
  if (rewritten > 0) graph.lint();
  return rewritten;
}

std::vector<std::string> FusedTransformerOps(torch::jit::Graph& graph) {
  std::vector<Node*> fused;
  CollectFused(graph.block(), fused);
  std::vector<std::string> found;
  for (Node* node : fused) {
    std::string why = "its arguments are not supported";
    ReplacementFor(node, &why);
    found.push_back(absl::StrCat(OpAt(node), " (", why, ")"));
  }
  return found;
}

void PrepareForwardGraph(torch::jit::Graph& graph, const torch::jit::Module& module) {
  torch::jit::Inline(graph);
  FoldStaticIfs(graph, module);
  UnfuseTransformerOps(graph);
}

}  // namespace ompq::engine
