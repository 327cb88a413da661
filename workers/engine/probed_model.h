// The quantizer's use of the instrumented model (instrumented_model.h): hooks at the
// input and at the weight of every layer call site.
//
// The activation probe captures a site's input when asked, applies the site's activation
// quantizer once one is fitted, and during calibration fits that quantizer on the input
// it meets: the output of the already-quantized layers before it. So one forward pass
// calibrates every site in execution order, exactly as a layer-by-layer calibration of
// the quantized prefix would. The weight probe applies QAT's learned weight quantizer.
#ifndef OMPQ_WORKERS_ENGINE_PROBED_MODEL_H_
#define OMPQ_WORKERS_ENGINE_PROBED_MODEL_H_

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "workers/engine/graph_layers.h"
#include "workers/engine/instrumented_model.h"
#include "workers/engine/qat.h"
#include "workers/engine/quantizer.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {

/// Samples per forward pass while capturing inputs and evaluating: bounds the memory of
/// one pass without making passes too small to run efficiently.
inline constexpr int64_t kForwardBatch = 128;

/// Sets LibTorch's intra-op thread count for a scope.
class IntraOpThreads {
 public:
  explicit IntraOpThreads(int threads);
  ~IntraOpThreads();
  IntraOpThreads(const IntraOpThreads&) = delete;
  IntraOpThreads& operator=(const IntraOpThreads&) = delete;

 private:
  int saved_;
};

/// Threads for fitting an activation range on `elements` values: every core once the
/// search's tensors are large enough to keep them busy (the search subsamples to at most
/// 2^20 values), one below that, where each op's parallel region would cost more than its
/// work on a busy machine.
int ActivationFitThreads(int64_t elements);

/// A fitted per-tensor activation quantizer, with its scale and zero point as scalars.
struct ActQuant {
  QuantParams params;  // Per tensor.
  double scale = 1;
  int64_t zero_point = 0;
};

/// One-pass calibration: which sites to fit, how, and whom to tell.
struct CalibrationPlan {
  std::vector<bool> sites;       // Per site: fit its activation quantizer when reached.
  std::vector<std::string> names;  // Per site: the layer name, for messages.
  QuantizerOptions options;      // Activation bits and the clipping search.
  /// Called after each fitted site with the count fitted so far; false stops the pass.
  std::function<bool(int fitted)> progress;
};

/// What the probes of one model share: the activation quantizers, captures, QAT's learned
/// quantizers and a calibration in progress. Thread-safe (prim::fork may run probes on
/// other threads).
class ProbeSession : public SiteHooks {
 public:
  explicit ProbeSession(size_t sites) : act_(sites) {}

  at::Tensor OnInput(int64_t site, const at::Tensor& x) override;
  at::Tensor OnWeight(int64_t site, const at::Tensor& w) override;

  /// QAT: learned quantizers per site (null: none) replace the fixed activation
  /// quantizers and quantize the weights until ClearLearned. The caller keeps them alive.
  void SetLearned(std::vector<const LsqQuantizer*> act, std::vector<const LsqQuantizer*> weight);
  void ClearLearned();

  void SetActivation(int site, std::optional<ActQuant> q);
  std::optional<ActQuant> activation(int site) const;

  void StartCapture(int site, bool stop_after);
  /// The captured input (undefined when the site did not run) and whether the pass was
  /// stopped on purpose.
  std::pair<torch::Tensor, bool> FinishCapture();

  /// Until FinishMeasuring, records the largest input per sample (bytes as float32)
  /// that any site meets.
  void StartMeasuring();
  int64_t FinishMeasuring();

  /// Until FinishCalibration, every planned site without a quantizer fits one on the
  /// first input it meets (which must have `batch` samples in dimension 0).
  void StartCalibration(CalibrationPlan plan, int64_t batch);
  /// Ends the calibration: the first failure inside the pass (a bad input, a cancelled
  /// progress), if any; OK otherwise. `cancelled` tells a stop by progress apart.
  absl::Status FinishCalibration(bool* cancelled);

 private:
  // Fits the site's quantizer on `x`; false (with calibration_status_ set) on failure.
  bool CalibrateSite(int64_t site, const at::Tensor& x) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  mutable absl::Mutex mutex_;
  std::vector<std::optional<ActQuant>> act_ ABSL_GUARDED_BY(mutex_);
  std::vector<const LsqQuantizer*> learned_act_ ABSL_GUARDED_BY(mutex_);
  std::vector<const LsqQuantizer*> learned_weight_ ABSL_GUARDED_BY(mutex_);
  int capture_site_ ABSL_GUARDED_BY(mutex_) = -1;
  bool stop_after_capture_ ABSL_GUARDED_BY(mutex_) = false;
  bool stopped_ ABSL_GUARDED_BY(mutex_) = false;
  torch::Tensor captured_ ABSL_GUARDED_BY(mutex_);
  bool measuring_ ABSL_GUARDED_BY(mutex_) = false;
  int64_t largest_input_ ABSL_GUARDED_BY(mutex_) = 0;
  std::optional<CalibrationPlan> calibration_ ABSL_GUARDED_BY(mutex_);
  int64_t calibration_batch_ ABSL_GUARDED_BY(mutex_) = 0;
  int calibrated_ ABSL_GUARDED_BY(mutex_) = 0;
  bool calibration_cancelled_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status calibration_status_ ABSL_GUARDED_BY(mutex_);
};

/// A model whose forward graph (inlined) carries a probe at every layer call site.
class ProbedModel {
 public:
  static absl::StatusOr<std::unique_ptr<ProbedModel>> Create(LoadedModel loaded);
  ProbedModel(const ProbedModel&) = delete;
  ProbedModel& operator=(const ProbedModel&) = delete;

  torch::jit::Module& module() { return model_->module(); }
  const torch::Device& device() const { return model_->device(); }
  const std::vector<LayerSiteNode>& sites() const { return model_->sites(); }
  torch::jit::Graph& graph() { return model_->graph(); }  // Inlined, with the probes.
  const torch::jit::Value* self() const { return model_->self(); }
  ProbeSession& session() { return *session_; }

  absl::StatusOr<c10::IValue> Forward(const torch::Tensor& batch);

  /// The input of `site` for the first samples of `inputs` (at most `max_samples`, and
  /// fewer when they would take more than `max_bytes`), as float32 on the CPU.
  absl::StatusOr<torch::Tensor> Capture(int site, const torch::Tensor& inputs,
                                        int64_t max_samples, int64_t max_bytes);

  /// Per sample, the bytes (as float32) of the largest input any site meets, from a
  /// forward pass of the first two samples.
  absl::StatusOr<int64_t> LargestSiteInputPerSample(const torch::Tensor& inputs);

  /// One forward pass over `batch` that fits the activation quantizer of every site of
  /// `plan` on the input it meets (see the file comment). INPUT_MISMATCH when the model
  /// rejects the batch or a site's input has no batch dimension, NON_FINITE_INPUT when a
  /// range cannot be fitted, INTERNAL when a planned site did not run, CANCELLED when
  /// `plan.progress` says stop.
  absl::Status Calibrate(const torch::Tensor& batch, CalibrationPlan plan);

 private:
  ProbedModel() = default;

  std::unique_ptr<ProbeSession> session_;      // Outlives model_, whose ops call it.
  std::unique_ptr<InstrumentedModel> model_;
};

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_PROBED_MODEL_H_
