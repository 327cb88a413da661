#include "workers/engine/centred_gram.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace ompq::engine {
namespace {

// Float64 elements per Gram chunk (2 MiB): bounds the temporary copy of a feature map
// while keeping BLAS calls large enough to run near full speed.
constexpr int64_t kGramChunkElements = int64_t{1} << 18;

// Float32 elements per Gram chunk of a float32 map (128 KiB): the chunk and its centred
// copy stay in a core's L2 cache, and a float32 product sums at most ~1000 terms before
// it is added into the float64 Gram (relative error ~1e-7 per chunk, measured ~1e-8).
constexpr int64_t kFloatGramChunkElements = int64_t{1} << 15;

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

}  // namespace

BlasOnOneThread::BlasOnOneThread() {
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

BlasOnOneThread::~BlasOnOneThread() {
  if (set_ != nullptr) set_(saved_);
}

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

}  // namespace ompq::engine
