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
#include "workers/engine/graph_layers.h"
#include "workers/engine/instrumented_model.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

using torch::jit::Node;
using torch::jit::Value;

// Float64 elements per Gram chunk (2 MiB): bounds the temporary copy of a feature map
// while keeping BLAS calls large enough to run near full speed.
constexpr int64_t kGramChunkElements = int64_t{1} << 18;

// Float32 elements per Gram chunk of a float32 map (128 KiB): the chunk and its centred
// copy stay in a core's L2 cache, and a float32 product sums at most ~1000 terms before
// it is added into the float64 Gram (relative error ~1e-7 per chunk, measured ~1e-8).
constexpr int64_t kFloatGramChunkElements = int64_t{1} << 15;

// A layer whose output varies across samples by less than this fraction of its energy
// (relative variation ~1e-6, near float32 rounding) counts as constant.
constexpr double kConstantFeatureFraction = 1e-12;

// Keeps OpenBLAS (when it is the BLAS behind LibTorch) on one thread for its lifetime.
// OpenBLAS's own thread pool competing with LibTorch's OpenMP threads for the same cores
// made the Gram several times slower (docs/benchmarks.md). Looked up at run time: other
// BLAS libraries have no such functions.
class BlasOnOneThread {
 public:
  BlasOnOneThread() {
    static const auto get =
        reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    static const auto set =
        reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (get != nullptr && set != nullptr) {
      set_ = set;
      saved_ = get();
      set_(1);
    }
  }
  ~BlasOnOneThread() {
    if (set_ != nullptr) set_(saved_);
  }
  BlasOnOneThread(const BlasOnOneThread&) = delete;
  BlasOnOneThread& operator=(const BlasOnOneThread&) = delete;

 private:
  void (*set_)(int) = nullptr;
  int saved_ = 1;
};

// BLAS dsyrk (C += A^T A, one triangle), when the BLAS behind LibTorch exports it: half
// the work of the general product that LibTorch's addmm would do.
using DsyrkFn = void (*)(const char* uplo, const char* trans, const int* n, const int* k,
                         const double* alpha, const double* a, const int* lda, const double* beta,
                         double* c, const int* ldc);
DsyrkFn FindDsyrk() {
  static const auto dsyrk = reinterpret_cast<DsyrkFn>(dlsym(RTLD_DEFAULT, "dsyrk_"));
  return dsyrk;
}

// The single-precision BLAS routines of the float32 Gram (Fortran interface), from the
// BLAS behind LibTorch; null when it does not export them.
struct FloatBlas {
  using Sgemv = void (*)(const char* trans, const int* m, const int* n, const float* alpha,
                         const float* a, const int* lda, const float* x, const int* incx,
                         const float* beta, float* y, const int* incy);
  using Saxpy = void (*)(const int* n, const float* alpha, const float* x, const int* incx,
                         float* y, const int* incy);
  using Ssyrk = void (*)(const char* uplo, const char* trans, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* beta,
                         float* c, const int* ldc);
  Sgemv sgemv = nullptr;
  Saxpy saxpy = nullptr;
  Ssyrk ssyrk = nullptr;
  bool available() const { return sgemv != nullptr && saxpy != nullptr && ssyrk != nullptr; }
};
const FloatBlas& FindFloatBlas() {
  static const FloatBlas blas{reinterpret_cast<FloatBlas::Sgemv>(dlsym(RTLD_DEFAULT, "sgemv_")),
                              reinterpret_cast<FloatBlas::Saxpy>(dlsym(RTLD_DEFAULT, "saxpy_")),
                              reinterpret_cast<FloatBlas::Ssyrk>(dlsym(RTLD_DEFAULT, "ssyrk_"))};
  return blas;
}

