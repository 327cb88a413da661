#include "workers/engine/probed_model.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_error.h"
#include "common/status_macros.h"

namespace ompq::engine {
namespace {

// Thrown (as a c10::Error) to stop a pass on purpose; the caller knows why.
constexpr char kStopped[] = "ompq: pass stopped";

}  // namespace

IntraOpThreads::IntraOpThreads(int threads) : saved_(at::get_num_threads()) {
  if (threads != saved_) at::set_num_threads(threads);
}
IntraOpThreads::~IntraOpThreads() {
  if (at::get_num_threads() != saved_) at::set_num_threads(saved_);
}

int ActivationFitThreads(int64_t elements) {
  return elements >= (int64_t{1} << 18) ? at::get_num_threads() : 1;
}

// ---------------------------------------------------------------------------------------
// ProbeSession

at::Tensor ProbeSession::OnInput(int64_t site, const at::Tensor& x) {
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
    IntraOpThreads threads(ActivationFitThreads(x.numel()));
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
  HookPoints points;
  points.input = true;
  points.weight = true;
  ASSIGN_OR_RETURN(model->model_, InstrumentedModel::Create(std::move(loaded), points));
  model->session_ = std::make_unique<ProbeSession>(model->model_->sites().size());
  model->model_->SetHooks(model->session_.get());
  return model;
}

absl::StatusOr<c10::IValue> ProbedModel::Forward(const torch::Tensor& batch) {
  return model_->Forward(batch);
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
                        absl::StrCat("layer '", sites()[site].name,
                                     "' did not run in the forward pass"));
    }
    if (captured.dim() < 1 || captured.size(0) != batch.size(0)) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                        absl::StrCat("the input of layer '", sites()[site].name,
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
  planned.resize(sites().size(), false);
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
  for (size_t site = 0; site < sites().size(); ++site) {
    if (planned[site] && !session_->activation(static_cast<int>(site)).has_value()) {
      return JobFailure(absl::StatusCode::kInternal, reason::kInternal,
                        absl::StrCat("layer '", sites()[site].name,
                                     "' did not run in the forward pass"));
    }
  }
  return absl::OkStatus();
}

}  // namespace ompq::engine
