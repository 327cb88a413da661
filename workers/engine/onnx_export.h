// model_quantized.onnx (PRODUCT.md "Artifacts"): the exported TorchScript graph translated,
// in C++, into ONNX (opset 13) in QDQ form, so that ONNX Runtime, TensorRT and OpenVINO run
// the quantized model without rebuilding it.
//
//   weights      int8 initializers named by state_dict key ("<layer>.weight") holding the b-bit
//   codes shifted by
//                -128 (exact: codes of at most 8 bits fit), per-channel scale and zero point,
//                DequantizeLinear(axis=0). Wider weights stay float (their dequantized values).
//   activations  each aten::fake_quantize_per_tensor_affine of the exported graph becomes
//                QuantizeLinear -> Clip to the b-bit code range (below 8 bits; a plain Q->DQ
//                saturates at the uint8 range) -> DequantizeLinear; its output is named
//                "<layer>.input" as in encodings.json. Above 8 bits the same rounding in float
//                ops (Q/DQ hold at most 8 bits at opset 13).
//   biases       of a layer whose input is fake-quantized: DequantizeLinear of int32 codes at
//                scale s_x * s_w (per channel), the form runtimes fuse into integer kernels.
//   BatchNorm    folded into its layer at quantization; the x + shift it leaves joins the bias.
//   tensorrt     (ExportProfile::kTensorRt, symmetric grids) the form TensorRT's ONNX parser
//                takes: activations Clip (float, below 8 bits) -> QuantizeLinear(int8, zero
//                point 0) -> DequantizeLinear; weights' zero points are 0; biases stay float.
//
// The translation covers the ops of the supported CNN families (convolutions, linear and
// matmul, activations, elementwise arithmetic, pools, means, flatten/reshape/view, concat,
// split/chunk, transpose/permute, softmax, shape arithmetic); anything else is refused
// with the op and the module path it sits in. The result passes onnx::checker and ONNX
// shape inference before it is returned.
#ifndef OMPQ_WORKERS_ENGINE_ONNX_EXPORT_H_
#define OMPQ_WORKERS_ENGINE_ONNX_EXPORT_H_

#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// The opset the export targets (per-channel DequantizeLinear needs 13).
inline constexpr int64_t kOnnxOpset = 13;

struct OnnxExportInput {
  const torch::jit::Module* module = nullptr;
  torch::jit::Graph* graph = nullptr;  // module's forward, inlined and static ifs folded.
  // The weight quantizer of each quantized layer, by layer name (graph_layers.h names).
  std::unordered_map<std::string, QuantParams> weights;
  std::vector<int64_t> sample_shape;  // One input without the batch dimension.
  // kTensorRt: int8 activations with zero point 0 (a float Clip before the Q below 8 bits,
  // where TensorRT's parser keeps it) and float biases; the model must have been quantized
  // on that profile's symmetric grid.
  ExportProfile profile = ExportProfile::kDefault;
};

/// The serialized ONNX model. FAILED_PRECONDITION naming the op and its module path when
/// the graph holds something the translation does not know (the caller reports it and
/// goes on); INTERNAL when the result fails onnx::checker or shape inference.
absl::StatusOr<std::string> ExportOnnx(const OnnxExportInput& input);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_ONNX_EXPORT_H_