// The centred Gram of a float32 CPU map [n, columns] (row-major), float64, [n, n].
//
// Each chunk of columns is centred in float32 by its (float32) column means, multiplied in
// float32 (ssyrk) and added into a float64 sum; the float64 sum is then centred once more
// (H K H). Why this is accurate: centring before the product leaves only the variation
// across samples in the float32 numbers, so a large feature mean cannot cancel digits away;
// the float32 means are off by rounding only, a per-column constant shift that H K H
// removes exactly (H 1 = 0), and in float64. Both cores share the chunks: while the taps
// run the forward pass waits, so the cores are otherwise idle. All arithmetic is BLAS
// (vectorised for the CPU at run time), which this -O2 build's own loops would not be.
torch::Tensor FloatCentredGram(const FloatBlas& blas, const float* data, int64_t n, int64_t columns,
                               double* mean_energy) {
  const int64_t chunk = std::min(columns, std::max<int64_t>(64, kFloatGramChunkElements / n));
  const int64_t chunks = (columns + chunk - 1) / chunk;
  std::vector<double> lower(n * n, 0.0);  // Row-major, lower triangle filled.
  double energy = 0;                      // n * sum of squared column means.
  absl::Mutex merge_mutex;
  BlasOnOneThread blas_on_one_thread;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    const int rows = static_cast<int>(n), lda = static_cast<int>(columns), inc = 1;
    const float inverse_n = 1.0f / static_cast<float>(n), minus_one = -1.0f, one = 1.0f,
                zero = 0.0f;
    std::vector<float> ones(n, 1.0f), mean(chunk), centred(n * chunk), product(n * n);
    std::vector<double> sum(n * n, 0.0);
    double squares = 0;
    for (int64_t index = first; index < last; ++index) {
      const int64_t begin = index * chunk;
      const int width = static_cast<int>(std::min(chunk, columns - begin));
      const float* block = data + begin;
      // Row-major [n, width] with row stride `columns` is column-major A = [width, n]:
      // the column means are A 1 / n.
      blas.sgemv("N", &width, &rows, &inverse_n, block, &lda, ones.data(), &inc, &zero, mean.data(),
                 &inc);
      for (int64_t a = 0; a < n; ++a) {
        float* out = centred.data() + a * width;
        std::memcpy(out, block + a * columns, sizeof(float) * width);
        blas.saxpy(&width, &minus_one, mean.data(), &inc, out, &inc);
      }
      // X X^T = A^T A for the column-major A = [width, n]; the upper triangle in
      // column-major terms is the lower one of the row-major `product`.
      blas.ssyrk("U", "T", &rows, &width, &one, centred.data(), &width, &zero, product.data(),
                 &rows);
      for (int64_t a = 0; a < n; ++a) {
        for (int64_t b = 0; b <= a; ++b) sum[a * n + b] += product[a * n + b];
      }
      for (int c = 0; c < width; ++c) squares += static_cast<double>(mean[c]) * mean[c];
    }
    absl::MutexLock lock(&merge_mutex);
    for (int64_t i = 0; i < n * n; ++i) lower[i] += sum[i];
    energy += static_cast<double>(n) * squares;
  });
  if (mean_energy != nullptr) *mean_energy = energy;

  // H K H in float64: K_ab - r_a - r_b + t with r the row means and t their mean.
  torch::Tensor gram = torch::empty({n, n}, torch::kDouble);
  double* k = gram.data_ptr<double>();
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = 0; b <= a; ++b) k[a * n + b] = k[b * n + a] = lower[a * n + b];
  }
  std::vector<double> row_mean(n, 0.0);
  double total_mean = 0;
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = 0; b < n; ++b) row_mean[a] += k[a * n + b];
    row_mean[a] /= static_cast<double>(n);
    total_mean += row_mean[a] / static_cast<double>(n);
  }
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = 0; b < n; ++b) k[a * n + b] += total_mean - row_mean[a] - row_mean[b];
  }
  return gram;
}

// ---------------------------------------------------------------------------------------
// The collector the output hooks feed.

// One site's static facts, resolved when the graph is rewritten.
struct LayerSite {
  std::string name;
  std::string kind;
  torch::Tensor weight;
  bool after_batch_norm = false;
};

class GramCollector : public SiteHooks {
 public:
  GramCollector(const std::vector<LayerSite>& sites, const std::vector<int64_t>& layer_of_site,
                int64_t samples, int tap_sites, const TapProgressFn& progress)
      : sites_(sites),
        layer_of_site_(layer_of_site),
        samples_(samples),
        tap_sites_(tap_sites),
        progress_(progress),
        layers_(sites.size()) {}

