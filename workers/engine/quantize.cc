#include "workers/engine/quantize.h"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/library.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/adaround.h"
#include "workers/engine/brecq.h"
#include "workers/engine/encodings.h"
#include "workers/engine/graph_layers.h"
#include "workers/engine/qat.h"
#include "workers/engine/quantizer.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

using Clock = std::chrono::steady_clock;
using torch::jit::Node;
using torch::jit::Value;

constexpr char kProbeOp[] = "ompq::act_probe";
constexpr char kWeightProbeOp[] = "ompq::weight_probe";
constexpr char kModelFile[] = "model_quantized.pt";
constexpr char kEncodingsFile[] = "encodings.json";
// Samples per forward pass while capturing inputs and evaluating: bounds the memory of
// one pass without making passes too small to run efficiently.
constexpr int64_t kForwardBatch = 128;

// Multiply-adds per AdaRound step below which the step runs on one thread. A step is a
// dozen small ops; with several threads each op opens an OpenMP region that waits for
// every thread, which on a busy machine costs far more than the work (measured: a 5-layer
// model's default PTQ took minutes at load 20; docs/benchmarks.md has the same effect
// for the Gram work).
constexpr int64_t kSingleThreadStepMacs = int64_t{64} << 20;

// Sets LibTorch's intra-op thread count for a scope.
class IntraOpThreads {
 public:
  explicit IntraOpThreads(int threads) : saved_(at::get_num_threads()) {
    if (threads != saved_) at::set_num_threads(threads);
  }
  ~IntraOpThreads() {
    if (at::get_num_threads() != saved_) at::set_num_threads(saved_);
  }
  IntraOpThreads(const IntraOpThreads&) = delete;
  IntraOpThreads& operator=(const IntraOpThreads&) = delete;

 private:
  int saved_;
};

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

absl::Status Cancelled() {
  return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled,
                    "quantization was cancelled");
}

// ---------------------------------------------------------------------------------------
// The probe op: sits at the input of every layer call site. It captures that input when
// asked (optionally stopping the forward pass there: later layers are not needed) and
// applies the site's activation quantizer once one is fitted.

struct ActQuant {
  QuantParams params;  // Per tensor.
  double scale = 1;
  int64_t zero_point = 0;
};

class ProbeSession {
 public:
  explicit ProbeSession(size_t sites) : act_(sites) {}

  // Runs inside the forward pass; throwing stops it.
  at::Tensor OnProbe(int64_t site, const at::Tensor& x) {
    absl::MutexLock lock(&mutex_);
    if (site < 0 || site >= static_cast<int64_t>(act_.size())) return x;
    if (site == capture_site_ && !captured_.defined()) {
      captured_ = x.detach().to(torch::kCPU, torch::kFloat).contiguous().clone();
      if (stop_after_capture_) {
        stopped_ = true;
        TORCH_CHECK(false, "ompq: input captured");
      }
    }
    if (!learned_act_.empty() && learned_act_[site] != nullptr && x.is_floating_point()) {
      return learned_act_[site]->Apply(x);
    }
    const std::optional<ActQuant>& q = act_[site];
    if (!q.has_value() || !x.is_floating_point()) return x;
    return at::fake_quantize_per_tensor_affine(x, q->scale, q->zero_point,
                                               q->params.quant_min(), q->params.quant_max());
  }

  // The weight of the layer at `site` as the forward pass uses it: fake-quantized by the
  // learned quantizer during QAT, as stored otherwise (the installed weight is already on
  // its grid).
  at::Tensor OnWeight(int64_t site, const at::Tensor& w) {
    absl::MutexLock lock(&mutex_);
    if (site < 0 || site >= static_cast<int64_t>(learned_weight_.size()) ||
        learned_weight_[site] == nullptr) {
      return w;
    }
    return learned_weight_[site]->Apply(w);
  }

  // QAT: learned quantizers per site (null: none) replace the fixed activation quantizers
  // and quantize the weights until ClearLearned. The caller keeps them alive until then.
  void SetLearned(std::vector<const LsqQuantizer*> act, std::vector<const LsqQuantizer*> weight) {
    absl::MutexLock lock(&mutex_);
    learned_act_ = std::move(act);
    learned_weight_ = std::move(weight);
  }
  void ClearLearned() {
    absl::MutexLock lock(&mutex_);
    learned_act_.clear();
    learned_weight_.clear();
  }

  void SetActivation(int site, std::optional<ActQuant> q) {
    absl::MutexLock lock(&mutex_);
    act_[site] = std::move(q);
  }
  std::optional<ActQuant> activation(int site) const {
    absl::MutexLock lock(&mutex_);
    return act_[site];
  }
  void StartCapture(int site, bool stop_after) {
    absl::MutexLock lock(&mutex_);
    capture_site_ = site;
    stop_after_capture_ = stop_after;
    captured_ = torch::Tensor();
    stopped_ = false;
  }
  // The captured input (undefined when the site did not run) and whether the pass was
  // stopped on purpose.
  std::pair<torch::Tensor, bool> FinishCapture() {
    absl::MutexLock lock(&mutex_);
    capture_site_ = -1;
    std::pair<torch::Tensor, bool> result{captured_, stopped_};
    captured_ = torch::Tensor();
    stopped_ = false;
    return result;
  }

 private:
  mutable absl::Mutex mutex_;
  std::vector<std::optional<ActQuant>> act_ ABSL_GUARDED_BY(mutex_);
  std::vector<const LsqQuantizer*> learned_act_ ABSL_GUARDED_BY(mutex_);
  std::vector<const LsqQuantizer*> learned_weight_ ABSL_GUARDED_BY(mutex_);
  int capture_site_ ABSL_GUARDED_BY(mutex_) = -1;
  bool stop_after_capture_ ABSL_GUARDED_BY(mutex_) = false;
  bool stopped_ ABSL_GUARDED_BY(mutex_) = false;
  torch::Tensor captured_ ABSL_GUARDED_BY(mutex_);
};

absl::Mutex probe_registry_mutex;
std::unordered_map<int64_t, ProbeSession*>& ProbeRegistry()
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(probe_registry_mutex) {
  static auto* registry = new std::unordered_map<int64_t, ProbeSession*>();
  return *registry;
}
std::atomic<int64_t> next_probe_session{1};

// The session a probe op belongs to, or null once it has ended (the op passes through).
ProbeSession* FindProbeSession(int64_t session) {
  absl::MutexLock lock(&probe_registry_mutex);
  auto it = ProbeRegistry().find(session);
  return it != ProbeRegistry().end() ? it->second : nullptr;
}

at::Tensor ProbeOp(const at::Tensor& x, int64_t session, int64_t site) {
  ProbeSession* probe = FindProbeSession(session);
  return probe != nullptr ? probe->OnProbe(site, x) : x;
}

at::Tensor WeightProbeOp(const at::Tensor& w, int64_t session, int64_t site) {
  ProbeSession* probe = FindProbeSession(session);
  return probe != nullptr ? probe->OnWeight(site, w) : w;
}

