#include "workers/engine/onnx_graph.h"

#include <onnx/shape_inference/implementation.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ompq::engine {
namespace {

using onnx::TensorProto;

int32_t ElemOf(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat:
    case torch::kDouble:
      return TensorProto::FLOAT;
    case torch::kLong:
      return TensorProto::INT64;
    case torch::kInt:
      return TensorProto::INT32;
    case torch::kChar:
      return TensorProto::INT8;
    case torch::kByte:
      return TensorProto::UINT8;
    case torch::kBool:
      return TensorProto::BOOL;
    default:
      throw Unsupported(absl::StrCat("a tensor of type ", c10::toString(type)));
  }
}

torch::ScalarType TorchOf(int32_t elem) {
  switch (elem) {
    case TensorProto::INT64:
      return torch::kLong;
    case TensorProto::INT32:
      return torch::kInt;
    case TensorProto::INT8:
      return torch::kChar;
    case TensorProto::UINT8:
      return torch::kByte;
    default:
      return torch::kFloat;
  }
}

void SetInts(onnx::NodeProto& node, const char* name, const std::vector<int64_t>& values) {
  onnx::AttributeProto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}
void SetInt(onnx::NodeProto& node, const char* name, int64_t value) {
  onnx::AttributeProto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}
void SetFloat(onnx::NodeProto& node, const char* name, float value) {
  onnx::AttributeProto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

// One value per spatial dimension (torch lets one stand for all).
std::vector<int64_t> PerDim(std::vector<int64_t> values, int64_t dims) {
  if (values.size() == 1 && dims > 1) values.assign(dims, values[0]);
  return values;
}
// ONNX pads: the begins then the ends.
std::vector<int64_t> Pads(const std::vector<int64_t>& padding, int64_t dims) {
  std::vector<int64_t> p = PerDim(padding, dims);
  std::vector<int64_t> pads = p;
  pads.insert(pads.end(), p.begin(), p.end());
  return pads;
}

}  // namespace

std::string OnnxGraph::Fresh(const std::string& hint) {
  return absl::StrCat(hint, "_", counters_[hint]++);
}

void OnnxGraph::Initializer(const torch::Tensor& tensor, const std::string& name) {
  torch::Tensor t = tensor.detach().to(torch::kCPU);
  if (t.scalar_type() == torch::kDouble) t = t.to(torch::kFloat);
  t = t.contiguous();
  TensorProto* proto = graph_.add_initializer();
  proto->set_name(name);
  proto->set_data_type(ElemOf(t.scalar_type()));
  for (int64_t d : t.sizes()) proto->add_dims(d);
  proto->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.nbytes()));
}

Entry OnnxGraph::Add(const std::string& op, const std::vector<std::string>& inputs, int rank,
                     int32_t elem, const Attributes& attributes, const std::string& name) {
  onnx::NodeProto* node = graph_.add_node();
  node->set_op_type(op);
  node->set_name(Fresh(op));
  for (const std::string& input : inputs) node->add_input(input);
  Entry out;
  out.kind = Entry::Kind::kTensor;
  out.name = name.empty() ? Fresh(op + "_out") : name;
  out.rank = rank;
  out.elem = elem;
  node->add_output(out.name);
  if (attributes) attributes(*node);
  return out;
}

Entry OnnxGraph::Input(const std::string& name, const std::vector<int64_t>& sample_shape) {
  onnx::ValueInfoProto* input = graph_.add_input();
  input->set_name(name);
  onnx::TypeProto_Tensor* type = input->mutable_type()->mutable_tensor_type();
  type->set_elem_type(TensorProto::FLOAT);
  type->mutable_shape()->add_dim()->set_dim_param("batch");
  for (int64_t d : sample_shape) type->mutable_shape()->add_dim()->set_dim_value(d);
  Entry entry;
  entry.kind = Entry::Kind::kTensor;
  entry.name = name;
  entry.rank = static_cast<int>(sample_shape.size()) + 1;
  return entry;
}