  // Runs inside the forward pass. Throwing aborts the pass; the reason is kept in
  // status_ / cancelled_ for Collect() to report.
  void OnOutput(int64_t site_index, const at::Tensor& output) override {
    if (site_index < 0 || site_index >= static_cast<int64_t>(layer_of_site_.size())) return;
    const int64_t layer_id = layer_of_site_[site_index];
    absl::MutexLock lock(&mutex_);
    if (layer_id < 0 || layer_id >= static_cast<int64_t>(layers_.size())) return;
    const LayerSite& site = sites_[layer_id];
    Measured& layer = layers_[layer_id];
    if (!output.is_floating_point() || output.dim() < 1 || output.size(0) != samples_) {
      status_ = JobFailure(
          absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
          absl::StrCat("layer '", site.name, "' produced an output of shape [",
                       absl::StrJoin(output.sizes(), ", "), "] without the batch of ", samples_,
                       " samples in dimension 0; per-sample features are needed"));
      TORCH_CHECK(false, "ompq: ", status_.message());
    }
    // MACs for one sample: (weight elements per output channel) x (outputs per sample).
    // Holds for grouped/depthwise convolutions and for Linear with extra leading dims.
    const int64_t macs = site.weight.numel() / site.weight.size(0) * (output.numel() / samples_);
    ++layer.calls;
    layer.macs += macs;
    // A module called twice is one layer; its first call's features stand for it.
    if (layer.calls > 1) return;

    layer.output_shape = output.sizes().vec();
    double variance_fraction = 0;
    layer.gram = CentredGram(output, &variance_fraction);
    // Differences between samples at float32 rounding level are noise, not features:
    // such a layer is treated as constant (its Gram zero; see ComputeOrthogonality).
    if (variance_fraction < kConstantFeatureFraction) layer.gram.zero_();
    order_.push_back(static_cast<int>(layer_id));
    if (progress_ && !progress_(static_cast<int>(order_.size()), tap_sites_)) {
      cancelled_ = true;
      TORCH_CHECK(false, "ompq: search cancelled");
    }
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
  };

  const std::vector<LayerSite>& sites_;
  const std::vector<int64_t>& layer_of_site_;
  const int64_t samples_;
  const int tap_sites_;
  const TapProgressFn& progress_;
  mutable absl::Mutex mutex_;
  std::vector<Measured> layers_ ABSL_GUARDED_BY(mutex_);
  std::vector<int> order_ ABSL_GUARDED_BY(mutex_);
  bool cancelled_ ABSL_GUARDED_BY(mutex_) = false;
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

}  // namespace

torch::Tensor CentredGram(const torch::Tensor& output, double* variance_fraction) {
  const int64_t n = output.size(0);
  // Column order does not change X X^T, so a channels-last map is read in its memory
  // order instead of being copied into NCHW order.
  torch::Tensor flat;
  if (output.dim() == 4 && !output.is_contiguous() &&
      output.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    flat = output.permute({0, 2, 3, 1}).reshape({n, -1});
  } else if (output.dim() == 5 && !output.is_contiguous() &&
             output.is_contiguous(at::MemoryFormat::ChannelsLast3d)) {
    flat = output.permute({0, 2, 3, 4, 1}).reshape({n, -1});
  } else {
    flat = output.reshape({n, -1});
  }
  if (flat.scalar_type() != torch::kFloat && flat.scalar_type() != torch::kDouble) {
    flat = flat.to(torch::kFloat);
  }
  flat = flat.contiguous();  // A view already, except for unusual strides.
  const int64_t columns = flat.size(1);
  const FloatBlas& float_blas = FindFloatBlas();
  if (flat.is_cpu() && flat.scalar_type() == torch::kFloat && float_blas.available() &&
      n <= INT32_MAX && columns <= INT32_MAX) {
    double mean_energy = 0;
    torch::Tensor gram =
        FloatCentredGram(float_blas, flat.data_ptr<float>(), n, columns, &mean_energy);
    if (variance_fraction != nullptr) {
      const double varying = gram.trace().item<double>();
      const double total = varying + mean_energy;
      *variance_fraction = total > 0 ? varying / total : 0.0;
    }
    return gram;
  }
  const torch::TensorOptions options = flat.options().dtype(torch::kDouble);
  const int64_t chunk = std::min(columns, std::max<int64_t>(16, kGramChunkElements / n));

  torch::Tensor gram = torch::zeros({n, n}, options);
  double mean_energy = 0;  // n * sum of squared column means
  if (flat.is_cuda()) {
    // Tensor ops: kernels run asynchronously, chunk after chunk.
    torch::Tensor squares = torch::zeros({}, options);
    for (int64_t begin = 0; begin < columns; begin += chunk) {
      torch::Tensor x = flat.narrow(1, begin, std::min(chunk, columns - begin)).to(torch::kDouble);
      torch::Tensor mean = x.mean(0, /*keepdim=*/true);
      x.sub_(mean);
      gram.addmm_(x, x.t());
      squares.add_(mean.square().sum());
    }
    mean_energy = n * squares.item<double>();
  } else {
    // Plain loops and one single-threaded BLAS call per chunk. Many small LibTorch ops
    // would each open an OpenMP parallel region, and on a busy machine every region
    // waits for a descheduled thread: measured 5x slower (docs/benchmarks.md).
    BlasOnOneThread blas_on_one_thread;
    torch::Tensor buffer = torch::empty({n * chunk}, options);  // Reused for every chunk.
    std::vector<double> mean(chunk);
    const DsyrkFn dsyrk = n <= INT32_MAX && chunk <= INT32_MAX ? FindDsyrk() : nullptr;
    auto accumulate = [&](auto* data) {
      for (int64_t begin = 0; begin < columns; begin += chunk) {
        const int64_t width = std::min(chunk, columns - begin);
        double* x = buffer.data_ptr<double>();
        std::fill(mean.begin(), mean.begin() + width, 0.0);
        for (int64_t a = 0; a < n; ++a) {
          const auto* row = data + a * columns + begin;
          double* out = x + a * width;
          for (int64_t c = 0; c < width; ++c) {
            out[c] = static_cast<double>(row[c]);
            mean[c] += out[c];
          }
        }
        // Centring a chunk's columns over the samples is exact: a column's mean only
        // involves that column. Centring before multiplying (not H K H afterwards)
        // avoids cancellation when features have a large mean.
        for (int64_t c = 0; c < width; ++c) {
          mean[c] /= static_cast<double>(n);
          mean_energy += n * mean[c] * mean[c];
        }
        for (int64_t a = 0; a < n; ++a) {
          double* out = x + a * width;
          for (int64_t c = 0; c < width; ++c) out[c] -= mean[c];
        }
        if (dsyrk != nullptr) {
          // Row-major [n, width] is column-major A = [width, n]: X X^T = A^T A. Fills the
          // upper triangle in column-major terms, the lower one of the row-major `gram`.
          const int rows = static_cast<int>(n), depth = static_cast<int>(width);
          const double one = 1.0;
          dsyrk("U", "T", &rows, &depth, &one, x, &depth, &one, gram.data_ptr<double>(), &rows);
        } else {
          torch::Tensor centred = buffer.narrow(0, 0, n * width).view({n, width});
          gram.addmm_(centred, centred.t());
        }
      }
    };
    if (flat.scalar_type() == torch::kFloat) {
      accumulate(flat.data_ptr<float>());
    } else {
      accumulate(flat.data_ptr<double>());
    }
    if (dsyrk != nullptr) gram = gram.tril() + gram.tril(-1).t();
  }
  if (variance_fraction != nullptr) {
    // trace(K) is the energy that varies across samples; trace(K) + mean_energy is all of it.
    const double varying = gram.trace().item<double>();
    const double total = varying + mean_energy;
    *variance_fraction = total > 0 ? varying / total : 0.0;
  }
  return gram;
}

