#include "workers/engine/probed_model.h"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_error.h"
#include "common/status_macros.h"

namespace ompq::engine {
namespace {

using torch::jit::Node;
using torch::jit::Value;

constexpr char kWeightProbeOp[] = "ompq::weight_probe";

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

// Thrown (as a c10::Error) to stop a pass on purpose; the caller knows why.
constexpr char kStopped[] = "ompq: pass stopped";

}  // namespace

IntraOpThreads::IntraOpThreads(int threads) : saved_(at::get_num_threads()) {
  if (threads != saved_) at::set_num_threads(threads);
}
IntraOpThreads::~IntraOpThreads() {
  if (at::get_num_threads() != saved_) at::set_num_threads(saved_);
}

// ---------------------------------------------------------------------------------------
// ProbeSession

at::Tensor ProbeSession::OnProbe(int64_t site, const at::Tensor& x) {
  absl::MutexLock lock(&mutex_);
  if (site < 0 || site >= static_cast<int64_t>(act_.size())) return x;
  if (site == capture_site_ && !captured_.defined()) {
    captured_ = x.detach().to(torch::kCPU, torch::kFloat).contiguous().clone();
    if (stop_after_capture_) {
      stopped_ = true;
      TORCH_CHECK(false, kStopped);
    }
  }
  if (measuring_ && x.dim() >= 1 && x.size(0) > 0) {
    largest_input_ = std::max<int64_t>(largest_input_, x[0].numel() * 4);
  }
  if (calibration_.has_value() && calibration_->sites[site] && !act_[site].has_value()) {
    TORCH_CHECK(CalibrateSite(site, x), kStopped);
  }
  if (!learned_act_.empty() && learned_act_[site] != nullptr && x.is_floating_point()) {
    return learned_act_[site]->Apply(x);
  }
  const std::optional<ActQuant>& q = act_[site];
  if (!q.has_value() || !x.is_floating_point()) return x;
  return at::fake_quantize_per_tensor_affine(x, q->scale, q->zero_point, q->params.quant_min(),
                                             q->params.quant_max());
}

bool ProbeSession::CalibrateSite(int64_t site, const at::Tensor& x) {
  const std::string& name = calibration_->names[site];
  if (x.dim() < 1 || x.size(0) != calibration_batch_) {
    calibration_status_ = JobFailure(
        absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
        absl::StrCat("the input of layer '", name, "' has no batch dimension of ",
                     calibration_batch_));
    return false;
  }
  absl::StatusOr<QuantParams> fitted;
  {
    // The range search is many small ops: one thread (see kSingleThreadStepMacs).
    IntraOpThreads one_thread(1);
    fitted = FitActivationQuantizer(x.detach().to(torch::kCPU, torch::kFloat),
                                    calibration_->options);
  }
  if (!fitted.ok()) {
    calibration_status_ = JobFailure(
        absl::StatusCode::kInvalidArgument, reason::kNonFiniteInput,
        absl::StrCat("cannot calibrate the input of layer '", name, "': ",
                     fitted.status().message()));
    return false;
  }
  act_[site] = ActQuant{*fitted, fitted->scale[0].item<double>(),
                        fitted->zero_point[0].item<int64_t>()};
  ++calibrated_;
  if (calibration_->progress && !calibration_->progress(calibrated_)) {
    calibration_cancelled_ = true;
    return false;
  }
  return true;
}

// The weight of the layer at `site` as the forward pass uses it: fake-quantized by the
// learned quantizer during QAT, as stored otherwise (the installed weight is already on
// its grid).
at::Tensor ProbeSession::OnWeight(int64_t site, const at::Tensor& w) {
  absl::MutexLock lock(&mutex_);
  if (site < 0 || site >= static_cast<int64_t>(learned_weight_.size()) ||
      learned_weight_[site] == nullptr) {
    return w;
  }
  return learned_weight_[site]->Apply(w);
}

void ProbeSession::SetLearned(std::vector<const LsqQuantizer*> act,
                              std::vector<const LsqQuantizer*> weight) {
  absl::MutexLock lock(&mutex_);
  learned_act_ = std::move(act);
  learned_weight_ = std::move(weight);
}

void ProbeSession::ClearLearned() {
  absl::MutexLock lock(&mutex_);
  learned_act_.clear();
  learned_weight_.clear();
}

void ProbeSession::SetActivation(int site, std::optional<ActQuant> q) {
  absl::MutexLock lock(&mutex_);
  act_[site] = std::move(q);
}

std::optional<ActQuant> ProbeSession::activation(int site) const {
  absl::MutexLock lock(&mutex_);
  return act_[site];
}

void ProbeSession::StartCapture(int site, bool stop_after) {
  absl::MutexLock lock(&mutex_);
  capture_site_ = site;
  stop_after_capture_ = stop_after;
  captured_ = torch::Tensor();
  stopped_ = false;
}

std::pair<torch::Tensor, bool> ProbeSession::FinishCapture() {
  absl::MutexLock lock(&mutex_);
  capture_site_ = -1;
  std::pair<torch::Tensor, bool> result{captured_, stopped_};
  captured_ = torch::Tensor();
  stopped_ = false;
  return result;
}

void ProbeSession::StartMeasuring() {
  absl::MutexLock lock(&mutex_);
  measuring_ = true;
  largest_input_ = 0;
}

int64_t ProbeSession::FinishMeasuring() {
  absl::MutexLock lock(&mutex_);
  measuring_ = false;
  return largest_input_;
}

void ProbeSession::StartCalibration(CalibrationPlan plan, int64_t batch) {
  absl::MutexLock lock(&mutex_);
  plan.sites.resize(act_.size(), false);
  plan.names.resize(act_.size());
  calibration_ = std::move(plan);
  calibration_batch_ = batch;
  calibrated_ = 0;
  calibration_cancelled_ = false;
  calibration_status_ = absl::OkStatus();
}

absl::Status ProbeSession::FinishCalibration(bool* cancelled) {
  absl::MutexLock lock(&mutex_);
  calibration_.reset();
  *cancelled = calibration_cancelled_;
  return calibration_status_;
}

// ---------------------------------------------------------------------------------------
// ProbedModel

absl::StatusOr<std::unique_ptr<ProbedModel>> ProbedModel::Create(LoadedModel loaded) {
  std::unique_ptr<ProbedModel> model(new ProbedModel());
  model->session_id_ = next_probe_session.fetch_add(1);
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
          Node* weight =
              graph.insertNode(graph.create(weight_probe, {node->input(1), session, site}, 1));
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

ProbedModel::~ProbedModel() {
  absl::MutexLock lock(&probe_registry_mutex);
  ProbeRegistry().erase(session_id_);
}

absl::StatusOr<c10::IValue> ProbedModel::Forward(const torch::Tensor& batch) {
  std::vector<c10::IValue> args = {module_._ivalue(), batch.to(device_)};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  c10::IValue output;
  RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                            absl::StrCat("the model rejects inputs of shape [",
                                         absl::StrJoin(batch.sizes(), ", "), "]"),
                            [&] { output = (*function_)(args); }));
  return output;
}

