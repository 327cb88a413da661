#include "workers/engine/layer_discovery.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/batch_layout.h"
#include "workers/engine/graph_layers.h"
#include "workers/engine/instrumented_model.h"
#include "workers/engine/layer_distortion.h"
#include "workers/engine/quant_layers.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

using torch::jit::Node;
using torch::jit::Value;

// A layer whose output varies across samples by less than this fraction of its energy
// (relative variation ~1e-6, near float32 rounding) counts as constant.
constexpr double kConstantFeatureFraction = 1e-12;

// ---------------------------------------------------------------------------------------
// The collector the output hooks feed.

// One site's static facts, resolved when the graph is rewritten.
struct LayerSite {
  std::string name;
  std::string kind;
  torch::Tensor weight;
  bool after_batch_norm = false;
  torch::Tensor folded_weight;  // As the quantizer sees it; set when inputs are measured.
};

// Records each layer's first output: the one-sample pass that batch layouts are found
// from (batch_layout.h).
class FirstOutputs : public SiteHooks {
 public:
  explicit FirstOutputs(const std::vector<int64_t>& layer_of_site, size_t layers)
      : layer_of_site_(layer_of_site), outputs_(layers) {}
  void OnOutput(int64_t site_index, const at::Tensor& output) override {
    if (site_index < 0 || site_index >= static_cast<int64_t>(layer_of_site_.size())) return;
    const int64_t layer_id = layer_of_site_[site_index];
    absl::MutexLock lock(&mutex_);
    torch::Tensor& kept = outputs_[layer_id];
    if (!kept.defined()) kept = output.detach().clone();
  }
  std::vector<torch::Tensor> Take() {
    absl::MutexLock lock(&mutex_);
    return std::move(outputs_);
  }

 private:
  const std::vector<int64_t>& layer_of_site_;
  absl::Mutex mutex_;
  std::vector<torch::Tensor> outputs_ ABSL_GUARDED_BY(mutex_);
};

class GramCollector : public SiteHooks {
 public:
  // `first_outputs`: each layer's output for the first sample alone, when a pass found a
  // layer without the batch in dimension 0 (null before that); `reported`: progress
  // already reported by an earlier pass.
  GramCollector(const std::vector<LayerSite>& sites, const std::vector<int64_t>& layer_of_site,
                int64_t samples, int tap_sites, const TapProgressFn& progress,
                const std::vector<torch::Tensor>* first_outputs, int* reported)
      : sites_(sites),
        layer_of_site_(layer_of_site),
        samples_(samples),
        tap_sites_(tap_sites),
        progress_(progress),
        first_outputs_(first_outputs),
        reported_(*reported),
        layers_(sites.size()) {}

  // The input hook (only in a model measuring input energy): h per input channel of the
  // layer's first call.
  at::Tensor OnInput(int64_t site_index, const at::Tensor& x) override {
    if (site_index < 0 || site_index >= static_cast<int64_t>(layer_of_site_.size())) return x;
    const int64_t layer_id = layer_of_site_[site_index];
    absl::MutexLock lock(&mutex_);
    if (layer_id < 0 || layer_id >= static_cast<int64_t>(layers_.size())) return x;
    Measured& layer = layers_[layer_id];
    if (!layer.input_energy.defined() && x.is_floating_point() && x.dim() >= 1) {
      layer.input_energy = InputChannelEnergy(x, sites_[layer_id].kind == "linear");
    }
    return x;
  }