struct TappedModel::State {
  std::unique_ptr<InstrumentedModel> model;  // Output hooks at every site.
  std::vector<LayerSite> sites;              // Indexed by layer id.
  std::vector<int64_t> layer_of_site;        // A layer called at several sites is one.
  int64_t total_parameters = 0;
};

TappedModel::TappedModel(std::unique_ptr<State> state) : state_(std::move(state)) {}
TappedModel::TappedModel(TappedModel&&) noexcept = default;
TappedModel& TappedModel::operator=(TappedModel&&) noexcept = default;
TappedModel::~TappedModel() = default;

int TappedModel::tap_sites() const { return static_cast<int>(state_->layer_of_site.size()); }
int64_t TappedModel::total_parameters() const { return state_->total_parameters; }
std::shared_ptr<torch::jit::Graph> TappedModel::graph() const {
  return state_->model->shared_graph();
}

absl::StatusOr<TappedModel> TappedModel::Create(const torch::jit::Module& module,
                                                const torch::Device& device) {
  auto state = std::make_unique<State>();
  HookPoints points;
  points.output = true;
  ASSIGN_OR_RETURN(state->model, InstrumentedModel::Create(LoadedModel{module, device}, points));
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kInternal, reason::kInternal, "cannot resolve the layers", [&] {
        std::unordered_map<std::string, int64_t> layer_ids;
        for (const LayerSiteNode& site : state->model->sites()) {
          auto [it, inserted] = layer_ids.emplace(site.name, static_cast<int64_t>(state->sites.size()));
          if (inserted) {
            state->sites.push_back(
                {site.name, site.kind,
                 *ResolveTensor(module, site.weight_path, /*parameter_only=*/true),
                 site.batch_norm != nullptr});
          }
          state->layer_of_site.push_back(it->second);
        }
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
  GramCollector collector(state_->sites, state_->layer_of_site, inputs.size(0), tap_sites(),
                          progress);
  absl::Status ran;
  c10::IValue output;
  {
    HooksScope scope(*state_->model, &collector);
    torch::manual_seed(seed);
    absl::StatusOr<c10::IValue> result = state_->model->Forward(
        inputs, absl::StrCat("the model rejects inputs of shape ", ShapeString(inputs)));
    ran = result.status();
    if (result.ok()) output = *std::move(result);
  }
  if (collector.cancelled()) {
    return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled, "the search was cancelled");
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

}  // namespace ompq::engine
