// The TorchScript-to-ONNX translation behind ExportOnnx (onnx_export.h): one Translator
// walks the exported graph in order and maps each value to an Entry (onnx_graph.h).
// onnx_export.cc holds the walk and the layers, onnx_ops.cc the other ops. Internal.
#ifndef OMPQ_WORKERS_ENGINE_ONNX_TRANSLATOR_H_
#define OMPQ_WORKERS_ENGINE_ONNX_TRANSLATOR_H_

#include <onnx/onnx_pb.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/engine/graph_layers.h"
#include "workers/engine/onnx_export.h"
#include "workers/engine/onnx_graph.h"

namespace ompq::engine::onnx_internal {

using torch::jit::Node;
using torch::jit::Value;

class Translator {
 public:
  Translator(const OnnxExportInput& input, onnx::ModelProto& model)
      : in_(input),
        model_(model),
        out_(*model.mutable_graph(), input.profile == ExportProfile::kTensorRt) {}

  void Run() {
    torch::jit::Graph& graph = *in_.graph;
    if (graph.inputs().size() != 2) {
      throw Unsupported(absl::StrCat("forward takes ", graph.inputs().size() - 1,
                                     " inputs; the ONNX export takes one"));
    }
    for (const LayerSiteNode& site : FindLayerSites(graph, *in_.module)) sites_.push_back(site);
    for (const LayerSiteNode& site : sites_) site_of_[site.node] = &site;
    entries_[graph.inputs()[0]] = Entry::Static(in_.module->_ivalue());
    Entry input = out_.Input("input", in_.sample_shape);
    entries_[graph.inputs()[1]] = input;
    for (Node* node : graph.nodes()) Translate(node);
    Value* result = graph.outputs()[0];
    const Entry& output = Get(result, nullptr);
    if (output.kind != Entry::Kind::kTensor) {
      throw Unsupported("forward returns something other than one tensor");
    }
    out_.Output(output, "output");
    out_.DeclareOutput(model_);
  }

 private:
  const Entry& Get(Value* value, const Node* user) {
    auto it = entries_.find(value);
    if (it == entries_.end()) {
      throw Unsupported(absl::StrCat("a value ", user ? OpAt(user) : "", " has no translation"));
    }
    return it->second;
  }

  static std::string OpAt(const Node* node) { return engine::OpAt(node); }

  std::optional<c10::IValue> StaticOf(Value* value, const Node* user) {
    const Entry& entry = Get(value, user);
    if (entry.kind != Entry::Kind::kStatic) return std::nullopt;
    return entry.value;
  }
  c10::IValue Static(Value* value, const Node* user, const char* what) {
    std::optional<c10::IValue> v = StaticOf(value, user);
    if (!v.has_value())
      throw Unsupported(absl::StrCat(OpAt(user), ": its ", what, " is not static"));
    return *v;
  }
  std::vector<int64_t> Ints(Value* value, const Node* user, const char* what) {
    c10::IValue v = Static(value, user, what);
    if (v.isInt()) return {v.toInt()};
    if (!v.isIntList()) throw Unsupported(absl::StrCat(OpAt(user), ": its ", what, " is not ints"));
    return v.toIntVector();
  }
  int64_t Int(Value* value, const Node* user, const char* what) {
    c10::IValue v = Static(value, user, what);
    if (!v.isInt()) throw Unsupported(absl::StrCat(OpAt(user), ": its ", what, " is not an int"));
    return v.toInt();
  }
  bool IsNone(Value* value, const Node* user) {
    std::optional<c10::IValue> v = StaticOf(value, user);
    return v.has_value() && v->isNone();
  }

  // A tensor operand: an ONNX value, or a static tensor/number made an initializer
  // (numbers take `elem`, the other operand's type).
  Entry Tensor(Value* value, const Node* user, int32_t elem = onnx::TensorProto::FLOAT) {
    const Entry& entry = Get(value, user);
    if (entry.kind == Entry::Kind::kTensor) return entry;
    if (entry.kind == Entry::Kind::kStatic) {
      const c10::IValue& v = entry.value;
      if (v.isTensor()) return out_.Constant(v.toTensor());
      if (v.isDouble() || v.isInt() || v.isBool()) {
        const double number = v.isDouble() ? v.toDouble() : v.isInt() ? v.toInt() : v.toBool();
        return out_.Scalar(number, elem);
      }
    }
    throw Unsupported(absl::StrCat(OpAt(user), ": an operand is not a tensor"));
  }

  int Rank(const Entry& e, const Node* user) {
    if (e.rank < 0) throw Unsupported(absl::StrCat(OpAt(user), ": the input's rank is unknown"));
    return e.rank;
  }
  static int64_t Axis(int64_t axis, int rank) { return axis < 0 ? axis + rank : axis; }

  void Set(Value* value, Entry entry) { entries_[value] = std::move(entry); }

  void Translate(Node* node);
  bool TranslateStatic(Node* node);
  void TranslateLayer(Node* node, const std::string& op);
  void TranslateElementwise(Node* node, const std::string& op);
  void TranslateShape(Node* node, const std::string& op);
  Entry Weight(const LayerSiteNode* site, const torch::Tensor& weight, Node* node);

  const OnnxExportInput& in_;
  onnx::ModelProto& model_;
  OnnxGraph out_;
  std::vector<LayerSiteNode> sites_;
  std::unordered_map<const Node*, const LayerSiteNode*> site_of_;
  std::unordered_map<Value*, Entry> entries_;
  std::unordered_map<std::string, Entry> weights_;    // By layer: shared by its sites.
  std::unordered_map<std::string, int> inputs_seen_;  // Sites met per layer, for names.
  std::unordered_set<const Node*> absorbed_;          // Folded BatchNorms, now biases.
};

}  // namespace ompq::engine::onnx_internal

#endif  // OMPQ_WORKERS_ENGINE_ONNX_TRANSLATOR_H_