  // Runs inside the forward pass. Throwing aborts the pass; the reason is kept in
  // status_ / cancelled_ for Collect() to report.
  void OnOutput(int64_t site_index, const at::Tensor& output) override {
    if (site_index < 0 || site_index >= static_cast<int64_t>(layer_of_site_.size())) return;
    const int64_t layer_id = layer_of_site_[site_index];
    absl::MutexLock lock(&mutex_);
    if (layer_id < 0 || layer_id >= static_cast<int64_t>(layers_.size())) return;
    const LayerSite& site = sites_[layer_id];
    Measured& layer = layers_[layer_id];
    auto fail = [&](const std::string& why) {
      status_ =
          JobFailure(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                     absl::StrCat("layer '", site.name, "' produced an output of shape [",
                                  absl::StrJoin(output.sizes(), ", "), "] where the batch of ",
                                  samples_, " samples cannot be told apart (", why,
                                  "); per-sample features are needed"));
      TORCH_CHECK(false, "ompq: ", status_.message());
    };
    if (!output.is_floating_point() || output.dim() < 1) fail("not a floating-point tensor");
    torch::Tensor per_sample = output;
    if (first_outputs_ != nullptr && (*first_outputs_)[layer_id].defined()) {
      absl::StatusOr<BatchLayout> layout =
          FindBatchLayout((*first_outputs_)[layer_id], output, samples_);
      if (!layout.ok()) fail(std::string(layout.status().message()));
      per_sample = BatchFirst(output, *layout, samples_);
    } else if (output.size(0) != samples_) {
      if (first_outputs_ != nullptr) fail("it did not run on one sample");
      // The batch is elsewhere: Collect finds where from a pass on one sample, then
      // runs this pass again.
      needs_layout_ = true;
      TORCH_CHECK(false, "ompq: layer '", site.name, "' moves the batch");
    }
    // MACs for one sample: (weight elements per output channel) x (outputs per sample).
    // Holds for grouped/depthwise convolutions and for Linear with extra leading dims.
    const int64_t macs = site.weight.numel() / site.weight.size(0) * (output.numel() / samples_);
    ++layer.calls;
    layer.macs += macs;
    // A module called twice is one layer; its first call's features stand for it.
    if (layer.calls > 1) return;

    layer.output_shape = per_sample.sizes().vec();
    double variance_fraction = 0;
    layer.gram = CentredGram(per_sample, &variance_fraction);
    // Differences between samples at float32 rounding level are noise, not features:
    // such a layer is treated as constant (its Gram zero; see ComputeOrthogonality).
    if (variance_fraction < kConstantFeatureFraction) layer.gram.zero_();
    order_.push_back(static_cast<int>(layer_id));
    const int measured = static_cast<int>(order_.size());
    if (measured <= reported_) return;
    reported_ = measured;
    if (progress_ && !progress_(measured, tap_sites_)) {
      cancelled_ = true;
      TORCH_CHECK(false, "ompq: search cancelled");
    }
  }

  bool needs_layout() const {
    absl::MutexLock lock(&mutex_);
    return needs_layout_;
  }

  bool cancelled() const {
    absl::MutexLock lock(&mutex_);
    return cancelled_;
  }
  absl::Status status() const {
    absl::MutexLock lock(&mutex_);
    return status_;
  }

  // The measured layers in execution order, Grams moved to host memory.
  absl::StatusOr<LayerFeatures> Finish() {
    absl::MutexLock lock(&mutex_);
    LayerFeatures features;
    features.samples = samples_;
    for (int id : order_) {
      const LayerSite& site = sites_[id];
      Measured& layer = layers_[id];
      torch::Tensor gram = layer.gram.to(torch::kCPU).contiguous();
      if (!torch::isfinite(gram).all().item<bool>()) {
        return JobFailure(
            absl::StatusCode::kInvalidArgument, reason::kNonFiniteInput,
            absl::StrCat("layer '", site.name, "' produced NaN or Inf on the calibration inputs"));
      }
      const double* data = gram.data_ptr<double>();
      features.grams.emplace_back(data, data + gram.numel());
      LayerInfo info;
      info.name = site.name;
      info.kind = site.kind;
      info.weight_shape = site.weight.sizes().vec();
      info.params = site.weight.numel();
      info.macs = layer.macs;
      info.calls = layer.calls;
      info.after_batch_norm = site.after_batch_norm;
      info.output_shape = layer.output_shape;
      features.layers.push_back(std::move(info));
      if (site.folded_weight.defined()) {
        features.weights.push_back(site.folded_weight);
        features.input_energy.push_back(layer.input_energy);
      }
      layer.gram = torch::Tensor();
    }
    return features;
  }

