#include <torch/script.h>

#include <limits>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "workers/engine/onnx_translator.h"

namespace ompq::engine::onnx_internal {

void Translator::TranslateElementwise(Node* node, const std::string& op) {
  static const std::unordered_map<std::string, std::string> kUnary = {
      {"aten::relu", "Relu"}, {"aten::sigmoid", "Sigmoid"}, {"aten::tanh", "Tanh"},
      {"aten::exp", "Exp"},   {"aten::neg", "Neg"},         {"aten::sqrt", "Sqrt"},
      {"aten::abs", "Abs"},   {"aten::erf", "Erf"}};
  if (auto unary = kUnary.find(op); unary != kUnary.end()) {
    Set(node->output(), out_.Unary(unary->second, Tensor(node->input(0), node)));
    return;
  }
  static const std::unordered_map<std::string, std::string> kBinary = {
      {"aten::add", "Add"},       {"aten::sub", "Sub"},      {"aten::mul", "Mul"},
      {"aten::div", "Div"},       {"aten::floordiv", "Div"}, {"aten::floor_divide", "Div"},
      {"aten::matmul", "MatMul"}, {"aten::mm", "MatMul"},    {"aten::bmm", "MatMul"}};
  if (auto binary = kBinary.find(op); binary != kBinary.end()) {
    const Entry& a_entry = Get(node->input(0), node);
    const Entry& b_entry = Get(node->input(1), node);
    const int32_t elem = a_entry.kind == Entry::Kind::kTensor   ? a_entry.elem
                         : b_entry.kind == Entry::Kind::kTensor ? b_entry.elem
                                                                : onnx::TensorProto::FLOAT;
    Entry a = Tensor(node->input(0), node, elem);
    Entry b = Tensor(node->input(1), node, elem);
    if ((op == "aten::add" || op == "aten::sub") && node->inputs().size() > 2) {
      c10::IValue alpha = Static(node->input(2), node, "alpha");
      const double factor = alpha.isDouble() ? alpha.toDouble() : alpha.toInt();
      if (factor != 1) b = out_.Binary("Mul", b, out_.Scalar(factor, elem));
    }
    if (op == "aten::div" && node->inputs().size() > 2 && !IsNone(node->input(2), node)) {
      throw Unsupported(absl::StrCat(OpAt(node), " with a rounding mode"));
    }
    Set(node->output(), out_.Binary(binary->second, a, b));
    return;
  }
  if (op == "aten::hardtanh" || op == "aten::relu6" || op == "aten::clamp") {
    const Entry x = Tensor(node->input(0), node);
    auto bound = [&](int index, double fallback) -> std::optional<double> {
      if (op == "aten::relu6") return fallback;
      if (op == "aten::hardtanh" && node->inputs().size() <= static_cast<size_t>(index)) {
        return fallback;
      }
      c10::IValue v = Static(node->input(index), node, "bound");
      if (v.isNone()) return std::nullopt;
      return v.isDouble() ? v.toDouble() : static_cast<double>(v.toInt());
    };
    const std::optional<double> lo = bound(1, op == "aten::relu6" ? 0 : -1);
    const std::optional<double> hi = bound(2, op == "aten::relu6" ? 6 : 1);
    Set(node->output(), out_.Clip(x, lo, hi));
    return;
  }
  if (op == "aten::hardsigmoid") {
    Set(node->output(), out_.HardSigmoid(Tensor(node->input(0), node)));
    return;
  }
  if (op == "aten::hardswish" || op == "aten::silu") {
    const Entry x = Tensor(node->input(0), node);
    const Entry gate = op == "aten::silu" ? out_.Unary("Sigmoid", x) : out_.HardSigmoid(x);
    Set(node->output(), out_.Binary("Mul", x, gate));
    return;
  }
  if (op == "aten::gelu") {
    if (node->inputs().size() > 1 &&
        Static(node->input(1), node, "approximation").toStringRef() != "none") {
      throw Unsupported(absl::StrCat(OpAt(node), " with the tanh approximation"));
    }
    Set(node->output(), out_.Gelu(Tensor(node->input(0), node)));
    return;
  }
  TranslateShape(node, op);
}

void Translator::TranslateShape(Node* node, const std::string& op) {
  if (op == "aten::max_pool1d" || op == "aten::max_pool2d" || op == "aten::max_pool3d" ||
      op == "aten::avg_pool1d" || op == "aten::avg_pool2d" || op == "aten::avg_pool3d") {
    const Entry x = Tensor(node->input(0), node);
    PoolAttributes pool;
    pool.max = op.rfind("aten::max", 0) == 0;
    pool.kernel = Ints(node->input(1), node, "kernel size");
    pool.stride = Ints(node->input(2), node, "stride");
    pool.padding = Ints(node->input(3), node, "padding");
    if (pool.max) {
      pool.dilation = Ints(node->input(4), node, "dilation");
      pool.ceil_mode = Static(node->input(5), node, "ceil mode").toBool();
    } else {
      pool.ceil_mode = Static(node->input(4), node, "ceil mode").toBool();
      pool.count_include_pad = Static(node->input(5), node, "count_include_pad").toBool();
      if (node->inputs().size() > 6 && !IsNone(node->input(6), node)) {
        throw Unsupported(absl::StrCat(OpAt(node), " with a divisor override"));
      }
    }
    Set(node->output(), out_.Pool(x, pool));
    return;
  }
  if (op == "aten::adaptive_avg_pool1d" || op == "aten::adaptive_avg_pool2d" ||
      op == "aten::adaptive_avg_pool3d" || op == "aten::adaptive_max_pool2d") {
    for (int64_t size : Ints(node->input(1), node, "output size")) {
      if (size != 1) throw Unsupported(absl::StrCat(OpAt(node), " to an output larger than 1"));
    }
    const bool max = op == "aten::adaptive_max_pool2d";
    if (max) throw Unsupported(absl::StrCat(OpAt(node), " (returns indices)"));
    Set(node->output(), out_.Unary("GlobalAveragePool", Tensor(node->input(0), node)));
    return;
  }
  if (op == "aten::cat" || op == "aten::concat") {
    const Entry& list = Get(node->input(0), node);
    if (list.kind != Entry::Kind::kList) {
      throw Unsupported(absl::StrCat(OpAt(node), ": a list of tensors not known in the graph"));
    }
    std::vector<Entry> parts;
    for (const Entry& item : list.items) {
      if (item.kind != Entry::Kind::kTensor)
        throw Unsupported(absl::StrCat(OpAt(node), ": constant parts"));
      parts.push_back(item);
    }
    Set(node->output(), out_.Concat(parts, Int(node->input(1), node, "dim")));
    return;
  }
  if (op == "aten::len" || op == "aten::__getitem__") {
    // On a list whose length is known (x.size() of a tensor of known rank).
    const Entry& list = Get(node->input(0), node);
    if (list.kind != Entry::Kind::kList) throw Unsupported(absl::StrCat(OpAt(node), " of a list"));
    const int64_t n = static_cast<int64_t>(list.items.size());
    if (op == "aten::len") {
      Set(node->output(), Entry::Static(n));
    } else {
      const int64_t index = Int(node->input(1), node, "index");
      if (index < -n || index >= n) throw Unsupported(absl::StrCat(OpAt(node), " out of range"));
      Set(node->output(), list.items[index < 0 ? index + n : index]);
    }
    return;
  }
  const Entry x = Tensor(node->input(0), node);
  if (op == "aten::mean" || op == "aten::sum") {
    std::vector<int64_t> axes;
    bool keep = false;
    if (node->inputs().size() >= 3) {
      if (!IsNone(node->input(1), node)) axes = Ints(node->input(1), node, "dims");
      keep = Static(node->input(2), node, "keepdim").toBool();
    }
    if (node->inputs().size() > 3 && !IsNone(node->input(3), node)) {
      throw Unsupported(absl::StrCat(OpAt(node), " with a dtype"));
    }
    Set(node->output(), out_.Reduce(op == "aten::mean" ? "ReduceMean" : "ReduceSum", x, axes, keep,
                                    op == "aten::sum"));
    return;
  }
  if (op == "aten::flatten") {
    const int rank = Rank(x, node);
    const int64_t start = Axis(Int(node->input(1), node, "start"), rank);
    const int64_t end = Axis(Int(node->input(2), node, "end"), rank);
    if (end != rank - 1) throw Unsupported(absl::StrCat(OpAt(node), " not to the last dim"));
    std::vector<int64_t> shape(start, 0);
    shape.push_back(-1);
    Set(node->output(), start == 1
                            ? out_.Flatten(x, 1)
                            : out_.Reshape(x, out_.Ints(shape), static_cast<int>(start + 1)));
    return;
  }
  if (op == "aten::view" || op == "aten::reshape") {
    const Entry& shape = Get(node->input(1), node);
    Set(node->output(), out_.Reshape(x, out_.ShapeTensor(shape), out_.ShapeLength(shape)));
    return;
  }
  if (op == "aten::size") {
    if (node->inputs().size() == 2) {
      Set(node->output(), out_.Size(x, Int(node->input(1), node, "dim")));
      return;
    }
    Entry sizes;  // Every dim: a list of known length.
    sizes.kind = Entry::Kind::kList;
    for (int d = 0; d < Rank(x, node); ++d) sizes.items.push_back(out_.Size(x, d));
    Set(node->output(), std::move(sizes));
    return;
  }
  if (op == "aten::transpose" || op == "aten::permute" || op == "aten::t") {
    const int rank = Rank(x, node);
    std::vector<int64_t> perm(rank);
    for (int i = 0; i < rank; ++i) perm[i] = i;
    if (op == "aten::permute") {
      perm = Ints(node->input(1), node, "dims");
      for (int64_t& p : perm) p = Axis(p, rank);
    } else if (op == "aten::t") {
      if (rank == 2) std::swap(perm[0], perm[1]);
    } else {
      std::swap(perm[Axis(Int(node->input(1), node, "dim0"), rank)],
                perm[Axis(Int(node->input(2), node, "dim1"), rank)]);
    }
    Set(node->output(), out_.Transpose(x, perm));
    return;
  }
  if (op == "aten::unsqueeze" || op == "aten::squeeze") {
    const int64_t dim = Int(node->input(1), node, "dim");
    Set(node->output(), op == "aten::unsqueeze" ? out_.Unsqueeze(x, dim) : out_.Squeeze(x, dim));
    return;
  }
  if (op == "aten::softmax" || op == "aten::log_softmax") {
    if (node->inputs().size() > 2 && !IsNone(node->input(2), node)) {
      throw Unsupported(absl::StrCat(OpAt(node), " with a dtype"));
    }
    Set(node->output(),
        out_.Softmax(x, Int(node->input(1), node, "dim"), op == "aten::log_softmax"));
    return;
  }
  if (op == "aten::layer_norm") {
    const std::vector<int64_t> shape = Ints(node->input(1), node, "normalized shape");
    auto tensor_or = [&](int index) {
      c10::IValue v = Static(node->input(index), node, "affine parameters");
      return v.isTensor() ? v.toTensor() : torch::Tensor();
    };
    Set(node->output(),
        out_.LayerNorm(x, static_cast<int64_t>(shape.size()), tensor_or(2), tensor_or(3),
                       Static(node->input(4), node, "eps").toDouble()));
    return;
  }
  if (op == "aten::expand") {
    Set(node->output(), out_.Expand(x, Get(node->input(1), node)));
    return;
  }
  if (op == "aten::slice" || op == "aten::select") {
    const int64_t dim = Axis(Int(node->input(1), node, "dim"), Rank(x, node));
    if (op == "aten::select") {
      Set(node->output(), out_.Select(x, dim, Int(node->input(2), node, "index")));
      return;
    }
    auto bound = [&](int index, int64_t fallback) {
      return IsNone(node->input(index), node) ? fallback : Int(node->input(index), node, "bound");
    };
    Set(node->output(),
        out_.Slice(x, dim, bound(2, 0), bound(3, std::numeric_limits<int64_t>::max()),
                   Int(node->input(4), node, "step")));
    return;
  }
  if (op == "aten::chunk" || op == "prim::ConstantChunk") {
    const bool constant = op == "prim::ConstantChunk";
    const int64_t chunks =
        constant ? node->i(torch::jit::attr::chunks) : Int(node->input(1), node, "chunks");
    const int64_t dim =
        constant ? node->i(torch::jit::attr::dim) : Int(node->input(2), node, "dim");
    std::vector<Entry> parts = out_.Split(x, dim, chunks);
    if (constant) {
      for (size_t i = 0; i < parts.size(); ++i) Set(node->output(i), parts[i]);
    } else {
      Entry list;
      list.kind = Entry::Kind::kList;
      list.items = std::move(parts);
      Set(node->output(), std::move(list));
    }
    return;
  }
  throw Unsupported(OpAt(node));
}

}  // namespace ompq::engine::onnx_internal
