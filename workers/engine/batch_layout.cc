#include "workers/engine/batch_layout.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ompq::engine {
namespace {

// Sample 0's entries of `output` under `layout`, shaped like the single-input output.
torch::Tensor FirstSample(const torch::Tensor& output, const BatchLayout& layout, int64_t samples) {
  return BatchFirst(output, layout, samples).select(0, 0);
}

// Equal to rounding: LibTorch may pick other kernels for another batch size.
bool Matches(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  const torch::Tensor x = a.to(torch::kDouble), y = b.to(torch::kDouble);
  const double scale = std::max(1.0, y.abs().max().item<double>());
  return torch::allclose(x, y, 1e-4, 1e-5 * scale, /*equal_nan=*/true);
}

}  // namespace

absl::StatusOr<BatchLayout> FindBatchLayout(const torch::Tensor& first, const torch::Tensor& output,
                                            int64_t samples) {
  auto shapes = [&] {
    return absl::StrCat("[", absl::StrJoin(output.sizes(), ", "), "] for ", samples,
                        " samples and [", absl::StrJoin(first.sizes(), ", "), "] for one");
  };
  if (first.dim() != output.dim() || output.dim() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("output shapes ", shapes()));
  }
  std::vector<int64_t> batch_dims;
  for (int64_t d = 0; d < output.dim(); ++d) {
    if (output.size(d) != first.size(d)) batch_dims.push_back(d);
  }
  if (batch_dims.size() != 1 || output.size(batch_dims[0]) != samples * first.size(batch_dims[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("no one dimension holds the batch: output shapes ", shapes()));
  }
  BatchLayout layout;
  layout.dim = batch_dims[0];
  layout.per_sample = first.size(layout.dim);
  if (layout.per_sample == 1) return layout;  // Both placements are the same.
  // A flattened batch: sample 0 leads (a batch-first flatten) or is interleaved.
  if (Matches(FirstSample(output, layout, samples), first)) return layout;
  layout.sample_major = false;
  if (Matches(FirstSample(output, layout, samples), first)) return layout;
  return absl::InvalidArgumentError(
      absl::StrCat("dimension ", layout.dim,
                   " mixes the samples in an unknown order: output shapes ", shapes()));
}

torch::Tensor BatchFirst(const torch::Tensor& output, const BatchLayout& layout, int64_t samples) {
  if (layout.dim == 0 && layout.per_sample == 1) return output;
  if (layout.sample_major) {
    return output.unflatten(layout.dim, {samples, layout.per_sample}).movedim(layout.dim, 0);
  }
  return output.unflatten(layout.dim, {layout.per_sample, samples}).movedim(layout.dim + 1, 0);
}

}  // namespace ompq::engine