 private:
  struct Measured {
    int calls = 0;
    int64_t macs = 0;
    std::vector<int64_t> output_shape;
    torch::Tensor gram;
    torch::Tensor input_energy;
  };

  const std::vector<LayerSite>& sites_;
  const std::vector<int64_t>& layer_of_site_;
  const int64_t samples_;
  const int tap_sites_;
  const TapProgressFn& progress_;
  const std::vector<torch::Tensor>* first_outputs_;
  int& reported_;
  mutable absl::Mutex mutex_;
  std::vector<Measured> layers_ ABSL_GUARDED_BY(mutex_);
  std::vector<int> order_ ABSL_GUARDED_BY(mutex_);
  bool cancelled_ ABSL_GUARDED_BY(mutex_) = false;
  bool needs_layout_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
};

// Sets the model's hooks for the duration of one forward pass.
class HooksScope {
 public:
  HooksScope(InstrumentedModel& model, SiteHooks* hooks) : model_(model) { model_.SetHooks(hooks); }
  ~HooksScope() { model_.SetHooks(nullptr); }
  HooksScope(const HooksScope&) = delete;
  HooksScope& operator=(const HooksScope&) = delete;

 private:
  InstrumentedModel& model_;
};

// ---------------------------------------------------------------------------------------
// Graph rewriting.

std::string ShapeString(const torch::Tensor& tensor) {
  return absl::StrCat("[", absl::StrJoin(tensor.sizes(), ", "), "]");
}

// Compares the untouched graph's output on the first rows of the batch (`sample`) with
// the rewritten graph's output on the whole batch (`full`, `batch` rows).
struct OutputComparison {
  int compared = 0;  // Tensors compared row by row.
  bool differs = false;
};

void CompareOutputs(const c10::IValue& sample, const c10::IValue& full, int64_t batch,
                    OutputComparison& result) {
  if (sample.isTensor() && full.isTensor()) {
    const torch::Tensor& x = sample.toTensor();
    const torch::Tensor& y = full.toTensor();
    // Only tensors with the batch in dimension 0 can be matched row by row; others (a
    // mean over the batch, say) depend on the whole batch.
    if (x.dim() == 0 || y.dim() != x.dim() || y.size(0) != batch ||
        x.sizes().slice(1) != y.sizes().slice(1) || x.scalar_type() != y.scalar_type()) {
      return;
    }
    const torch::Tensor rows = y.narrow(0, 0, x.size(0));
    ++result.compared;
    if (!x.is_floating_point()) {
      result.differs |= !torch::equal(x, rows);
      return;
    }
    // Same ops on a different batch size: LibTorch may pick other kernels, so agreement
    // is to rounding, not to the bit.
    const double scale = std::max(1.0, x.abs().max().item<double>());
    result.differs |= !torch::allclose(x, rows, 1e-4, 1e-5 * scale, /*equal_nan=*/true);
    return;
  }
  if (sample.tagKind() != full.tagKind()) {
    result.differs = true;
    return;
  }
  auto compare_lists = [&](c10::ArrayRef<c10::IValue> xs, c10::ArrayRef<c10::IValue> ys) {
    if (xs.size() != ys.size()) {
      result.differs = true;
      return;
    }
    for (size_t i = 0; i < xs.size(); ++i) CompareOutputs(xs[i], ys[i], batch, result);
  };
  if (sample.isTuple()) {
    compare_lists(sample.toTupleRef().elements(), full.toTupleRef().elements());
  } else if (sample.isList()) {
    compare_lists(sample.toListRef(), full.toListRef());
  } else if (sample.isGenericDict()) {
    const c10::Dict<c10::IValue, c10::IValue> x = sample.toGenericDict();
    const c10::Dict<c10::IValue, c10::IValue> y = full.toGenericDict();
    if (x.size() != y.size()) {
      result.differs = true;
      return;
    }
    for (const auto& entry : x) {
      auto it = y.find(entry.key());
      if (it == y.end()) {
        result.differs = true;
        return;
      }
      CompareOutputs(entry.value(), it->value(), batch, result);
    }
  }
  // Scalars, strings, None: they may depend on the batch; nothing to compare.
}