void OnnxGraph::Output(const Entry& value, const std::string& name) {
  Add("Identity", {value.name}, value.rank, TensorProto::FLOAT, nullptr, name);
  output_ = name;
  output_rank_ = value.rank;
}

void OnnxGraph::DeclareOutput(onnx::ModelProto& model) {
  // Its type and shape are what shape inference finds for it.
  // Data propagation follows the shapes that sizes computed at run time build.
  onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                     onnx::ShapeInferenceOptions(false, 0, true));
  onnx::GraphProto& graph = *model.mutable_graph();
  onnx::ValueInfoProto declared;
  declared.set_name(output_);
  declared.mutable_type()->mutable_tensor_type()->set_elem_type(TensorProto::FLOAT);
  for (const onnx::ValueInfoProto& info : graph.value_info()) {
    if (info.name() == output_) declared = info;
  }
  if (!declared.type().tensor_type().has_shape()) {
    if (output_rank_ < 0) throw Unsupported("the rank of the model output is unknown");
    onnx::TensorShapeProto* shape = declared.mutable_type()->mutable_tensor_type()->mutable_shape();
    for (int d = 0; d < output_rank_; ++d) shape->add_dim();  // Sizes unknown.
  }
  *graph.add_output() = declared;
  graph.clear_value_info();
}

Entry OnnxGraph::Constant(const torch::Tensor& tensor, const std::string& name) {
  if (name.empty()) {
    auto cached = constants_.find(tensor.unsafeGetTensorImpl());
    if (cached != constants_.end()) return cached->second.second;
  }
  Entry entry;
  entry.kind = Entry::Kind::kTensor;
  entry.name = name.empty() ? Fresh("const") : name;
  entry.rank = static_cast<int>(tensor.dim());
  entry.elem = ElemOf(tensor.scalar_type());
  Initializer(tensor, entry.name);
  // Holding the tensor keeps its address from being reused by another one.
  if (name.empty()) constants_[tensor.unsafeGetTensorImpl()] = {tensor, entry};
  return entry;
}

Entry OnnxGraph::Scalar(double value, int32_t elem) {
  return Constant(torch::scalar_tensor(value, torch::TensorOptions().dtype(TorchOf(elem))));
}

Entry OnnxGraph::Ints(const std::vector<int64_t>& values) {
  return Constant(torch::tensor(values, torch::kLong));
}

absl::StatusOr<Entry> OnnxGraph::DequantizedWeight(const torch::Tensor& weight,
                                                   const QuantParams& params,
                                                   const std::string& key) {
  torch::Tensor w = weight.detach().to(torch::kCPU);
  absl::StatusOr<torch::Tensor> codes = Quantize(w, params);
  if (!codes.ok()) return codes.status();
  absl::StatusOr<torch::Tensor> back = Dequantize(*codes, params, torch::kDouble);
  if (!back.ok()) return back.status();
  // The exported weight lies on its grid: the codes give it back to float rounding.
  torch::Tensor scale = params.scale.to(torch::kDouble);
  std::vector<int64_t> view(w.dim(), 1);
  view[0] = -1;
  const double off_grid =
      (torch::abs(*back - w.to(torch::kDouble)) / scale.view(view)).max().item<double>();
  if (off_grid > 1e-3) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight ", key, " is off its quantization grid by ", off_grid, " steps"));
  }
  // Signed codes centred on the grid's middle: small magnitudes for small widths, which
  // keeps integer kernels' intermediate sums (e.g. int16 pairs on AVX2) from saturating.
  const std::string& name = key;
  const int64_t centre = int64_t{1} << (params.bits - 1);
  if (signed_int8_ && (params.zero_point != centre).any().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight ", key, " is not on a symmetric grid (the tensorrt profile needs one)"));
  }
  Initializer((*codes - centre).to(torch::kChar), name);
  Initializer(scale.to(torch::kFloat), name + ".scale");
  Initializer((params.zero_point - centre).to(torch::kChar), name + ".zero_point");
  return Add(
      "DequantizeLinear", {name, name + ".scale", name + ".zero_point"}, static_cast<int>(w.dim()),
      TensorProto::FLOAT, [](onnx::NodeProto& n) { SetInt(n, "axis", 0); }, name + ".dequantized");
}

