#include "workers/engine/quant_layers.h"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/ir/ir.h>

#include <algorithm>
#include <atomic>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/graph_layers.h"

namespace ompq::engine {
namespace {

using torch::jit::Node;
using torch::jit::Value;

std::optional<std::vector<int64_t>> IntList(const std::optional<c10::IValue>& value) {
  if (!value.has_value()) return std::nullopt;
  if (value->isIntList()) return value->toIntVector();
  if (value->isInt()) return std::vector<int64_t>{value->toInt()};
  if (value->isTuple()) {
    std::vector<int64_t> out;
    for (const c10::IValue& element : value->toTupleRef().elements()) {
      if (!element.isInt()) return std::nullopt;
      out.push_back(element.toInt());
    }
    return out;
  }
  return std::nullopt;
}

// How the site's op applies its weight, or why it cannot be replayed (parameters that are
// not static: the layer then keeps nearest rounding).
absl::StatusOr<LayerOp> LayerOpOf(const LayerSiteNode& site, const torch::jit::Module& module,
                                  const Value* self) {
  LayerOp op;
  if (site.kind == "linear") {
    op.kind = LayerOp::Kind::kLinear;
    return op;
  }
  op.kind = LayerOp::Kind::kConv;
  Node* node = site.node;
  const std::string name = node->kind().toQualString();
  const bool functional =
      name == "aten::conv1d" || name == "aten::conv2d" || name == "aten::conv3d";
  const size_t groups_index = functional ? 6 : 8;
  if (node->inputs().size() <= groups_index) {
    return absl::InvalidArgumentError(absl::StrCat(name, " has too few inputs"));
  }
  auto int_list = [&](size_t index, const char* what) -> absl::StatusOr<std::vector<int64_t>> {
    std::optional<std::vector<int64_t>> list =
        IntList(StaticValue(node->input(index), module, self));
    if (!list) return absl::InvalidArgumentError(absl::StrCat(what, " is not static"));
    return *list;
  };
  ASSIGN_OR_RETURN(op.stride, int_list(3, "stride"));
  ASSIGN_OR_RETURN(op.padding, int_list(4, "padding"));
  ASSIGN_OR_RETURN(op.dilation, int_list(5, "dilation"));
  std::optional<c10::IValue> groups = StaticValue(node->input(groups_index), module, self);
  if (!groups || !groups->isInt()) return absl::InvalidArgumentError("groups is not static");
  op.groups = groups->toInt();
  if (!functional) {
    ASSIGN_OR_RETURN(std::vector<int64_t> output_padding, int_list(7, "output_padding"));
    for (int64_t p : output_padding) {
      if (p != 0) return absl::InvalidArgumentError("output_padding is not zero");
    }
  }
  return op;
}

}  // namespace

// A constant of the graph, or a module attribute reached by a GetAttr chain from self.
std::optional<c10::IValue> StaticValue(Value* value, const torch::jit::Module& module,
                                       const Value* self) {
  // c10::optional, not std::optional: an empty c10::optional converts to an engaged
  // std::optional holding None.
  if (c10::optional<c10::IValue> constant = torch::jit::toIValue(value)) return *constant;
  // Traced graphs build int lists (stride, padding...) from constants.
  const Node* node = value->node();
  if (node->kind() == torch::jit::prim::ListConstruct ||
      node->kind() == torch::jit::prim::TupleConstruct) {
    std::vector<int64_t> ints;
    for (Value* input : value->node()->inputs()) {
      std::optional<c10::IValue> element = StaticValue(input, module, self);
      if (!element.has_value() || !element->isInt()) return std::nullopt;
      ints.push_back(element->toInt());
    }
    return c10::IValue(ints);
  }
  std::optional<std::vector<std::string>> path = AttributePath(value, self);
  if (!path.has_value() || path->empty()) return std::nullopt;
  c10::intrusive_ptr<c10::ivalue::Object> object = module._ivalue();
  for (size_t i = 0; i < path->size(); ++i) {
    c10::optional<size_t> slot = object->type()->findAttributeSlot((*path)[i]);
    if (!slot.has_value()) return std::nullopt;
    c10::IValue attribute = object->getSlot(*slot);
    if (i + 1 == path->size()) return attribute;
    if (!attribute.isObject()) return std::nullopt;
    object = attribute.toObject();
  }
  return std::nullopt;
}

std::optional<BatchNormParams> InferenceBatchNorm(const LayerSiteNode& site,
                                                  const torch::jit::Module& module,
                                                  const Value* self, bool layer_has_bias) {
  // aten::batch_norm(input, weight, bias, running_mean, running_var, training, momentum,
  // eps, cudnn_enabled)
  Node* bn = site.batch_norm;
  if (bn == nullptr || bn->inputs().size() < 8) return std::nullopt;
  auto tensor_at = [&](int i) -> torch::Tensor {
    auto path = AttributePath(bn->input(i), self);
    if (!path) return torch::Tensor();
    auto t = ResolveTensor(module, *path, false);
    return t ? *t : torch::Tensor();
  };
  std::optional<c10::IValue> training = StaticValue(bn->input(5), module, self);
  std::optional<c10::IValue> eps = StaticValue(bn->input(7), module, self);
  BatchNormParams params;
  params.weight = tensor_at(1);
  params.bias = tensor_at(2);
  params.running_mean = tensor_at(3);
  params.running_var = tensor_at(4);
  const bool inference = !training.has_value() || (training->isBool() && !training->toBool());
  // Folding needs somewhere to put the folded bias: the BatchNorm's shift or the layer's.
  if (!params.running_mean.defined() || !params.running_var.defined() || !eps ||
      !eps->isDouble() || !inference || (!params.bias.defined() && !layer_has_bias)) {
    return std::nullopt;
  }
  params.eps = eps->toDouble();
  return params;
}

absl::StatusOr<std::vector<QuantLayer>> PlanLayers(
    ProbedModel& work, const std::unordered_map<std::string, int>& bits) {
  std::vector<QuantLayer> layers;
  std::unordered_map<std::string, size_t> index;
  const torch::jit::Module& module = work.module();
  const Value* self = work.self();
  absl::Status failure;
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kInternal, reason::kInternal, "cannot prepare the layers", [&] {
        torch::NoGradGuard no_grad;
        for (size_t s = 0; s < work.sites().size(); ++s) {
          const LayerSiteNode& site = work.sites()[s];
          auto found = bits.find(site.name);
          if (found == bits.end()) continue;  // Did not run in the search's pass.
          auto [it, inserted] = index.emplace(site.name, layers.size());
          if (!inserted) {
            layers[it->second].sites.push_back(static_cast<int>(s));
            continue;
          }
          QuantLayer layer;
          layer.name = site.name;
          layer.weight_key = site.weight_key;
          layer.kind = site.kind;
          layer.bits = found->second;
          layer.sites.push_back(static_cast<int>(s));
          layer.weight = *ResolveTensor(module, site.weight_path, true);
          if (site.bias_path) layer.bias = *ResolveTensor(module, *site.bias_path, false);
          absl::StatusOr<LayerOp> op = LayerOpOf(site, module, self);
          if (op.ok()) {
            layer.op = *op;
          } else {
            layer.note = absl::StrCat(op.status().message(), ": nearest rounding");
          }
          layer.fp_weight = layer.weight.detach().to(torch::kFloat).clone();
          layer.fp_bias = layer.bias.defined() ? layer.bias.detach().to(torch::kFloat).clone()
                                               : torch::Tensor();
          if (std::optional<BatchNormParams> bn =
                  InferenceBatchNorm(site, module, self, layer.bias.defined())) {
            layer.bn_weight = bn->weight;
            layer.bn_bias = bn->bias;
            layer.bn_mean = bn->running_mean;
            layer.bn_var = bn->running_var;
            layer.bn_eps = bn->eps;
            absl::StatusOr<FoldedLayer> folded = FoldBatchNorm(layer.fp_weight, layer.fp_bias, *bn);
            if (folded.ok()) {
              layer.fp_weight = folded->weight.to(torch::kFloat);
              layer.fp_bias = folded->bias.to(torch::kFloat);
              layer.folded = true;
            } else {
              failure = folded.status();
            }
          }
          layers.push_back(std::move(layer));
        }
      }));
  RETURN_IF_ERROR(failure);
  if (layers.empty()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNoQuantizableLayers,
                      "none of the searched layers were found in the model's graph");
  }
  return layers;
}