// The weight the quantizer will quantize: with the BatchNorm that consumes the output
// folded in (quant_layers.h), else the weight itself; float on the CPU.
torch::Tensor FoldedWeight(const LayerSiteNode& site, const torch::Tensor& weight,
                           const torch::jit::Module& module, const Value* self) {
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.detach().to(torch::kCPU, torch::kFloat);
  torch::Tensor bias;
  if (site.bias_path) {
    if (std::optional<torch::Tensor> b = ResolveTensor(module, *site.bias_path, false)) bias = *b;
  }
  std::optional<BatchNormParams> bn = InferenceBatchNorm(site, module, self, bias.defined());
  if (!bn) return w;
  absl::StatusOr<FoldedLayer> folded = FoldBatchNorm(w, bias, *bn);
  return folded.ok() ? folded->weight.to(torch::kFloat) : w;
}

}  // namespace


struct TappedModel::State {
  std::unique_ptr<InstrumentedModel> model;  // Output hooks at every site.
  std::vector<LayerSite> sites;              // Indexed by layer id.
  std::vector<int64_t> layer_of_site;        // A layer called at several sites is one.
  int64_t total_parameters = 0;
  std::vector<UnquantizedParameter> unquantized;
};

TappedModel::TappedModel(std::unique_ptr<State> state) : state_(std::move(state)) {}
TappedModel::TappedModel(TappedModel&&) noexcept = default;
TappedModel& TappedModel::operator=(TappedModel&&) noexcept = default;
TappedModel::~TappedModel() = default;

int TappedModel::tap_sites() const { return static_cast<int>(state_->layer_of_site.size()); }
int64_t TappedModel::total_parameters() const { return state_->total_parameters; }
const std::vector<UnquantizedParameter>& TappedModel::unquantized() const {
  return state_->unquantized;
}
std::shared_ptr<torch::jit::Graph> TappedModel::graph() const {
  return state_->model->shared_graph();
}

absl::StatusOr<TappedModel> TappedModel::Create(const torch::jit::Module& module,
                                                const torch::Device& device,
                                                bool measure_inputs) {
  auto state = std::make_unique<State>();
  HookPoints points;
  points.output = true;
  points.input = measure_inputs;
  ASSIGN_OR_RETURN(state->model, InstrumentedModel::Create(LoadedModel{module, device}, points));
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kInternal, reason::kInternal, "cannot resolve the layers", [&] {
        std::unordered_map<std::string, int64_t> layer_ids;
        for (const LayerSiteNode& site : state->model->sites()) {
          auto [it, inserted] =
              layer_ids.emplace(site.name, static_cast<int64_t>(state->sites.size()));
          if (inserted) {
            LayerSite layer{site.name, site.kind,
                            *ResolveTensor(module, site.weight_path, /*parameter_only=*/true),
                            site.batch_norm != nullptr, torch::Tensor()};
            if (measure_inputs) layer.folded_weight = FoldedWeight(site, layer.weight, module,
                                                                   state->model->self());
            state->sites.push_back(std::move(layer));
          }
          state->layer_of_site.push_back(it->second);
        }
        state->unquantized =
            UnquantizedParameters(state->model->graph(), module, state->model->sites());
        std::unordered_set<const c10::TensorImpl*> seen;
        for (const torch::Tensor& parameter : module.parameters(/*recurse=*/true)) {
          if (seen.insert(parameter.unsafeGetTensorImpl()).second) {
            state->total_parameters += parameter.numel();
          }
        }
      }));
  if (state->sites.empty()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNoQuantizableLayers,
                      "the model's forward has no Conv1d/Conv2d/Conv3d or Linear layer whose "
                      "weight is a module parameter");
  }
  return TappedModel(std::move(state));
}

