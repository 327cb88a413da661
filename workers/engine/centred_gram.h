// The centred Gram matrix of a layer's output, the search's feature (docs/algorithm.md):
// K = Xc Xc^T over the samples, float64, formed in chunks of columns with single-threaded
// BLAS calls shared out over the cores.
#ifndef OMPQ_WORKERS_ENGINE_CENTRED_GRAM_H_
#define OMPQ_WORKERS_ENGINE_CENTRED_GRAM_H_

#include <torch/types.h>

namespace ompq::engine {

// Keeps OpenBLAS (when it is the BLAS behind LibTorch) on one thread for its lifetime.
// OpenBLAS's own thread pool competing with LibTorch's OpenMP threads for the same cores
// made the Gram several times slower (docs/benchmarks.md). Looked up at run time: other
// BLAS libraries have no such functions.
class BlasOnOneThread {
 public:
  BlasOnOneThread();
  ~BlasOnOneThread();
  BlasOnOneThread(const BlasOnOneThread&) = delete;
  BlasOnOneThread& operator=(const BlasOnOneThread&) = delete;

 private:
  void (*set_)(int) = nullptr;
  int saved_ = 1;
};

/// The Gram matrix of `output` ([N, ...]) flattened per sample, columns centred over the
/// samples, in float64 on `output`'s device: K = Xc Xc^T, [N, N]. Works through the
/// columns in chunks so the float64 copy stays small. When `variance_fraction` is given it
/// receives trace(K) / sum of squares of `output`: the share of the output's energy that
/// varies across samples.
torch::Tensor CentredGram(const torch::Tensor& output, double* variance_fraction = nullptr);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_CENTRED_GRAM_H_