absl::StatusOr<torch::Tensor> ProbedModel::Capture(int site, const torch::Tensor& inputs,
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

absl::StatusOr<int64_t> ProbedModel::LargestSiteInputPerSample(const torch::Tensor& inputs) {
  const torch::Tensor sample = inputs.narrow(0, 0, std::min<int64_t>(2, inputs.size(0)));
  session_->StartMeasuring();
  absl::StatusOr<c10::IValue> ran = Forward(sample);
  const int64_t largest = session_->FinishMeasuring();
  RETURN_IF_ERROR(ran.status());
  return largest;
}

absl::Status ProbedModel::Calibrate(const torch::Tensor& batch, CalibrationPlan plan) {
  std::vector<bool> planned = plan.sites;
  planned.resize(sites_.size(), false);
  session_->StartCalibration(std::move(plan), batch.size(0));
  absl::StatusOr<c10::IValue> ran = Forward(batch);
  bool cancelled = false;
  absl::Status inside = session_->FinishCalibration(&cancelled);
  if (cancelled) {
    return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled,
                      "quantization was cancelled");
  }
  RETURN_IF_ERROR(inside);
  RETURN_IF_ERROR(ran.status());
  for (size_t site = 0; site < sites_.size(); ++site) {
    if (planned[site] && !session_->activation(static_cast<int>(site)).has_value()) {
      return JobFailure(absl::StatusCode::kInternal, reason::kInternal,
                        absl::StrCat("layer '", sites_[site].name,
                                     "' did not run in the forward pass"));
    }
  }
  return absl::OkStatus();
}

}  // namespace ompq::engine