// Kernels given to def() without a dispatch key are CompositeImplicitAutograd: autograd
// records the ops they call, so QAT's gradients flow through both probes.
TORCH_LIBRARY_FRAGMENT(ompq, m) {
  m.def("act_probe(Tensor x, int session, int site) -> Tensor", ProbeOp);
  m.def("weight_probe(Tensor w, int session, int site) -> Tensor", WeightProbeOp);
}

// A model whose forward graph (inlined) carries a probe at every layer call site.
class ProbedModel {
 public:
  static absl::StatusOr<std::unique_ptr<ProbedModel>> Create(LoadedModel loaded) {
    std::unique_ptr<ProbedModel> model(new ProbedModel());
    model->module_ = std::move(loaded.module);
    model->device_ = loaded.device;
    c10::optional<torch::jit::Method> forward = model->module_.find_method("forward");
    if (!forward.has_value()) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
                        "the model has no forward method");
    }
    const c10::FunctionSchema& schema = forward->function().getSchema();
    for (size_t i = 2; i < schema.arguments().size(); ++i) {
      if (!schema.arguments()[i].default_value().has_value()) {
        return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                          "the model's forward needs more than one input");
      }
      model->extra_args_.push_back(*schema.arguments()[i].default_value());
    }
    RETURN_IF_ERROR(CallTorch(
        absl::StatusCode::kInternal, reason::kInternal, "cannot rewrite the forward graph", [&] {
          model->graph_ = forward->graph()->copy();
          torch::jit::Inline(*model->graph_);
          FoldStaticIfs(*model->graph_, model->module_);  // Each layer call once (graph_layers.h).
          model->sites_ = FindLayerSites(*model->graph_, model->module_);
          torch::jit::Graph& graph = *model->graph_;
          const c10::Symbol probe = c10::Symbol::fromQualString(kProbeOp);
          const c10::Symbol weight_probe = c10::Symbol::fromQualString(kWeightProbeOp);
          for (size_t i = 0; i < model->sites_.size(); ++i) {
            Node* node = model->sites_[i].node;
            torch::jit::WithInsertPoint insert_point(node);
            Value* session = graph.insertConstant(model->session_id_);
            Value* site = graph.insertConstant(static_cast<int64_t>(i));
            Node* call = graph.insertNode(graph.create(probe, {node->input(0), session, site}, 1));
            call->output()->setType(node->input(0)->type());
            node->replaceInput(0, call->output());
            // Input 1 of every layer op (conv*, _convolution, linear) is its weight.
            Node* weight = graph.insertNode(
                graph.create(weight_probe, {node->input(1), session, site}, 1));
            weight->output()->setType(node->input(1)->type());
            node->replaceInput(1, weight->output());
          }
          graph.lint();
          model->function_ = std::make_unique<torch::jit::GraphFunction>(
              "ompq_probed_forward", model->graph_, nullptr,
              torch::jit::ExecutorExecutionMode::SIMPLE);
        }));
    model->session_ = std::make_unique<ProbeSession>(model->sites_.size());
    absl::MutexLock lock(&probe_registry_mutex);
    ProbeRegistry()[model->session_id_] = model->session_.get();
    return model;
  }

  ~ProbedModel() {
    absl::MutexLock lock(&probe_registry_mutex);
    ProbeRegistry().erase(session_id_);
  }
  ProbedModel(const ProbedModel&) = delete;
  ProbedModel& operator=(const ProbedModel&) = delete;

  torch::jit::Module& module() { return module_; }
  const torch::Device& device() const { return device_; }
  const std::vector<LayerSiteNode>& sites() const { return sites_; }
  torch::jit::Graph& graph() { return *graph_; }  // Inlined, with the probes.
  const Value* self() const { return graph_->inputs()[0]; }
  ProbeSession& session() { return *session_; }

  absl::StatusOr<c10::IValue> Forward(const torch::Tensor& batch) {
    std::vector<c10::IValue> args = {module_._ivalue(), batch.to(device_)};
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    c10::IValue output;
    RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                              absl::StrCat("the model rejects inputs of shape [",
                                           absl::StrJoin(batch.sizes(), ", "), "]"),
                              [&] { output = (*function_)(args); }));
    return output;
  }

  // The input of `site` for the first samples of `inputs` (at most `max_samples`, and
  // fewer when they would take more than `max_bytes`), as float32 on the CPU.
  absl::StatusOr<torch::Tensor> Capture(int site, const torch::Tensor& inputs,
                                        int64_t max_samples, int64_t max_bytes) {
    std::vector<torch::Tensor> parts;
    int64_t samples = 0, bytes = 0;
    const int64_t n = std::min<int64_t>(inputs.size(0), max_samples);
    for (int64_t start = 0; start < n; start += kForwardBatch) {
      const torch::Tensor batch = inputs.narrow(0, start, std::min(kForwardBatch, n - start));
      session_->StartCapture(site, /*stop_after=*/true);
      absl::StatusOr<c10::IValue> ran = Forward(batch);
      auto [captured, stopped] = session_->FinishCapture();
      if (!stopped && !ran.ok()) return ran.status();
      if (!captured.defined()) {
        return JobFailure(absl::StatusCode::kInternal, reason::kInternal,
                          absl::StrCat("layer '", sites_[site].name,
                                       "' did not run in the forward pass"));
      }
      if (captured.dim() < 1 || captured.size(0) != batch.size(0)) {
        return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                          absl::StrCat("the input of layer '", sites_[site].name,
                                       "' has no batch dimension of ", batch.size(0)));
      }
      const int64_t per_sample = std::max<int64_t>(1, captured[0].numel() * 4);
      int64_t take = captured.size(0);
      if (bytes + take * per_sample > max_bytes) {
        take = std::max<int64_t>(samples == 0 ? std::min<int64_t>(2, take) : 0,
                                 (max_bytes - bytes) / per_sample);
      }
      if (take <= 0) break;
      parts.push_back(captured.narrow(0, 0, take));
      samples += take;
      bytes += take * per_sample;
      if (take < captured.size(0)) break;
    }
    return torch::cat(parts, 0);
  }

 private:
  ProbedModel() = default;

  torch::jit::Module module_;
  torch::Device device_ = torch::kCPU;
  std::shared_ptr<torch::jit::Graph> graph_;
  std::unique_ptr<torch::jit::GraphFunction> function_;
  std::vector<LayerSiteNode> sites_;
  std::vector<c10::IValue> extra_args_;
  const int64_t session_id_ = next_probe_session.fetch_add(1);
  std::unique_ptr<ProbeSession> session_;
};

