// Where the samples are in a layer's output. Most layers keep the batch in dimension 0,
// but sequence models move it: nn.MultiheadAttention's unfused path runs its projections
// on [T, N, E] and its output projection on the flattened [T * N, E]. Per-sample features
// need the batch first, so it is found by comparing the output of the whole batch with
// that of the batch's first sample alone.
#ifndef OMPQ_WORKERS_ENGINE_BATCH_LAYOUT_H_
#define OMPQ_WORKERS_ENGINE_BATCH_LAYOUT_H_

#include <torch/torch.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace ompq::engine {

/// The batch is in dimension `dim`, whose size is N * `per_sample`; sample b's entries are
/// b * per_sample + j when `sample_major` (a batch-first flatten, [N * T]), else j * N + b
/// (a sequence-first flatten, [T * N]).
struct BatchLayout {
  int64_t dim = 0;
  int64_t per_sample = 1;
  bool sample_major = true;
};

/// The layout of `output` (from `samples` inputs), given `first` (the same layer's output
/// for the first input alone): the one dimension whose size is `samples` times that of
/// `first`, and where sample 0's entries lie in it (those that equal `first`). INVALID_ARGUMENT
/// when no dimension, or no placement, fits.
absl::StatusOr<BatchLayout> FindBatchLayout(const torch::Tensor& first, const torch::Tensor& output,
                                            int64_t samples);

/// `output` with the batch in dimension 0: [N, ...], one row per sample.
torch::Tensor BatchFirst(const torch::Tensor& output, const BatchLayout& layout, int64_t samples);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_BATCH_LAYOUT_H_
