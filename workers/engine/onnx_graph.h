// Building an ONNX graph (opset 13) for the TorchScript translation of onnx_export.cc: the
// values it passes around, initializers, and one call per ONNX pattern the export emits
// (the QDQ weight and activation forms among them).
#ifndef OMPQ_WORKERS_ENGINE_ONNX_GRAPH_H_
#define OMPQ_WORKERS_ENGINE_ONNX_GRAPH_H_

#include <onnx/onnx_pb.h>
#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// What the translation cannot express; the message names the op and its module.
class Unsupported : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A TorchScript value during translation: known at export time (constants, module
/// attributes and what is computed from them only), an ONNX tensor, or a list of either.
struct Entry {
  enum class Kind { kStatic, kTensor, kList };
  Kind kind = Kind::kStatic;
  c10::IValue value;                        // kStatic.
  std::string name;                         // kTensor: the ONNX value.
  int rank = -1;                            // kTensor: -1 when unknown.
  int32_t elem = onnx::TensorProto::FLOAT;  // kTensor: element type.
  std::optional<float> act_scale;  // kTensor: the scale when it is a dequantized activation.
  std::vector<Entry> items;        // kList.

  static Entry Static(c10::IValue v) {
    Entry e;
    e.value = std::move(v);
    return e;
  }
};

struct ConvAttributes {
  int64_t spatial = 2;
  std::vector<int64_t> stride, padding, dilation;  // One value stands for every dimension.
  int64_t groups = 1;
};

struct PoolAttributes {
  bool max = true;
  std::vector<int64_t> kernel, stride, padding, dilation;  // Empty stride: the kernel.
  bool ceil_mode = false;
  bool count_include_pad = true;
};

class OnnxGraph {
 public:
  /// `signed_int8`: activations as int8 with zero point 0 and float biases (the TensorRT
  /// profile); uint8 activations with their zero points and int32 biases otherwise.
  OnnxGraph(onnx::GraphProto& graph, bool signed_int8) : graph_(graph), signed_int8_(signed_int8) {}

  /// The model input, [batch, sample_shape...] with a symbolic batch.
  Entry Input(const std::string& name, const std::vector<int64_t>& sample_shape);
  /// Makes `value` the graph output `name`, declared by DeclareOutput.
  void Output(const Entry& value, const std::string& name);
  /// Declares the output in `model` (this graph's model) with its inferred type and shape.
  void DeclareOutput(onnx::ModelProto& model);

  /// An initializer (float64 stored as float32), named `name` or a fresh name; the same
  /// unnamed tensor twice gives one initializer.
  Entry Constant(const torch::Tensor& tensor, const std::string& name = "");
  Entry Scalar(double value, int32_t elem);
  Entry Ints(const std::vector<int64_t>& values);

  /// int8 codes (b-bit codes - 2^(b-1)) named `key` (the weight's state_dict key), with
  /// "<key>.scale" and "<key>.zero_point" per channel, dequantized along axis 0. INVALID_ARGUMENT
  /// when the weight is off its grid, or (signed int8) when a zero point is not 0.
  absl::StatusOr<Entry> DequantizedWeight(const torch::Tensor& weight, const QuantParams& params,
                                          const std::string& key);
  /// int32 codes of `bias` at scale act_scale * weight scale, dequantized; nullopt where the
  /// bias is not on that grid (quant_layers.h QuantizeBiases) or would overflow int32, and
  /// always with signed int8 (TensorRT takes float biases).
  std::optional<Entry> DequantizedBias(const torch::Tensor& bias, float act_scale,
                                       const QuantParams& weight, const std::string& name);
  /// torch's fake_quantize_per_tensor_affine: Q -> Clip -> DQ (codes of at most 8 bits),
  /// else the same rounding in float ops. With signed int8: Clip (float) -> Q -> DQ, and
  /// Unsupported for a grid that is not symmetric. The result is named `name` when not empty.
  Entry FakeQuantize(const Entry& x, double scale, int64_t zero_point, int64_t quant_min,
                     int64_t quant_max, const std::string& name);

  Entry Conv(const Entry& x, const Entry& w, const std::optional<Entry>& b,
             const ConvAttributes& conv);
  /// x W^T + b: Gemm for a matrix input, MatMul (+ Add) otherwise.
  Entry Linear(const Entry& x, const Entry& w, const std::optional<Entry>& b, int rank);
  Entry BatchNorm(const Entry& x, const torch::Tensor& weight, const torch::Tensor& bias,
                  const torch::Tensor& mean, const torch::Tensor& var, double eps);

  Entry Unary(const std::string& op, const Entry& x);
  /// Elementwise (numpy broadcasting) or MatMul; the rank is the larger one.
  Entry Binary(const std::string& op, const Entry& a, const Entry& b);
  Entry Clip(const Entry& x, std::optional<double> lo, std::optional<double> hi);
  Entry HardSigmoid(const Entry& x);  // torch's: relu6(x + 3) / 6.
  Entry Gelu(const Entry& x);         // The exact (erf) form.
  Entry Softmax(const Entry& x, int64_t axis, bool log);
  /// torch's layer_norm over the last `dims` axes, decomposed (LayerNormalization is
  /// opset 17). weight/bias may be undefined.
  Entry LayerNorm(const Entry& x, int64_t dims, const torch::Tensor& weight,
                  const torch::Tensor& bias, double eps);

  Entry Pool(const Entry& x, const PoolAttributes& pool);
  /// ReduceMean/ReduceSum over `axes` (all when empty); ReduceSum takes them as an input.
  Entry Reduce(const std::string& op, const Entry& x, const std::vector<int64_t>& axes, bool keep,
               bool axes_as_input);
  Entry Flatten(const Entry& x, int64_t axis);
  Entry Reshape(const Entry& x, const Entry& shape, int rank);
  /// A list of ints, static or with sizes computed at run time, as a 1-D int64 tensor.
  Entry ShapeTensor(const Entry& list);
  int ShapeLength(const Entry& list);
  /// x.size(dim) as a 0-d int64 tensor.
  Entry Size(const Entry& x, int64_t dim);
  Entry Concat(const std::vector<Entry>& parts, int64_t axis);
  Entry Transpose(const Entry& x, const std::vector<int64_t>& perm);
  Entry Unsqueeze(const Entry& x, int64_t dim);
  Entry Squeeze(const Entry& x, int64_t dim);
  /// `parts` equal parts along `dim` (torch.chunk of a divisible size).
  std::vector<Entry> Split(const Entry& x, int64_t dim, int64_t parts);
  /// torch's x.expand(sizes): -1 keeps a dimension.
  Entry Expand(const Entry& x, const Entry& sizes);
  /// x[start:end:step] along `dim` (torch's aten::slice).
  Entry Slice(const Entry& x, int64_t dim, int64_t start, int64_t end, int64_t step);
  /// x.select(dim, index): the dimension is removed.
  Entry Select(const Entry& x, int64_t dim, int64_t index);

 private:
  using Attributes = std::function<void(onnx::NodeProto&)>;
  std::string Fresh(const std::string& hint);
  // Adds a node; its one output is `name` (fresh when empty) of the given rank and type.
  Entry Add(const std::string& op, const std::vector<std::string>& inputs, int rank, int32_t elem,
            const Attributes& attributes = nullptr, const std::string& name = "");
  void Initializer(const torch::Tensor& tensor, const std::string& name);

  onnx::GraphProto& graph_;
  const bool signed_int8_;
  std::string output_;
  int output_rank_ = -1;
  std::unordered_map<std::string, int> counters_;
  // Unnamed constants by tensor, which is held so that its address is not reused.
  std::unordered_map<const void*, std::pair<torch::Tensor, Entry>> constants_;
};

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_ONNX_GRAPH_H_