// ---------------------------------------------------------------------------------------
// Layers and their quantization.

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
  const bool functional = name == "aten::conv1d" || name == "aten::conv2d" || name == "aten::conv3d";
  const size_t groups_index = functional ? 6 : 8;
  if (node->inputs().size() <= groups_index) {
    return absl::InvalidArgumentError(absl::StrCat(name, " has too few inputs"));
  }
  auto int_list = [&](size_t index, const char* what) -> absl::StatusOr<std::vector<int64_t>> {
    std::optional<std::vector<int64_t>> list = IntList(StaticValue(node->input(index), module, self));
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

struct QuantLayer {
  std::string name;
  std::string kind;
  int bits = 8;
  std::vector<int> sites;  // Call sites; the first one is reconstructed.
  // The working model's tensors, changed in place.
  torch::Tensor weight;
  torch::Tensor bias;  // Undefined when the layer has none.
  bool folded = false;  // BatchNorm folded (its tensors below turned into x + bias).
  torch::Tensor bn_weight, bn_bias, bn_mean, bn_var;
  double bn_eps = 1e-5;
  // The float layer after folding: what the quantized weight approximates.
  torch::Tensor fp_weight, fp_bias;
  std::optional<LayerOp> op;
  QuantParams weight_params;
  torch::Tensor codes;
  torch::Tensor nearest_weight;  // Dequantized nearest rounding, as installed.
  // Reconstruction results.
  double mse_nearest = std::nan("");
  double mse_quantized = std::nan("");
  int64_t samples = 0;
  std::string method = "nearest";
  std::string note;
};

absl::StatusOr<std::vector<QuantLayer>> PlanLayers(ProbedModel& work,
                                                   const nlohmann::json& report) {
  std::unordered_map<std::string, int> bits;
  try {
    for (const nlohmann::json& layer : report.at("layers")) {
      bits[layer.at("name").get<std::string>()] = layer.at("bits").get<int>();
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed search report: ", e.what()));
  }
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
          // aten::batch_norm(input, weight, bias, running_mean, running_var, training,
          // momentum, eps, cudnn_enabled)
          if (Node* bn = site.batch_norm; bn != nullptr && bn->inputs().size() >= 8) {
            auto tensor_at = [&](int i) -> torch::Tensor {
              auto path = AttributePath(bn->input(i), self);
              if (!path) return torch::Tensor();
              auto t = ResolveTensor(module, *path, false);
              return t ? *t : torch::Tensor();
            };
            std::optional<c10::IValue> training = StaticValue(bn->input(5), module, self);
            std::optional<c10::IValue> eps = StaticValue(bn->input(7), module, self);
            layer.bn_weight = tensor_at(1);
            layer.bn_bias = tensor_at(2);
            layer.bn_mean = tensor_at(3);
            layer.bn_var = tensor_at(4);
            const bool inference = !training.has_value() ||
                                   (training->isBool() && !training->toBool());
            if (layer.bn_mean.defined() && layer.bn_var.defined() && eps && eps->isDouble() &&
                inference && (layer.bn_bias.defined() || layer.bias.defined())) {
              layer.bn_eps = eps->toDouble();
              BatchNormParams params{layer.bn_mean, layer.bn_var, layer.bn_weight, layer.bn_bias,
                                     layer.bn_eps};
              absl::StatusOr<FoldedLayer> folded =
                  FoldBatchNorm(layer.fp_weight, layer.fp_bias, params);
              if (folded.ok()) {
                layer.fp_weight = folded->weight.to(torch::kFloat);
                layer.fp_bias = folded->bias.to(torch::kFloat);
                layer.folded = true;
              } else {
                failure = folded.status();
              }
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

// ---------------------------------------------------------------------------------------
// BRECQ: the residual blocks the graph reveals, reconstructed jointly (brecq.h).

struct PlannedBlock {
  std::vector<int> layers;  // Indices into the layers, execution order.
  std::vector<std::string> names;  // Layer names in the block graph's weight order.
  int input_site = -1;
  std::shared_ptr<BlockGraph> quantized;  // The working model's block, weights as inputs.
  std::shared_ptr<BlockGraph> reference;  // The float model's block.
};

// Blocks whose layers are all quantized and replayable; a block that cannot be extracted
// leaves its layers to per-layer AdaRound. Both models come from one file, so their graphs
// have the same blocks.
std::vector<PlannedBlock> PlanBlocks(ProbedModel& fp, ProbedModel& work,
                                     const std::vector<QuantLayer>& layers) {
  std::vector<PlannedBlock> planned;
  const std::vector<ResidualBlock> blocks =
      FindResidualBlocks(work.graph(), work.sites(), kProbeOp);
  const std::vector<ResidualBlock> fp_blocks = FindResidualBlocks(fp.graph(), fp.sites(), kProbeOp);
  if (blocks.size() != fp_blocks.size()) return planned;
  std::unordered_map<std::string, int> layer_of;
  for (size_t l = 0; l < layers.size(); ++l) layer_of[layers[l].name] = static_cast<int>(l);
  const ActivationAt activation = [&work](int site) -> std::optional<ActFakeQuant> {
    std::optional<ActQuant> q = work.session().activation(site);
    if (!q.has_value()) return std::nullopt;
    return ActFakeQuant{q->scale, q->zero_point, q->params.quant_min(), q->params.quant_max()};
  };
  for (size_t b = 0; b < blocks.size(); ++b) {
    if (blocks[b].sites != fp_blocks[b].sites) continue;
    absl::StatusOr<BlockGraph> quantized = BlockGraph::Extract(
        work.graph(), blocks[b], work.sites(), kProbeOp, activation, /*weights_as_inputs=*/true);
    absl::StatusOr<BlockGraph> reference = BlockGraph::Extract(
        fp.graph(), fp_blocks[b], fp.sites(), kProbeOp, nullptr, /*weights_as_inputs=*/false);
    if (!quantized.ok() || !reference.ok()) continue;
    PlannedBlock block;
    block.names = quantized->layer_names();
    block.input_site = blocks[b].input_site;
    bool usable = true;
    for (const std::string& name : block.names) {
      auto it = layer_of.find(name);
      usable = usable && it != layer_of.end() && layers[it->second].op.has_value();
      if (usable) block.layers.push_back(it->second);
    }
    if (!usable) continue;
    std::sort(block.layers.begin(), block.layers.end());
    block.quantized = std::make_shared<BlockGraph>(*std::move(quantized));
    block.reference = std::make_shared<BlockGraph>(*std::move(reference));
    planned.push_back(std::move(block));
  }
  return planned;
}

// Learns the rounding of the block's layers on the block inputs the quantized model
// produces against the float model's block outputs, installs it and records the unit.
absl::Status ReconstructBlock(const PlannedBlock& block, ProbedModel& fp, ProbedModel& work,
                              std::vector<QuantLayer>& layers, const torch::Tensor& calib,
                              const QuantizeOptions& options, const ProgressCallback& progress,
                              nlohmann::json& units) {
  // Float inputs, quantized inputs and targets share the memory bound.
  const int64_t share = options.max_capture_bytes / 3;
  ASSIGN_OR_RETURN(torch::Tensor fp_inputs,
                   fp.Capture(block.input_site, calib, calib.size(0), share));
  std::vector<torch::Tensor> target_parts;
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kInvalidArgument, reason::kInputMismatch, "cannot run a residual block",
      [&] {
        const torch::Tensor first =
            block.reference->Run(fp.module(), fp_inputs.narrow(0, 0, 1).to(fp.device()));
        const int64_t per_sample = std::max<int64_t>(1, first.numel() * 4);
        const int64_t samples =
            std::max<int64_t>(std::min<int64_t>(2, fp_inputs.size(0)),
                              std::min<int64_t>(fp_inputs.size(0), share / per_sample));
        for (int64_t begin = 0; begin < samples; begin += kForwardBatch) {
          const torch::Tensor part =
              fp_inputs.narrow(0, begin, std::min(kForwardBatch, samples - begin));
          target_parts.push_back(block.reference->Run(fp.module(), part.to(fp.device())).cpu());
        }
      }));
  fp_inputs = torch::Tensor();
  torch::Tensor targets = torch::cat(target_parts, 0);
  ASSIGN_OR_RETURN(torch::Tensor q_inputs, work.Capture(block.input_site, calib, targets.size(0),
                                                        options.max_capture_bytes));
  const int64_t n = std::min(targets.size(0), q_inputs.size(0));
  auto layer_named = [&](const std::string& name) -> QuantLayer& {
    return *std::find_if(layers.begin(), layers.end(),
                         [&](const QuantLayer& l) { return l.name == name; });
  };
  std::vector<torch::Tensor> fp_weights;
  std::vector<QuantParams> params;
  int64_t fan_in = 0;
  for (const std::string& name : block.names) {
    const QuantLayer& layer = layer_named(name);
    fp_weights.push_back(layer.fp_weight.to(layer.weight.device()));
    params.push_back(layer.weight_params);
    fan_in += layer.fp_weight.numel() / layer.fp_weight.size(0);
  }
  AdaRoundOptions ada;
  ada.iters = options.iters;
  ada.seed = static_cast<uint64_t>(options.seed) * 1000003u +
             static_cast<uint64_t>(block.layers.front());
  // Rough cost of a step: every layer's fan-in at each output position of the block.
  const int64_t positions =
      targets.dim() >= 2 ? targets[0].numel() / std::max<int64_t>(1, targets.size(1)) : 1;
  const int64_t step_macs = positions * fan_in * ada.batch_size;
  IntraOpThreads threads(step_macs < kSingleThreadStepMacs ? 1 : at::get_num_threads());
  ASSIGN_OR_RETURN(BrecqResult result,
                   RunBlockReconstruction(*block.quantized, work.module(), fp_weights, params,
                                          q_inputs.narrow(0, 0, n), targets.narrow(0, 0, n), ada,
                                          progress));
  const std::string names = absl::StrJoin(block.names, ", ");
  for (size_t k = 0; k < block.names.size(); ++k) {
    QuantLayer& layer = layer_named(block.names[k]);
    layer.codes = result.codes[k];
    layer.mse_nearest = result.mse_nearest;
    layer.mse_quantized = result.mse_brecq;
    layer.samples = n;
    layer.method = result.kept_nearest ? "nearest (BRECQ did not improve)" : "brecq";
    layer.note = absl::StrCat("reconstructed with its residual block (", names,
                              "): the errors are the block output's");
    InstallWeight(layer, result.weights[k].to(layer.weight.scalar_type()));
  }
  units.push_back({{"layers", block.names},
                   {"method", result.kept_nearest ? "nearest" : "brecq"},
                   {"mse_nearest", result.mse_nearest},
                   {"mse", result.mse_brecq},
                   {"samples", n}});
  return absl::OkStatus();
}

absl::StatusOr<double> TopOne(ProbedModel& model, const torch::Tensor& inputs,
                              const torch::Tensor& labels) {
  int64_t correct = 0;
  for (int64_t start = 0; start < inputs.size(0); start += kForwardBatch) {
    const int64_t count = std::min(kForwardBatch, inputs.size(0) - start);
    ASSIGN_OR_RETURN(c10::IValue output, model.Forward(inputs.narrow(0, start, count)));
    if (!output.isTensor() || output.toTensor().dim() != 2 || output.toTensor().size(0) != count) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                        "evaluation needs a model whose output is [N, classes]");
    }
    torch::Tensor predicted = output.toTensor().argmax(1).to(torch::kCPU);
    correct += predicted.eq(labels.narrow(0, start, count)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / std::max<int64_t>(1, inputs.size(0));
}

// Labelled data (`what`: "eval" or "train"): inputs with one integer label each.
absl::StatusOr<CalibrationData> LoadLabelledData(const std::string& path, const std::string& what) {
  ASSIGN_OR_RETURN(CalibrationData data, LoadCalibrationFile(path));
  if (!data.labels.has_value()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat("the ", what, " data has no labels: save a dict {'inputs': X, "
                                   "'labels': y} with torch.save, or an .npz with keys inputs and "
                                   "labels"));
  }
  torch::Tensor labels = *data.labels;
  if (labels.dim() != 1 || labels.size(0) != data.inputs.size(0) || labels.is_floating_point()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat(what, " labels must be integers, one per input (",
                                   data.inputs.size(0), "), got shape [",
                                   absl::StrJoin(labels.sizes(), ", "), "]"));
  }
  if (data.inputs.size(0) < 1) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat("the ", what, " data holds no samples"));
  }
  if (data.inputs.is_floating_point() && !torch::isfinite(data.inputs).all().item<bool>()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNonFiniteInput,
                      absl::StrCat("the ", what, " inputs contain NaN or Inf values"));
  }
  data.labels = labels.to(torch::kLong);
  return data;
}