std::optional<Entry> OnnxGraph::DequantizedBias(const torch::Tensor& bias, float act_scale,
                                                const QuantParams& weight,
                                                const std::string& name) {
  if (signed_int8_) return std::nullopt;
  // The scale a runtime's integer kernel gives the accumulator, in float32 as it does.
  torch::Tensor scale = weight.scale.to(torch::kFloat) * act_scale;
  if (!(scale > 0).all().item<bool>()) return std::nullopt;
  const torch::Tensor b = bias.detach().to(torch::kCPU).to(torch::kDouble);
  torch::Tensor codes = torch::round(b / scale.to(torch::kDouble));
  if ((torch::abs(codes) > std::numeric_limits<int32_t>::max() / 2).any().item<bool>()) {
    return std::nullopt;
  }
  // Only a bias already on its grid (QuantizeBiases): the export then computes what the
  // quantized model computes; any other stays float.
  const torch::Tensor back = (codes.to(torch::kFloat) * scale).to(torch::kDouble);
  if ((torch::abs(back - b) > 1e-6 * scale.to(torch::kDouble)).any().item<bool>()) {
    return std::nullopt;
  }
  Initializer(codes.to(torch::kInt), name);
  Initializer(scale, name + ".scale");
  Initializer(torch::zeros({scale.numel()}, torch::kInt), name + ".zero_point");
  return Add(
      "DequantizeLinear", {name, name + ".scale", name + ".zero_point"}, 1, TensorProto::FLOAT,
      [](onnx::NodeProto& n) { SetInt(n, "axis", 0); }, name + ".dequantized");
}

Entry OnnxGraph::FakeQuantize(const Entry& x, double scale, int64_t zero_point, int64_t quant_min,
                              int64_t quant_max, const std::string& name) {
  const Entry s = Scalar(scale, TensorProto::FLOAT);
  if (signed_int8_ && quant_max <= 255) {
    // Codes q - z with z = 2^(b-1) are the signed b-bit range; TensorRT's Q/DQ are int8
    // only, so a narrower range is a float Clip at its bounds first: round(clip(x / s))
    // equals clip(round(x / s)) since the bounds are integers.
    if (quant_min != 0 || zero_point != (quant_max + 1) / 2) {
      throw Unsupported(absl::StrCat("an activation quantizer with zero point ", zero_point,
                                     " over [", quant_min, ", ", quant_max,
                                     "]: the tensorrt profile needs a symmetric one"));
    }
    Entry v = x;
    if (quant_max < 255) {
      v = Clip(x, static_cast<double>(quant_min - zero_point) * scale,
               static_cast<double>(quant_max - zero_point) * scale);
    }
    const Entry z = Constant(torch::scalar_tensor(0, torch::kChar));
    Entry q = Add("QuantizeLinear", {v.name, s.name, z.name}, x.rank, TensorProto::INT8);
    Entry out = Add("DequantizeLinear", {q.name, s.name, z.name}, x.rank, TensorProto::FLOAT,
                    nullptr, name);
    out.act_scale = static_cast<float>(scale);
    return out;
  }
  if (quant_min >= 0 && quant_max <= 255) {
    const Entry z = Constant(torch::scalar_tensor(zero_point, torch::kByte));
    Entry q = Add("QuantizeLinear", {x.name, s.name, z.name}, x.rank, TensorProto::UINT8);
    if (quant_min > 0 || quant_max < 255) {
      const Entry lo = Constant(torch::scalar_tensor(quant_min, torch::kByte));
      const Entry hi = Constant(torch::scalar_tensor(quant_max, torch::kByte));
      q = Add("Clip", {q.name, lo.name, hi.name}, x.rank, TensorProto::UINT8);
    }
    Entry out = Add("DequantizeLinear", {q.name, s.name, z.name}, x.rank, TensorProto::FLOAT,
                    nullptr, name);
    out.act_scale = static_cast<float>(scale);
    return out;
  }
  // Wider codes: round(x / s) + z clamped, then back, in float.
  Entry v = Binary("Div", x, s);
  v = Unary("Round", v);
  v = Binary("Add", v, Scalar(static_cast<double>(zero_point), TensorProto::FLOAT));
  v = Clip(v, static_cast<double>(quant_min), static_cast<double>(quant_max));
  v = Binary("Sub", v, Scalar(static_cast<double>(zero_point), TensorProto::FLOAT));
  Entry out = Add("Mul", {v.name, s.name}, x.rank, TensorProto::FLOAT, nullptr, name);
  return out;
}