// Puts the layer's quantized weight (BatchNorm folded) into the working model.
void InstallWeight(QuantLayer& layer, const torch::Tensor& quantized) {
  torch::NoGradGuard no_grad;
  layer.weight.copy_(quantized);
  if (!layer.folded) return;
  // The BatchNorm becomes x + bias: mean 0, variance 1 - eps, scale 1, shift = the folded
  // bias (or the layer's own bias carries it when the BatchNorm has no shift).
  if (layer.bn_bias.defined()) {
    layer.bn_bias.copy_(layer.fp_bias);
    if (layer.bias.defined()) layer.bias.zero_();
  } else {
    layer.bias.copy_(layer.fp_bias);
  }
  if (layer.bn_weight.defined()) layer.bn_weight.fill_(1.0);
  layer.bn_mean.zero_();
  layer.bn_var.fill_(1.0 - layer.bn_eps);
}
absl::StatusOr<int64_t> CalibrateActivations(ProbedModel& work,
                                             const std::vector<QuantLayer>& layers,
                                             const torch::Tensor& calib, int act_bits,
                                             ExportProfile profile, int64_t max_capture_bytes,
                                             const std::function<bool(int, int)>& progress) {
  // The pass holds the whole batch.
  ASSIGN_OR_RETURN(const int64_t largest_input, work.LargestSiteInputPerSample(calib));
  const int64_t pass_samples = std::min<int64_t>(
      calib.size(0),
      std::max<int64_t>(2, (max_capture_bytes / 2) / std::max<int64_t>(1, largest_input)));
  CalibrationPlan plan;
  plan.sites.assign(work.sites().size(), false);
  plan.names.resize(work.sites().size());
  int planned_sites = 0;
  for (const QuantLayer& layer : layers) {
    for (int site : layer.sites) {
      plan.sites[site] = true;
      plan.names[site] = layer.name;
      ++planned_sites;
    }
  }
  plan.options.bits = act_bits;
  plan.options.symmetric = SymmetricGrid(profile);
  plan.progress = [&](int fitted) { return !progress || progress(fitted, planned_sites); };
  RETURN_IF_ERROR(work.Calibrate(calib.narrow(0, 0, pass_samples), std::move(plan)));
  return pass_samples;
}