// Labelled data against the model: a forward pass of two samples must give [2, classes]
// and every label must lie in [0, classes).
absl::Status CheckLabelledAgainst(ProbedModel& model, const CalibrationData& data,
                                  const std::string& what) {
  torch::NoGradGuard no_grad;
  const torch::Tensor sample = data.inputs.narrow(0, 0, std::min<int64_t>(2, data.inputs.size(0)));
  absl::StatusOr<c10::IValue> output = model.Forward(sample);
  if (!output.ok()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                      absl::StrCat(what, " data: ", output.status().message()));
  }
  if (!output->isTensor() || output->toTensor().dim() != 2 ||
      output->toTensor().size(0) != sample.size(0)) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      what == "train"
                          ? "QAT trains with cross-entropy: it needs a model whose output is "
                            "[N, classes] (class scores)"
                          : "evaluation needs a model whose output is [N, classes] (class scores)");
  }
  const int64_t classes = output->toTensor().size(1);
  const torch::Tensor& labels = *data.labels;
  const int64_t low = labels.min().item<int64_t>(), high = labels.max().item<int64_t>();
  if (low < 0 || high >= classes) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      absl::StrCat(what, " labels range over [", low, ", ", high,
                                   "] but the model outputs ", classes, " classes"));
  }
  return absl::OkStatus();
}