Entry OnnxGraph::Conv(const Entry& x, const Entry& w, const std::optional<Entry>& b,
                      const ConvAttributes& conv) {
  std::vector<std::string> inputs = {x.name, w.name};
  if (b.has_value()) inputs.push_back(b->name);
  return Add("Conv", inputs, x.rank, TensorProto::FLOAT, [&](onnx::NodeProto& n) {
    SetInts(n, "strides", PerDim(conv.stride, conv.spatial));
    SetInts(n, "pads", Pads(conv.padding, conv.spatial));
    SetInts(n, "dilations", PerDim(conv.dilation, conv.spatial));
    SetInt(n, "group", conv.groups);
  });
}

Entry OnnxGraph::Linear(const Entry& x, const Entry& w, const std::optional<Entry>& b, int rank) {
  if (rank == 2) {
    std::vector<std::string> inputs = {x.name, w.name};
    if (b.has_value()) inputs.push_back(b->name);
    return Add("Gemm", inputs, 2, TensorProto::FLOAT,
               [](onnx::NodeProto& n) { SetInt(n, "transB", 1); });
  }
  Entry y = Binary("MatMul", x, Transpose(w, {1, 0}));
  return b.has_value() ? Binary("Add", y, *b) : y;
}

Entry OnnxGraph::BatchNorm(const Entry& x, const torch::Tensor& weight, const torch::Tensor& bias,
                           const torch::Tensor& mean, const torch::Tensor& var, double eps) {
  const Entry w = Constant(weight), b = Constant(bias), m = Constant(mean), v = Constant(var);
  return Add("BatchNormalization", {x.name, w.name, b.name, m.name, v.name}, x.rank,
             TensorProto::FLOAT,
             [&](onnx::NodeProto& n) { SetFloat(n, "epsilon", static_cast<float>(eps)); });
}

Entry OnnxGraph::Unary(const std::string& op, const Entry& x) {
  return Add(op, {x.name}, x.rank, x.elem);
}

Entry OnnxGraph::Binary(const std::string& op, const Entry& a, const Entry& b) {
  const int rank = a.rank < 0 || b.rank < 0 ? -1 : std::max(a.rank, b.rank);
  return Add(op, {a.name, b.name}, rank, a.elem);
}

Entry OnnxGraph::Clip(const Entry& x, std::optional<double> lo, std::optional<double> hi) {
  const std::string lo_name = lo.has_value() ? Scalar(*lo, x.elem).name : "";
  std::vector<std::string> inputs = {x.name, lo_name};
  if (hi.has_value()) inputs.push_back(Scalar(*hi, x.elem).name);
  return Add("Clip", inputs, x.rank, x.elem);
}

Entry OnnxGraph::HardSigmoid(const Entry& x) {
  return Add("HardSigmoid", {x.name}, x.rank, x.elem, [](onnx::NodeProto& n) {
    SetFloat(n, "alpha", 1.0f / 6.0f);
    SetFloat(n, "beta", 0.5f);
  });
}

Entry OnnxGraph::Gelu(const Entry& x) {
  Entry inner = Binary("Div", x, Scalar(std::sqrt(2.0), x.elem));
  inner = Binary("Add", Unary("Erf", inner), Scalar(1.0, x.elem));
  return Binary("Mul", Binary("Mul", x, inner), Scalar(0.5, x.elem));
}

Entry OnnxGraph::Softmax(const Entry& x, int64_t axis, bool log) {
  return Add(log ? "LogSoftmax" : "Softmax", {x.name}, x.rank, x.elem,
             [&](onnx::NodeProto& n) { SetInt(n, "axis", axis); });
}

