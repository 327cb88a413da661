#include "workers/engine/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <stdexcept>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_error.h"
#include "workers/engine/graph_layers.h"
#include "workers/engine/onnx_graph.h"
#include "workers/engine/onnx_translator.h"
#include "workers/engine/quant_layers.h"

namespace ompq::engine {
namespace {

using onnx_internal::Translator;
using torch::jit::Node;
using torch::jit::Value;

// The op kind without the in-place suffix: aten::relu_ -> aten::relu.
std::string OpName(const Node* node) {
  std::string kind = node->kind().toQualString();
  // In-place variants (aten::relu_) translate as their functional form; dunder ops
  // (aten::__getitem__) keep their name.
  if (kind.size() > 1 && kind.back() == '_' && kind[kind.size() - 2] != ':' &&
      kind[kind.size() - 2] != '_') {
    kind.pop_back();
  }
  return kind;
}

// A list (or tuple) of static values, typed as TorchScript would type it.
c10::IValue StaticList(const std::vector<c10::IValue>& items, bool tuple) {
  if (tuple) return c10::ivalue::Tuple::create(items);
  auto all = [&](auto&& is) { return std::all_of(items.begin(), items.end(), is); };
  if (all([](const c10::IValue& v) { return v.isInt(); })) {
    std::vector<int64_t> ints;
    for (const c10::IValue& v : items) ints.push_back(v.toInt());
    return ints;
  }
  if (all([](const c10::IValue& v) { return v.isDouble(); })) {
    std::vector<double> doubles;
    for (const c10::IValue& v : items) doubles.push_back(v.toDouble());
    return doubles;
  }
  if (all([](const c10::IValue& v) { return v.isTensor(); })) {
    std::vector<torch::Tensor> tensors;
    for (const c10::IValue& v : items) tensors.push_back(v.toTensor());
    return tensors;
  }
  c10::impl::GenericList list(c10::AnyType::get());
  for (const c10::IValue& v : items) list.push_back(v);
  return list;
}

// The first line of a library error (LibTorch appends the whole graph).
std::string FirstLine(const std::string& message) {
  const size_t start = message.find_first_not_of("\n ");
  if (start == std::string::npos) return message;
  const size_t end = message.find('\n', start);
  return message.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// True for a BatchNorm that InstallWeight turned into x + shift (mean 0, variance
// 1 - eps, scale 1): its shift joins the layer's bias.
bool IsFoldedBatchNorm(const torch::Tensor& weight, const torch::Tensor& mean,
                       const torch::Tensor& var, double eps) {
  if (!mean.defined() || !var.defined()) return false;
  if (weight.defined() && !torch::all(weight == 1).item<bool>()) return false;
  return torch::all(mean == 0).item<bool>() &&
         torch::all(torch::abs(var.to(torch::kDouble) + eps - 1) < 1e-6).item<bool>();
}

}  // namespace

namespace onnx_internal {

// Nodes whose inputs are all static (attribute reads, constants, arithmetic on them) are
// evaluated here, by the op itself.
bool Translator::TranslateStatic(Node* node) {
  if (!node->blocks().empty()) return false;
  if (node->kind() == torch::jit::prim::Constant) {
    c10::optional<c10::IValue> v = torch::jit::toIValue(node->output());
    Set(node->output(), Entry::Static(v.has_value() ? *v : c10::IValue()));
    return true;
  }
  if (node->kind() == torch::jit::prim::GetAttr) {
    std::optional<c10::IValue> object = StaticOf(node->input(), node);
    if (!object.has_value() || !object->isObject()) return false;
    Set(node->output(),
        Entry::Static(object->toObject()->getAttr(node->s(torch::jit::attr::name))));
    return true;
  }
  std::vector<c10::IValue> stack;
  for (Value* input : node->inputs()) {
    std::optional<c10::IValue> v = StaticOf(input, node);
    if (!v.has_value()) return false;
    // Never let an in-place op change the model's own tensors.
    stack.push_back(v->isTensor() ? c10::IValue(v->toTensor().clone()) : *v);
  }
  if (node->kind() == torch::jit::prim::ListConstruct ||
      node->kind() == torch::jit::prim::TupleConstruct) {
    Set(node->output(),
        Entry::Static(StaticList(stack, node->kind() == torch::jit::prim::TupleConstruct)));
    return true;
  }
  if (node->kind() == torch::jit::prim::ListUnpack ||
      node->kind() == torch::jit::prim::TupleUnpack) {
    const c10::IValue& list = stack[0];
    std::vector<c10::IValue> items =
        list.isTuple() ? list.toTupleRef().elements().vec() : list.toListRef().vec();
    if (items.size() != node->outputs().size()) return false;
    for (size_t i = 0; i < items.size(); ++i) Set(node->output(i), Entry::Static(items[i]));
    return true;
  }
  if (node->maybeOperator() == nullptr) return false;
  torch::jit::Operation operation = node->getOperation();
  operation(stack);
  if (stack.size() != node->outputs().size()) return false;
  for (size_t i = 0; i < stack.size(); ++i) Set(node->output(i), Entry::Static(stack[i]));
  return true;
}

void Translator::Translate(Node* node) {
  if (absorbed_.count(node)) {
    Set(node->output(), Get(node->input(0), node));
    return;
  }
  if (node->kind() == torch::jit::prim::If) {
    // A condition known at export (e.g. a scripted module's check of the input's rank):
    // the branch taken, translated in place.
    std::optional<c10::IValue> condition = StaticOf(node->input(), node);
    if (!condition.has_value() || !condition->isBool()) {
      throw Unsupported(absl::StrCat(OpAt(node), " (control flow that depends on the input)"));
    }
    torch::jit::Block* branch = node->blocks()[condition->toBool() ? 0 : 1];
    for (Node* inner : branch->nodes()) Translate(inner);
    for (size_t i = 0; i < node->outputs().size(); ++i) {
      Set(node->output(i), Get(branch->outputs()[i], node));
    }
    return;
  }
  if (!node->blocks().empty()) {
    throw Unsupported(absl::StrCat(OpAt(node), " (control flow that depends on the input)"));
  }
  if (node->kind() == c10::Symbol::fromQualString("aten::dim")) {
    Set(node->output(),
        Entry::Static(static_cast<int64_t>(Rank(Tensor(node->input(), node), node))));
    return;
  }
  if (TranslateStatic(node)) return;
  const std::string op = OpName(node);
  if (op == "prim::ListConstruct" || op == "prim::TupleConstruct") {
    Entry list;
    list.kind = Entry::Kind::kList;
    for (Value* input : node->inputs()) list.items.push_back(Get(input, node));
    Set(node->output(), std::move(list));
    return;
  }
  if (op == "prim::ListUnpack" || op == "prim::TupleUnpack") {
    const Entry& list = Get(node->input(), node);
    if (list.kind != Entry::Kind::kList || list.items.size() != node->outputs().size()) {
      throw Unsupported(absl::StrCat(OpAt(node), ": unpacks a list of unknown length"));
    }
    const std::vector<Entry> items = list.items;
    for (size_t i = 0; i < items.size(); ++i) Set(node->output(i), items[i]);
    return;
  }
  static const std::unordered_set<std::string> kIdentity = {
      "aten::dropout",    "aten::feature_dropout", "aten::alpha_dropout",
      "aten::contiguous", "aten::detach",          "aten::clone",
      "aten::Int",        "prim::NumToTensor",     "aten::ScalarImplicit",
      "aten::Float"};
  if (kIdentity.count(op)) {
    Set(node->output(), Get(node->input(0), node));
    return;
  }
  if (op == "aten::_convolution" || op == "aten::convolution" || op == "aten::conv1d" ||
      op == "aten::conv2d" || op == "aten::conv3d" || op == "aten::linear" ||
      op == "aten::batch_norm" || op == "aten::fake_quantize_per_tensor_affine") {
    TranslateLayer(node, op);
    return;
  }
  TranslateElementwise(node, op);
}

Entry Translator::Weight(const LayerSiteNode* site, const torch::Tensor& weight, Node* node) {
  if (site == nullptr) return out_.Constant(weight);
  auto cached = weights_.find(site->name);
  if (cached != weights_.end()) return cached->second;
  auto params = in_.weights.find(site->name);
  Entry entry;
  if (params == in_.weights.end() || params->second.bits > 8) {
    entry = out_.Constant(weight, site->weight_key);
  } else {
    absl::StatusOr<Entry> quantized =
        out_.DequantizedWeight(weight, params->second, site->weight_key);
    if (!quantized.ok()) {
      throw Unsupported(absl::StrCat(OpAt(node), ": ", quantized.status().message()));
    }
    entry = *std::move(quantized);
  }
  weights_[site->name] = entry;
  return entry;
}

void Translator::TranslateLayer(Node* node, const std::string& op) {
  if (op == "aten::fake_quantize_per_tensor_affine") {
    const Entry x = Tensor(node->input(0), node);
    const double scale = Static(node->input(1), node, "scale").toDouble();
    const int64_t zero_point = Int(node->input(2), node, "zero point");
    const int64_t quant_min = Int(node->input(3), node, "quant_min");
    const int64_t quant_max = Int(node->input(4), node, "quant_max");
    // Named after the layer input it feeds, as in encodings.json.
    std::string name;
    for (const torch::jit::Use& use : node->output()->uses()) {
      auto site = site_of_.find(use.user);
      if (site == site_of_.end()) continue;
      const int k = inputs_seen_[site->second->name]++;
      name =
          k == 0 ? site->second->name + ".input" : absl::StrCat(site->second->name, ".input.", k);
      break;
    }
    Set(node->output(), out_.FakeQuantize(x, scale, zero_point, quant_min, quant_max, name));
    return;
  }
  if (op == "aten::batch_norm") {
    const Entry x = Tensor(node->input(0), node);
    if (Static(node->input(5), node, "training flag").toBool()) {
      throw Unsupported(absl::StrCat(OpAt(node), " in training mode"));
    }
    auto tensor_or = [&](int index) {
      c10::IValue v = Static(node->input(index), node, "statistics");
      return v.isTensor() ? v.toTensor() : torch::Tensor();
    };
    torch::Tensor mean = tensor_or(3), var = tensor_or(4);
    if (!mean.defined() || !var.defined()) {
      throw Unsupported(absl::StrCat(OpAt(node), " without running statistics"));
    }
    torch::Tensor weight = tensor_or(1), bias = tensor_or(2);
    if (!weight.defined()) weight = torch::ones_like(mean);
    if (!bias.defined()) bias = torch::zeros_like(mean);
    const double eps = Static(node->input(7), node, "eps").toDouble();
    Set(node->output(), out_.BatchNorm(x, weight, bias, mean, var, eps));
    return;
  }
  const bool linear = op == "aten::linear";
  const Entry x = Tensor(node->input(0), node);
  const Entry* x_entry = &x;
  auto site_it = site_of_.find(node);
  const LayerSiteNode* site = site_it == site_of_.end() ? nullptr : site_it->second;
  c10::IValue weight_value = Static(node->input(1), node, "weight");
  if (!weight_value.isTensor())
    throw Unsupported(absl::StrCat(OpAt(node), ": weight not a tensor"));
  const torch::Tensor weight = weight_value.toTensor();
  const Entry w = Weight(site, weight, node);
  c10::IValue bias_value = Static(node->input(2), node, "bias");
  torch::Tensor bias = bias_value.isTensor() ? bias_value.toTensor().clone() : torch::Tensor();
  // The BatchNorm quantization folded into this layer: now x + shift.
  if (site != nullptr && site->batch_norm != nullptr) {
    Node* bn = site->batch_norm;
    // Its operands come later in the graph: read them from the module directly.
    const Value* self = in_.graph->inputs()[0];
    auto tensor_of = [&](int index) {
      std::optional<c10::IValue> v = StaticValue(bn->input(index), *in_.module, self);
      return v.has_value() && v->isTensor() ? v->toTensor() : torch::Tensor();
    };
    std::optional<c10::IValue> eps = StaticValue(bn->input(7), *in_.module, self);
    if (eps.has_value() && eps->isDouble() &&
        IsFoldedBatchNorm(tensor_of(1), tensor_of(3), tensor_of(4), eps->toDouble())) {
      torch::Tensor shift = tensor_of(2);
      if (shift.defined()) bias = bias.defined() ? bias + shift : shift.clone();
      absorbed_.insert(bn);
    }
  }
  std::optional<Entry> b;
  if (bias.defined()) {
    auto params = site == nullptr ? in_.weights.end() : in_.weights.find(site->name);
    if (x_entry->act_scale.has_value() && params != in_.weights.end() && params->second.bits <= 8) {
      b = out_.DequantizedBias(bias, *x_entry->act_scale, params->second, site->name + ".bias");
    }
    if (!b.has_value()) b = out_.Constant(bias, site ? site->name + ".bias" : "");
  }
  if (linear) {
    Set(node->output(), out_.Linear(x, w, b, Rank(x, node)));
    return;
  }
  ConvAttributes conv;
  conv.spatial = weight.dim() - 2;
  conv.stride = Ints(node->input(3), node, "stride");
  c10::IValue padding = Static(node->input(4), node, "padding");
  if (!padding.isIntList() && !padding.isInt()) {
    throw Unsupported(absl::StrCat(OpAt(node), ": padding '", padding.tagKind(), "' is not ints"));
  }
  conv.padding = Ints(node->input(4), node, "padding");
  conv.dilation = Ints(node->input(5), node, "dilation");
  const bool functional = op == "aten::conv1d" || op == "aten::conv2d" || op == "aten::conv3d";
  if (!functional) {
    if (Static(node->input(6), node, "transposed flag").toBool()) {
      throw Unsupported(absl::StrCat(OpAt(node), ": transposed convolution"));
    }
    for (int64_t p : Ints(node->input(7), node, "output padding")) {
      if (p != 0) throw Unsupported(absl::StrCat(OpAt(node), ": output padding"));
    }
  }
  conv.groups = Int(node->input(functional ? 6 : 8), node, "groups");
  Set(node->output(), out_.Conv(x, w, b, conv));
}

}  // namespace onnx_internal

absl::StatusOr<std::string> ExportOnnx(const OnnxExportInput& input) {
  if (input.module == nullptr || input.graph == nullptr) {
    return absl::InvalidArgumentError("ExportOnnx needs a module and its graph");
  }
  onnx::ModelProto model;
  model.set_ir_version(onnx::IR_VERSION);
  model.set_producer_name("ompq");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  model.mutable_graph()->set_name("ompq_quantized");
  try {
    Translator translator(input, model);
    translator.Run();
  } catch (const Unsupported& e) {
    return absl::FailedPreconditionError(e.what());
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("the graph cannot be translated: ", FirstLine(e.what())));
  }
  try {
    onnx::checker::check_model(model);
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(true, 1, false));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the exported ONNX model is invalid: ", e.what()));
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes))
    return absl::InternalError("cannot serialize the ONNX model");
  return bytes;
}

}  // namespace ompq::engine