// The model's class scores for a batch of `count` samples, as float32.
absl::StatusOr<torch::Tensor> Logits(const c10::IValue& output, int64_t count) {
  if (!output.isTensor() || output.toTensor().dim() != 2 || output.toTensor().size(0) != count) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      "QAT needs a model whose output is [N, classes]");
  }
  return output.toTensor().to(torch::kFloat);
}

// Mean cross-entropy of the model over labelled data, without gradients.
absl::StatusOr<double> MeanLoss(ProbedModel& model, const torch::Tensor& inputs,
                                const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  namespace F = torch::nn::functional;
  double total = 0;
  for (int64_t start = 0; start < inputs.size(0); start += kForwardBatch) {
    const int64_t count = std::min(kForwardBatch, inputs.size(0) - start);
    ASSIGN_OR_RETURN(c10::IValue output, model.Forward(inputs.narrow(0, start, count)));
    ASSIGN_OR_RETURN(torch::Tensor logits, Logits(output, count));
    total += F::cross_entropy(logits, labels.narrow(0, start, count).to(logits.device()),
                              F::CrossEntropyFuncOptions().reduction(torch::kSum))
                 .item<double>();
  }
  return total / std::max<int64_t>(1, inputs.size(0));
}

// QAT: the whole working model trains on the labelled data with cross-entropy and Adam;
// every quantized layer's (BatchNorm-folded) weight is a latent float tensor fake-quantized
// in the forward pass, and the weight and activation step sizes are learned (LSQ). Starts
// from the calibrated quantizers with the float weights (so step 0 is nearest rounding),
// ends with the weights on their learned grids installed and the learned activation step
// sizes set: exactly what EVALUATING measures and EXPORTING writes. `progress` gets the
// fraction of all steps done and is checked before every step.
absl::StatusOr<nlohmann::json> RunQat(
    const QuantizeOptions& options, ProbedModel& work, std::vector<QuantLayer>& layers,
    const CalibrationData& train,
    const std::function<absl::Status(double, const std::string&)>& progress) {
  namespace F = torch::nn::functional;
  const torch::Tensor& inputs = train.inputs;
  const torch::Tensor& labels = *train.labels;
  const int64_t n = inputs.size(0);
  const int64_t batch = std::min(options.qat_batch_size, n);
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  const int64_t total_steps = options.epochs * steps_per_epoch;
  RETURN_IF_ERROR(progress(0, "QAT: training loss before"));
  ASSIGN_OR_RETURN(const double loss_before, MeanLoss(work, inputs, labels));

  // Callers hold NoGrad (and may hold InferenceMode): training needs autograd.
  c10::InferenceMode no_inference(false);
  torch::AutoGradMode grad_mode(true);
  // Parameters loaded from a torch.jit.save archive keep requires_grad; only the latent
  // weights and the step sizes learn here.
  std::vector<torch::Tensor> frozen;
  for (const torch::Tensor& p : work.module().parameters()) {
    if (p.requires_grad()) {
      frozen.push_back(p);
      p.requires_grad_(false);
    }
  }
  absl::Cleanup unfreeze = [&] {
    for (const torch::Tensor& p : frozen) p.requires_grad_(true);
  };

  std::vector<LsqQuantizer> weight_q, act_q;
  weight_q.reserve(layers.size());
  act_q.reserve(work.sites().size());
  std::vector<const LsqQuantizer*> weight_at(work.sites().size(), nullptr);
  std::vector<const LsqQuantizer*> act_at(work.sites().size(), nullptr);
  std::vector<int> act_site;  // The site of each act_q entry.
  std::vector<torch::Tensor> parameters;
  for (QuantLayer& layer : layers) {
    InstallWeight(layer, layer.fp_weight);  // The latent weight starts at the float one.
    layer.weight.requires_grad_(true);
    parameters.push_back(layer.weight);
    ASSIGN_OR_RETURN(LsqQuantizer q, LsqQuantizer::From(layer.weight_params, layer.weight.device()));
    weight_q.push_back(std::move(q));
    parameters.push_back(weight_q.back().scale());
    for (int site : layer.sites) {
      weight_at[site] = &weight_q.back();
      std::optional<ActQuant> act = work.session().activation(site);
      if (!act.has_value()) continue;
      ASSIGN_OR_RETURN(LsqQuantizer a, LsqQuantizer::From(act->params, work.device()));
      act_q.push_back(std::move(a));
      act_site.push_back(site);
      parameters.push_back(act_q.back().scale());
    }
  }
  for (size_t i = 0; i < act_q.size(); ++i) act_at[act_site[i]] = &act_q[i];
  work.session().SetLearned(act_at, weight_at);
  absl::Cleanup unlearn = [&] {
    work.session().ClearLearned();
    for (QuantLayer& layer : layers) layer.weight.requires_grad_(false);
  };

  torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(options.lr));
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(options.seed));
  int64_t step = 0;
  double epoch_loss = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    const torch::Tensor order = torch::randperm(n, generator, torch::kLong);
    epoch_loss = 0;
    for (int64_t start = 0; start < n; start += batch, ++step) {
      const int64_t count = std::min(batch, n - start);
      RETURN_IF_ERROR(progress(
          static_cast<double>(step) / total_steps,
          absl::StrCat("QAT epoch ", epoch + 1, " of ", options.epochs, ", step ",
                       step - epoch * steps_per_epoch + 1, " of ", steps_per_epoch)));
      const torch::Tensor index = order.narrow(0, start, count);
      ASSIGN_OR_RETURN(c10::IValue output, work.Forward(inputs.index_select(0, index)));
      ASSIGN_OR_RETURN(torch::Tensor logits, Logits(output, count));
      torch::Tensor loss = F::cross_entropy(logits, labels.index_select(0, index).to(logits.device()));
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                          absl::StrCat("QAT diverged at step ", step + 1,
                                       " (the training loss is not finite); lower --lr (was ",
                                       options.lr, ")"));
      }
      epoch_loss += value * count;
      RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInternal, reason::kInternal,
                                "QAT step failed", [&] {
                                  optimizer.zero_grad();
                                  loss.backward();
                                  optimizer.step();
                                }));
      for (LsqQuantizer& q : weight_q) q.ClampScale();
      for (LsqQuantizer& q : act_q) q.ClampScale();
    }
  }
  RETURN_IF_ERROR(progress(1, "QAT: putting the weights on their learned grids"));

  // The learned quantizers become fixed ones: weights on their grids, activations with
  // the learned step sizes.
  std::move(unlearn).Invoke();
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < layers.size(); ++i) {
    QuantLayer& layer = layers[i];
    layer.weight_params = weight_q[i].Params();
    ASSIGN_OR_RETURN(layer.codes, Quantize(layer.weight.detach(), layer.weight_params));
    ASSIGN_OR_RETURN(torch::Tensor dequantized,
                     Dequantize(layer.codes, layer.weight_params, layer.weight.scalar_type()));
    InstallWeight(layer, dequantized.to(layer.weight.device()));
    layer.method = "qat (lsq)";
  }
  for (size_t i = 0; i < act_q.size(); ++i) {
    QuantParams params = act_q[i].Params();
    const double scale = params.scale[0].item<double>();
    const int64_t zero_point = params.zero_point[0].item<int64_t>();
    work.session().SetActivation(act_site[i], ActQuant{std::move(params), scale, zero_point});
  }
  ASSIGN_OR_RETURN(const double loss_after, MeanLoss(work, inputs, labels));
  return nlohmann::json{{"epochs", options.epochs},
                        {"lr", options.lr},
                        {"batch_size", batch},
                        {"samples", n},
                        {"steps", total_steps},
                        {"optimizer", "adam"},
                        {"step_sizes", "learned (LSQ), zero points as calibrated"},
                        {"train_loss_before", loss_before},
                        {"train_loss_last_epoch", epoch_loss / n},
                        {"train_loss_after", loss_after}};
}

}  // namespace