Entry OnnxGraph::LayerNorm(const Entry& x, int64_t dims, const torch::Tensor& weight,
                           const torch::Tensor& bias, double eps) {
  std::vector<int64_t> axes;
  for (int64_t d = dims; d >= 1; --d) axes.push_back(-d);
  const Entry mean = Reduce("ReduceMean", x, axes, true, false);
  const Entry centred = Binary("Sub", x, mean);
  const Entry var = Reduce("ReduceMean", Binary("Mul", centred, centred), axes, true, false);
  const Entry deviation = Unary("Sqrt", Binary("Add", var, Scalar(eps, x.elem)));
  Entry y = Binary("Div", centred, deviation);
  if (weight.defined()) y = Binary("Mul", y, Constant(weight));
  if (bias.defined()) y = Binary("Add", y, Constant(bias));
  return y;
}

Entry OnnxGraph::Pool(const Entry& x, const PoolAttributes& pool) {
  const int64_t dims =
      static_cast<int64_t>(pool.kernel.size()) > 1 ? pool.kernel.size() : std::max(1, x.rank - 2);
  return Add(pool.max ? "MaxPool" : "AveragePool", {x.name}, x.rank, x.elem,
             [&](onnx::NodeProto& n) {
               SetInts(n, "kernel_shape", PerDim(pool.kernel, dims));
               SetInts(n, "strides", PerDim(pool.stride.empty() ? pool.kernel : pool.stride, dims));
               SetInts(n, "pads", Pads(pool.padding, dims));
               if (pool.max && !pool.dilation.empty()) {
                 SetInts(n, "dilations", PerDim(pool.dilation, dims));
               }
               SetInt(n, "ceil_mode", pool.ceil_mode ? 1 : 0);
               if (!pool.max) SetInt(n, "count_include_pad", pool.count_include_pad ? 1 : 0);
             });
}

Entry OnnxGraph::Reduce(const std::string& op, const Entry& x, const std::vector<int64_t>& axes,
                        bool keep, bool axes_as_input) {
  const int rank = keep ? x.rank : axes.empty() ? 0 : x.rank < 0 ? -1 : x.rank - axes.size();
  std::vector<std::string> inputs = {x.name};
  if (axes_as_input && !axes.empty()) inputs.push_back(Ints(axes).name);
  return Add(op, inputs, rank, x.elem, [&](onnx::NodeProto& n) {
    if (!axes_as_input && !axes.empty()) SetInts(n, "axes", axes);
    SetInt(n, "keepdims", keep ? 1 : 0);
  });
}

Entry OnnxGraph::Flatten(const Entry& x, int64_t axis) {
  return Add("Flatten", {x.name}, 2, x.elem, [&](onnx::NodeProto& n) { SetInt(n, "axis", axis); });
}

Entry OnnxGraph::Reshape(const Entry& x, const Entry& shape, int rank) {
  return Add("Reshape", {x.name, shape.name}, rank, x.elem);
}

Entry OnnxGraph::ShapeTensor(const Entry& list) {
  if (list.kind == Entry::Kind::kStatic) {
    if (!list.value.isIntList()) throw Unsupported("a shape that is not a list of ints");
    return Ints(list.value.toIntVector());
  }
  if (list.kind != Entry::Kind::kList) throw Unsupported("a shape that is not a list");
  std::vector<std::string> parts;
  for (const Entry& item : list.items) {
    if (item.kind == Entry::Kind::kStatic) {
      if (!item.value.isInt()) throw Unsupported("a shape element that is not an int");
      parts.push_back(Ints({item.value.toInt()}).name);
    } else if (item.kind == Entry::Kind::kTensor && item.rank == 0) {
      parts.push_back(Add("Unsqueeze", {item.name, Ints({0}).name}, 1, TensorProto::INT64).name);
    } else {
      throw Unsupported("a shape element that is not a size");
    }
  }
  return Add("Concat", parts, 1, TensorProto::INT64,
             [](onnx::NodeProto& n) { SetInt(n, "axis", 0); });
}