int QuantizeBiases(std::vector<QuantLayer>& layers, const ProbeSession& session) {
  torch::NoGradGuard no_grad;
  int rounded = 0;
  for (QuantLayer& layer : layers) {
    if (layer.sites.size() != 1 || layer.bits > 8 || !layer.weight_params.scale.defined()) {
      continue;
    }
    const std::optional<ActQuant> act = session.activation(layer.sites[0]);
    if (!act.has_value() || act->params.bits > 8) continue;
    // The bias the layer adds: a folded BatchNorm's shift, else the layer's own.
    torch::Tensor& bias = layer.folded && layer.bn_bias.defined() ? layer.bn_bias : layer.bias;
    if (!bias.defined()) continue;
    const torch::Tensor scale =
        layer.weight_params.scale.to(torch::kFloat) * static_cast<float>(act->scale);
    if (!(scale > 0).all().item<bool>()) continue;
    const torch::Tensor b = bias.detach().to(torch::kCPU, torch::kDouble);
    const torch::Tensor codes = torch::round(b / scale.to(torch::kDouble));
    if ((torch::abs(codes) > (int64_t{1} << 30)).any().item<bool>()) continue;
    bias.copy_((codes.to(torch::kFloat) * scale).to(bias.device(), bias.scalar_type()));
    ++rounded;
  }
  return rounded;
}

absl::Status FitWeights(std::vector<QuantLayer>& layers, ExportProfile profile) {
  // Largest first, each layer on one thread: the cores stay busy to the end, and a
  // layer's search runs the same ops as alone (its result does not depend on the split).
  std::vector<size_t> order(layers.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return layers[a].fp_weight.numel() > layers[b].fp_weight.numel();
  });
  std::vector<absl::Status> status(layers.size());
  std::atomic<size_t> next{0};
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), layers.size());
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    // Inside the parallel region LibTorch runs each op on this thread alone.
    for (size_t k = next++; k < order.size(); k = next++) {
      QuantLayer& layer = layers[order[k]];
      status[order[k]] = [&]() -> absl::Status {
        torch::NoGradGuard no_grad;
        ASSIGN_OR_RETURN(
            layer.weight_params,
            FitWeightQuantizer(layer.fp_weight, WeightQuantizerOptions(layer.bits, profile)));
        ASSIGN_OR_RETURN(layer.codes, Quantize(layer.fp_weight, layer.weight_params));
        ASSIGN_OR_RETURN(torch::Tensor dequantized,
                         Dequantize(layer.codes, layer.weight_params, layer.weight.scalar_type()));
        layer.nearest_weight = dequantized.to(layer.weight.device());
        InstallWeight(layer, layer.nearest_weight);
        return absl::OkStatus();
      }();
    }
  });
  for (const absl::Status& s : status) RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

}  // namespace ompq::engine