absl::Status CheckEvalData(const QuantizeOptions& options) {
  if (options.eval_path.empty()) return absl::OkStatus();
  InitTorchThreads();
  torch::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(CalibrationData eval, LoadLabelledData(options.eval_path, "eval"));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadTorchScriptModel(options.model_path, options.device));
  ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> model, ProbedModel::Create(std::move(loaded)));
  return CheckLabelledAgainst(*model, eval, "eval");
}

absl::Status CheckTrainData(const QuantizeOptions& options) {
  if (options.finetune != "qat") return absl::OkStatus();
  if (options.train_path.empty()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      "--finetune qat trains on labelled data: pass --train FILE");
  }
  InitTorchThreads();
  torch::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(CalibrationData train, LoadLabelledData(options.train_path, "train"));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadTorchScriptModel(options.model_path, options.device));
  ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> model, ProbedModel::Create(std::move(loaded)));
  return CheckLabelledAgainst(*model, train, "train");
}

absl::StatusOr<std::vector<std::string>> RunQuantization(const QuantizeOptions& options,
                                                         nlohmann::json& report,
                                                         const ProgressFn& progress) {
  const bool qat = options.finetune == "qat";
  if (options.finetune != "none" && options.finetune != "ptq" && !qat) {
    return absl::InvalidArgumentError(
        absl::StrCat("finetune '", options.finetune, "' is not one of none, ptq, qat"));
  }
  if (options.act_bits < 2 || options.act_bits > 16 || options.calib_samples < 1 ||
      options.iters < 0 || options.epochs < 1 || !(options.lr > 0) || !std::isfinite(options.lr) ||
      options.qat_batch_size < 1) {
    return absl::InvalidArgumentError(
        "act_bits 2..16, calib_samples >= 1, iters >= 0, epochs >= 1, lr > 0 and "
        "qat_batch_size >= 1");
  }
  if (qat && options.train_path.empty()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      "--finetune qat trains on labelled data: pass --train FILE");
  }
  auto step = [&](Stage stage, double fraction, const std::string& message) -> absl::Status {
    if (progress && !progress(stage, std::clamp(fraction, 0.0, 1.0), message)) return Cancelled();
    return absl::OkStatus();
  };
  InitTorchThreads();
  torch::NoGradGuard no_grad;
  const Clock::time_point start = Clock::now();

  // --- CALIBRATING: two copies of the model (float reference, working copy), ranges.
  RETURN_IF_ERROR(step(Stage::kCalibrating, 0, "loading the model and calibration data"));
  ASSIGN_OR_RETURN(LoadedModel fp_loaded, LoadTorchScriptModel(options.model_path, options.device));
  ASSIGN_OR_RETURN(LoadedModel work_loaded,
                   LoadTorchScriptModel(options.model_path, options.device));
  ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> fp, ProbedModel::Create(std::move(fp_loaded)));
  ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> work, ProbedModel::Create(std::move(work_loaded)));
  ASSIGN_OR_RETURN(CalibrationData calibration, LoadCalibrationFile(options.calib_path));
  torch::Tensor calib = calibration.inputs;
  calibration = {};
  calib = calib.narrow(0, 0, std::min<int64_t>(calib.size(0), options.calib_samples));
  if (calib.is_floating_point() && !torch::isfinite(calib).all().item<bool>()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNonFiniteInput,
                      "the calibration inputs contain NaN or Inf values");
  }
  ASSIGN_OR_RETURN(std::vector<QuantLayer> layers, PlanLayers(*work, report));
  std::optional<CalibrationData> eval;
  if (!options.eval_path.empty()) {
    ASSIGN_OR_RETURN(CalibrationData loaded_eval, LoadLabelledData(options.eval_path, "eval"));
    eval = std::move(loaded_eval);
  }
  // QAT's data is checked against the model before calibration starts.
  std::optional<CalibrationData> train;
  if (qat) {
    ASSIGN_OR_RETURN(CalibrationData loaded_train, LoadLabelledData(options.train_path, "train"));
    RETURN_IF_ERROR(CheckLabelledAgainst(*fp, loaded_train, "train"));
    train = std::move(loaded_train);
  }

  QuantizerOptions act_options;
  act_options.bits = options.act_bits;
  const int64_t n_layers = static_cast<int64_t>(layers.size());
  for (int64_t i = 0; i < n_layers; ++i) {
    QuantLayer& layer = layers[i];
    RETURN_IF_ERROR(step(Stage::kCalibrating, static_cast<double>(i) / n_layers,
                         absl::StrCat("calibrating ", layer.name, " (", i + 1, " of ", n_layers,
                                      ")")));
    // Activation ranges from the inputs the quantized layers before this one produce.
    for (int site : layer.sites) {
      ASSIGN_OR_RETURN(torch::Tensor inputs,
                       work->Capture(site, calib, calib.size(0), options.max_capture_bytes));
      // The range search is many small ops: one thread (see kSingleThreadStepMacs).
      IntraOpThreads one_thread(1);
      absl::StatusOr<QuantParams> fitted = FitActivationQuantizer(inputs, act_options);
      if (!fitted.ok()) {
        return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNonFiniteInput,
                          absl::StrCat("cannot calibrate the input of layer '", layer.name,
                                       "': ", fitted.status().message()));
      }
      ActQuant act{*fitted, fitted->scale[0].item<double>(), fitted->zero_point[0].item<int64_t>()};
      work->session().SetActivation(site, act);
    }
    QuantizerOptions weight_options;
    weight_options.bits = layer.bits;
    IntraOpThreads one_thread(1);
    ASSIGN_OR_RETURN(layer.weight_params, FitWeightQuantizer(layer.fp_weight, weight_options));
    ASSIGN_OR_RETURN(layer.codes, Quantize(layer.fp_weight, layer.weight_params));
    ASSIGN_OR_RETURN(torch::Tensor dequantized,
                     Dequantize(layer.codes, layer.weight_params, layer.weight.scalar_type()));
    layer.nearest_weight = dequantized.to(layer.weight.device());
    InstallWeight(layer, layer.nearest_weight);
  }
  const double calibrate_seconds = SecondsSince(start);
  // The calibrated activation quantizers, for the accuracy before finetuning (QAT learns
  // new step sizes).
  std::vector<std::optional<ActQuant>> calibrated_act(work->sites().size());
  for (size_t s = 0; s < calibrated_act.size(); ++s) {
    calibrated_act[s] = work->session().activation(static_cast<int>(s));
  }
  nlohmann::json qat_report;
  nlohmann::json units = nlohmann::json::array();  // Reconstruction units (ptq).

  // --- FINETUNING: AdaRound per layer, in execution order, on quantized inputs.
  const Clock::time_point finetune_start = Clock::now();
  if (options.finetune == "ptq") {
    // BRECQ for the residual blocks, when the loop reaches a block's first layer; the other
    // layers get AdaRound one by one.
    const std::vector<PlannedBlock> blocks = PlanBlocks(*fp, *work, layers);
    std::vector<int> block_of(n_layers, -1);
    for (size_t b = 0; b < blocks.size(); ++b) {
      for (int l : blocks[b].layers) block_of[l] = static_cast<int>(b);
    }
    for (int64_t i = 0; i < n_layers; ++i) {
      QuantLayer& layer = layers[i];
      if (block_of[i] >= 0) {
        const PlannedBlock& block = blocks[block_of[i]];
        if (block.layers.front() != i) continue;  // Done with its block.
        const std::string label = absl::StrCat("block ", block_of[i] + 1, " of ", blocks.size(),
                                               " (", absl::StrJoin(block.names, ", "), ")");
        RETURN_IF_ERROR(step(Stage::kFinetuning, static_cast<double>(i) / n_layers,
                             absl::StrCat("reconstructing ", label)));
        const double width = static_cast<double>(block.layers.size());
        absl::Status done = ReconstructBlock(
            block, *fp, *work, layers, calib, options,
            [&](double fraction) {
              return step(Stage::kFinetuning, (i + width * fraction) / n_layers,
                          absl::StrCat("reconstructing ", label))
                  .ok();
            },
            units);
        if (!done.ok()) {
          if (progress && !progress(Stage::kFinetuning, static_cast<double>(i) / n_layers,
                                    "reconstruction stopped")) {
            return Cancelled();
          }
          return done;
        }
        continue;
      }
      const std::string what = absl::StrCat(layer.name, " (", i + 1, " of ", n_layers, ")");
      RETURN_IF_ERROR(step(Stage::kFinetuning, static_cast<double>(i) / n_layers,
                           absl::StrCat("reconstructing ", what)));
      if (!layer.op.has_value()) continue;
      const int site = layer.sites.front();
      // Inputs, quantized inputs and targets share the memory bound.
      const int64_t share = options.max_capture_bytes / 3;
      ASSIGN_OR_RETURN(torch::Tensor fp_inputs, fp->Capture(site, calib, calib.size(0), share));
      ASSIGN_OR_RETURN(torch::Tensor first_target,
                       ApplyLayer(*layer.op, fp_inputs.narrow(0, 0, 1), layer.fp_weight.cpu(),
                                  layer.fp_bias.defined() ? layer.fp_bias.cpu() : torch::Tensor()));
      const int64_t per_sample = std::max<int64_t>(1, first_target.numel() * 4);
      const int64_t samples =
          std::max<int64_t>(std::min<int64_t>(2, fp_inputs.size(0)),
                            std::min<int64_t>(fp_inputs.size(0), share / per_sample));
      fp_inputs = fp_inputs.narrow(0, 0, samples);
      ASSIGN_OR_RETURN(torch::Tensor q_inputs,
                       work->Capture(site, calib, samples, options.max_capture_bytes));
      const int64_t n = std::min(samples, q_inputs.size(0));
      const std::optional<ActQuant> act = work->session().activation(site);
      torch::Tensor x = q_inputs.narrow(0, 0, n);
      if (act.has_value()) {
        x = at::fake_quantize_per_tensor_affine(x, act->scale, act->zero_point,
                                                act->params.quant_min(), act->params.quant_max());
      }
      std::vector<torch::Tensor> target_parts;
      for (int64_t begin = 0; begin < n; begin += kForwardBatch) {
        ASSIGN_OR_RETURN(torch::Tensor part,
                         ApplyLayer(*layer.op, fp_inputs.narrow(0, begin, std::min(kForwardBatch, n - begin)),
                                    layer.fp_weight.cpu(),
                                    layer.fp_bias.defined() ? layer.fp_bias.cpu() : torch::Tensor()));
        target_parts.push_back(part);
      }
      fp_inputs = torch::Tensor();
      const torch::Tensor targets = torch::cat(target_parts, 0);
      AdaRoundOptions ada;
      ada.iters = options.iters;
      const int64_t step_macs = targets[0].numel() * (layer.fp_weight.numel() /
                                                      layer.fp_weight.size(0)) * ada.batch_size;
      IntraOpThreads threads(step_macs < kSingleThreadStepMacs ? 1 : at::get_num_threads());
      ada.seed = static_cast<uint64_t>(options.seed) * 1000003u + static_cast<uint64_t>(i);
      absl::StatusOr<AdaRoundResult> result = RunAdaRound(
          layer.fp_weight.to(layer.weight.device()),
          layer.fp_bias.defined() ? layer.fp_bias.to(layer.weight.device()) : torch::Tensor(),
          *layer.op, layer.weight_params, x, targets, ada, [&](double fraction) {
            return step(Stage::kFinetuning, (i + fraction) / n_layers,
                        absl::StrCat("reconstructing ", what))
                .ok();
          });
      if (!result.ok()) {
        if (progress && !progress(Stage::kFinetuning, static_cast<double>(i) / n_layers,
                                  "reconstruction stopped")) {
          return Cancelled();
        }
        return result.status();
      }
      layer.codes = result->codes;
      layer.mse_nearest = result->mse_nearest;
      layer.mse_quantized = result->mse_adaround;
      layer.samples = n;
      layer.method = result->kept_nearest ? "nearest (AdaRound did not improve)" : "adaround";
      InstallWeight(layer, result->weight.to(layer.weight.scalar_type()));
      units.push_back({{"layers", {layer.name}},
                       {"method", result->kept_nearest ? "nearest" : "adaround"},
                       {"mse_nearest", result->mse_nearest},
                       {"mse", result->mse_adaround},
                       {"samples", n}});
    }
    RETURN_IF_ERROR(step(Stage::kFinetuning, 1, "reconstruction done"));
  } else if (qat) {
    ASSIGN_OR_RETURN(qat_report,
                     RunQat(options, *work, layers, *train,
                            [&](double fraction, const std::string& message) {
                              return step(Stage::kFinetuning, fraction, message);
                            }));
  }
  const double finetune_seconds = SecondsSince(finetune_start);

  // --- EVALUATING: the float model, the calibrated one with nearest rounding (before
  // finetuning) and the finetuned one, all after finetuning so progress only moves forward.
  double evaluate_seconds = 0;
  if (eval.has_value()) {
    const Clock::time_point eval_start = Clock::now();
    const torch::Tensor& labels = *eval->labels;
    RETURN_IF_ERROR(step(Stage::kEvaluating, 0, "top-1 of the float model"));
    ASSIGN_OR_RETURN(double fp32, TopOne(*fp, eval->inputs, labels));
    nlohmann::json accuracy = {{"fp32", fp32}, {"samples", eval->inputs.size(0)}};
    if (options.finetune == "none") {
      RETURN_IF_ERROR(step(Stage::kEvaluating, 0.5, "top-1 of the quantized model"));
      ASSIGN_OR_RETURN(double quantized, TopOne(*work, eval->inputs, labels));
      accuracy["quantized_before_finetune"] = quantized;
      accuracy["quantized"] = quantized;
    } else {
      RETURN_IF_ERROR(step(Stage::kEvaluating, 0.33, "top-1 of the finetuned model"));
      ASSIGN_OR_RETURN(double after, TopOne(*work, eval->inputs, labels));
      RETURN_IF_ERROR(step(Stage::kEvaluating, 0.66, "top-1 before finetuning"));
      std::vector<torch::Tensor> finetuned;
      for (QuantLayer& layer : layers) {
        finetuned.push_back(layer.weight.detach().clone());
        InstallWeight(layer, layer.nearest_weight);
      }
      std::vector<std::optional<ActQuant>> finetuned_act(calibrated_act.size());
      for (size_t s = 0; s < calibrated_act.size(); ++s) {
        finetuned_act[s] = work->session().activation(static_cast<int>(s));
        work->session().SetActivation(static_cast<int>(s), calibrated_act[s]);
      }
      ASSIGN_OR_RETURN(double before, TopOne(*work, eval->inputs, labels));
      for (size_t i = 0; i < layers.size(); ++i) InstallWeight(layers[i], finetuned[i]);
      for (size_t s = 0; s < finetuned_act.size(); ++s) {
        work->session().SetActivation(static_cast<int>(s), finetuned_act[s]);
      }
      accuracy["quantized_before_finetune"] = before;
      accuracy["quantized"] = after;
    }
    evaluate_seconds = SecondsSince(eval_start);
    report["accuracy"] = accuracy;
  }

  // --- EXPORTING: the working model with fake quantization in its own forward graph.
  const Clock::time_point export_start = Clock::now();
  RETURN_IF_ERROR(step(Stage::kExporting, 0, "writing model_quantized.pt"));
  std::error_code fs_error;
  std::filesystem::create_directories(options.out_dir, fs_error);
  if (fs_error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", options.out_dir, ": ", fs_error.message()));
  }
  EncodingsBuilder encodings;
  std::vector<std::optional<ActQuant>> site_act(work->sites().size());
  for (const QuantLayer& layer : layers) {
    RETURN_IF_ERROR(encodings.AddParam(layer.name + ".weight", layer.weight_params));
    for (size_t k = 0; k < layer.sites.size(); ++k) {
      site_act[layer.sites[k]] = work->session().activation(layer.sites[k]);
      if (!site_act[layer.sites[k]].has_value()) continue;
      const std::string tensor =
          k == 0 ? layer.name + ".input" : absl::StrCat(layer.name, ".input.", k);
      RETURN_IF_ERROR(encodings.AddActivation(tensor, site_act[layer.sites[k]]->params));
    }
  }
  const std::filesystem::path out(options.out_dir);
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kInternal, reason::kInternal, "cannot export the quantized model", [&] {
        torch::jit::Module& module = work->module();
        std::shared_ptr<torch::jit::Graph> graph = module.get_method("forward").graph();
        torch::jit::Inline(*graph);
        FoldStaticIfs(*graph, module);  // As in ProbedModel: the same sites.
        std::vector<LayerSiteNode> sites = FindLayerSites(*graph, module);
        TORCH_CHECK(sites.size() == site_act.size(),
                    "the exported graph has a different number of layer sites");
        const c10::Symbol fake_quantize =
            c10::Symbol::fromQualString("aten::fake_quantize_per_tensor_affine");
        for (size_t s = 0; s < sites.size(); ++s) {
          TORCH_CHECK(sites[s].name == work->sites()[s].name, "layer sites differ in order");
          if (!site_act[s].has_value()) continue;
          const ActQuant& act = *site_act[s];
          Node* node = sites[s].node;
          torch::jit::WithInsertPoint insert_point(node);
          Value* quantized = graph->insert(
              fake_quantize, {node->input(0), act.scale, act.zero_point,
                              act.params.quant_min(), act.params.quant_max()});
          node->replaceInput(0, quantized);
        }
        graph->lint();
        module.save((out / kModelFile).string());
      }));
  {
    const std::string text = encodings.Build().dump(2) + "\n";
    std::FILE* file = std::fopen((out / kEncodingsFile).c_str(), "wb");
    if (file == nullptr || std::fwrite(text.data(), 1, text.size(), file) != text.size() ||
        std::fclose(file) != 0) {
      return absl::InternalError(absl::StrCat("cannot write ", (out / kEncodingsFile).string()));
    }
  }
  const double export_seconds = SecondsSince(export_start);

  // --- The report.
  nlohmann::json per_layer = nlohmann::json::array();
  for (const QuantLayer& layer : layers) {
    nlohmann::json entry = {{"name", layer.name},
                            {"bits", layer.bits},
                            {"batch_norm_folded", layer.folded},
                            {"rounding", layer.method},
                            {"sites", layer.sites.size()}};
    if (!std::isnan(layer.mse_nearest)) {
      entry["reconstruction_mse_nearest"] = layer.mse_nearest;
      entry["reconstruction_mse"] = layer.mse_quantized;
      entry["reconstruction_samples"] = layer.samples;
    }
    if (!layer.note.empty()) entry["note"] = layer.note;
    per_layer.push_back(std::move(entry));
  }
  report["quantization"] = {{"finetune", options.finetune},
                            {"act_bits", options.act_bits},
                            {"calib_samples", calib.size(0)},
                            {"iters", options.finetune == "ptq" ? options.iters : 0},
                            {"seed", options.seed},
                            {"weights", "per output channel, asymmetric, MSE (p=2.4) clipping"},
                            {"activations", "per tensor, asymmetric, at every layer's input"},
                            {"layers", per_layer}};
  if (qat) report["quantization"]["qat"] = qat_report;
  if (options.finetune == "ptq") report["quantization"]["units"] = units;
  nlohmann::json& timings = report["timings_seconds"];
  if (!timings.is_object()) timings = nlohmann::json::object();
  timings["calibrate"] = calibrate_seconds;
  timings["finetune"] = finetune_seconds;
  timings["evaluate"] = evaluate_seconds;
  timings["export"] = export_seconds;
  return std::vector<std::string>{kModelFile, kEncodingsFile};
}

}  // namespace ompq::engine