absl::Status TappedModel::CheckAgainstModel(const torch::Tensor& inputs, const c10::IValue& output,
                                            int64_t seed, std::string* skipped) const {
  // Two samples exercise every op of the graph at a small fraction of the batch's cost.
  // (Not one: LibTorch runs some one-sample convolutions through im2col and BLAS instead
  // of oneDNN, slower and contending with OpenMP for the cores.)
  const torch::Tensor sample = inputs.narrow(0, 0, std::min<int64_t>(inputs.size(0), 2));
  BlasOnOneThread blas_on_one_thread;
  torch::manual_seed(seed);
  absl::StatusOr<c10::IValue> ran =
      state_->model->ForwardUntouched(sample, "the model rejects a batch of two samples");
  const absl::Status model_ran = ran.status();
  c10::IValue expected = ran.ok() ? *std::move(ran) : c10::IValue();
  if (!model_ran.ok()) {
    // Models may insist on their batch size (a traced reshape, say): the full batch
    // decided whether the inputs fit, so this check gives way.
    if (skipped != nullptr) *skipped = std::string(model_ran.message());
    return absl::OkStatus();
  }
  OutputComparison comparison;
  RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInternal, reason::kInternal,
                            "cannot compare the outputs",
                            [&] { CompareOutputs(expected, output, inputs.size(0), comparison); }));
  if (comparison.differs) {
    return JobFailure(absl::StatusCode::kInternal, reason::kInternal,
                      "the rewritten forward graph computes a different output than the "
                      "model (is the model nondeterministic, or exported in training mode?)");
  }
  if (comparison.compared == 0 && skipped != nullptr) {
    *skipped = "the model's output has no tensor with the batch in dimension 0";
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerFeatures> TappedModel::Collect(const torch::Tensor& inputs, int64_t seed,
                                                   const TapProgressFn& progress) const {
  const std::string context =
      absl::StrCat("the model rejects inputs of shape ", ShapeString(inputs));
  std::optional<std::vector<torch::Tensor>> first_outputs;
  int reported = 0;
  // A second pass only when the first meets a layer that moves the batch out of dimension
  // 0 (sequence-first attention): then every layer's layout is found from one sample.
  for (;;) {
    GramCollector collector(state_->sites, state_->layer_of_site, inputs.size(0), tap_sites(),
                            progress, first_outputs ? &*first_outputs : nullptr, &reported);
    absl::Status ran;
    c10::IValue output;
    {
      HooksScope scope(*state_->model, &collector);
      torch::manual_seed(seed);
      absl::StatusOr<c10::IValue> result = state_->model->Forward(inputs, context);
      ran = result.status();
      if (result.ok()) output = *std::move(result);
    }
    if (collector.cancelled()) {
      return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled,
                        "the search was cancelled");
    }
    if (collector.needs_layout() && !first_outputs) {
      FirstOutputs recorder(state_->layer_of_site, state_->sites.size());
      {
        HooksScope scope(*state_->model, &recorder);
        torch::manual_seed(seed);
        RETURN_IF_ERROR(state_->model
                            ->Forward(inputs.narrow(0, 0, 1),
                                      "the model rejects a single sample, which finding where "
                                      "its layers keep the batch needs")
                            .status());
      }
      first_outputs = recorder.Take();
      continue;
    }
    RETURN_IF_ERROR(collector.status());
    RETURN_IF_ERROR(ran);
    ASSIGN_OR_RETURN(LayerFeatures features, collector.Finish());
    features.output = std::move(output);
    if (features.layers.empty()) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNoQuantizableLayers,
                        absl::StrCat("none of the model's ", state_->sites.size(),
                                     " layers ran in the forward pass"));
    }
    return features;
  }
}

}  // namespace ompq::engine