int OnnxGraph::ShapeLength(const Entry& list) {
  if (list.kind == Entry::Kind::kStatic && list.value.isIntList()) {
    return static_cast<int>(list.value.toIntVector().size());
  }
  return list.kind == Entry::Kind::kList ? static_cast<int>(list.items.size()) : -1;
}

Entry OnnxGraph::Size(const Entry& x, int64_t dim) {
  const Entry shape = Add("Shape", {x.name}, 1, TensorProto::INT64);
  const Entry index = Constant(torch::scalar_tensor(dim, torch::kLong));
  return Add("Gather", {shape.name, index.name}, 0, TensorProto::INT64,
             [](onnx::NodeProto& n) { SetInt(n, "axis", 0); });
}

Entry OnnxGraph::Concat(const std::vector<Entry>& parts, int64_t axis) {
  std::vector<std::string> names;
  for (const Entry& part : parts) names.push_back(part.name);
  return Add("Concat", names, parts.empty() ? -1 : parts[0].rank, parts.empty() ? 1 : parts[0].elem,
             [&](onnx::NodeProto& n) { SetInt(n, "axis", axis); });
}

Entry OnnxGraph::Transpose(const Entry& x, const std::vector<int64_t>& perm) {
  return Add("Transpose", {x.name}, static_cast<int>(perm.size()), x.elem,
             [&](onnx::NodeProto& n) { SetInts(n, "perm", perm); });
}

Entry OnnxGraph::Unsqueeze(const Entry& x, int64_t dim) {
  const int rank = x.rank < 0 ? -1 : x.rank + 1;
  return Add("Unsqueeze", {x.name, Ints({dim}).name}, rank, x.elem);
}

Entry OnnxGraph::Squeeze(const Entry& x, int64_t dim) {
  const int rank = x.rank < 0 ? -1 : x.rank - 1;
  return Add("Squeeze", {x.name, Ints({dim}).name}, rank, x.elem);
}

std::vector<Entry> OnnxGraph::Split(const Entry& x, int64_t dim, int64_t parts) {
  onnx::NodeProto* node = graph_.add_node();
  node->set_op_type("Split");
  node->set_name(Fresh("Split"));
  node->add_input(x.name);
  SetInt(*node, "axis", dim);
  std::vector<Entry> outputs;
  for (int64_t i = 0; i < parts; ++i) {
    Entry out;
    out.kind = Entry::Kind::kTensor;
    out.name = Fresh("Split_out");
    out.rank = x.rank;
    out.elem = x.elem;
    node->add_output(out.name);
    outputs.push_back(out);
  }
  return outputs;
}

Entry OnnxGraph::Expand(const Entry& x, const Entry& sizes) {
  // ONNX's Expand broadcasts: a 1 keeps the input's dimension, as torch's -1 does.
  Entry shape = sizes;
  if (shape.kind == Entry::Kind::kStatic && shape.value.isIntList()) {
    std::vector<int64_t> values = shape.value.toIntVector();
    for (int64_t& v : values) v = v == -1 ? 1 : v;
    shape = Entry::Static(values);
  } else if (shape.kind == Entry::Kind::kList) {
    for (Entry& item : shape.items) {
      if (item.kind == Entry::Kind::kStatic && item.value.isInt() && item.value.toInt() == -1) {
        item = Entry::Static(int64_t{1});
      }
    }
  }
  return Add("Expand", {x.name, ShapeTensor(shape).name}, ShapeLength(shape), x.elem);
}

Entry OnnxGraph::Slice(const Entry& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  return Add("Slice",
             {x.name, Ints({start}).name, Ints({end}).name, Ints({dim}).name, Ints({step}).name},
             x.rank, x.elem);
}

Entry OnnxGraph::Select(const Entry& x, int64_t dim, int64_t index) {
  const Entry at = Constant(torch::scalar_tensor(index, torch::kLong));
  return Add("Gather", {x.name, at.name}, x.rank < 0 ? -1 : x.rank - 1, x.elem,
             [&](onnx::NodeProto& n) { SetInt(n, "axis", dim); });
}

}  // namespace ompq::engine
