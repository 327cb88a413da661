// Finding the batch in a layer's output, on the layouts sequence models produce.
#include "workers/engine/batch_layout.h"

#include <gtest/gtest.h>

namespace ompq::engine {
namespace {

constexpr int64_t kSamples = 5;
constexpr int64_t kSteps = 3;

// Per-sample data [N, T, E] with distinct samples, and sample 0 alone.
torch::Tensor Samples() { return torch::randn({kSamples, kSteps, 4}); }

TEST(BatchLayoutTest, BatchFirstIsDimensionZero) {
  const torch::Tensor x = Samples();
  absl::StatusOr<BatchLayout> layout = FindBatchLayout(x.narrow(0, 0, 1), x, kSamples);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->dim, 0);
  EXPECT_EQ(layout->per_sample, 1);
  EXPECT_TRUE(torch::equal(BatchFirst(x, *layout, kSamples), x));
}

TEST(BatchLayoutTest, SequenceFirstAndBothFlattenings) {
  torch::manual_seed(0);
  const torch::Tensor x = Samples();
  const torch::Tensor one = x.narrow(0, 0, 1);
  struct Layout {
    const char* name;
    torch::Tensor all, first;
    int64_t dim, per_sample;
    bool sample_major;
  };
  const std::vector<Layout> layouts = {
      // nn.MultiheadAttention's unfused projections: [T, N, E].
      {"[T, N, E]", x.transpose(0, 1), one.transpose(0, 1), 1, 1, true},
      // Its output projection: [T, N, E] flattened to [T * N, E].
      {"[T * N, E]", x.transpose(0, 1).reshape({-1, 4}), one.transpose(0, 1).reshape({-1, 4}), 0,
       kSteps, false},
      // A batch-first flatten, as hand-written attention does: [N * T, E].
      {"[N * T, E]", x.reshape({-1, 4}), one.reshape({-1, 4}), 0, kSteps, true},
  };
  for (const Layout& c : layouts) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<BatchLayout> layout = FindBatchLayout(c.first, c.all, kSamples);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->dim, c.dim);
    EXPECT_EQ(layout->per_sample, c.per_sample);
    EXPECT_EQ(layout->sample_major, c.sample_major);
    // One row per sample, each holding that sample's values (in some order).
    const torch::Tensor rows = BatchFirst(c.all, *layout, kSamples).reshape({kSamples, -1});
    for (int64_t b = 0; b < kSamples; ++b) {
      EXPECT_TRUE(
          torch::allclose(std::get<0>(rows[b].sort()), std::get<0>(x[b].reshape({-1}).sort())))
          << "sample " << b;
    }
  }
}

TEST(BatchLayoutTest, OutputsWithoutAFindableBatchAreRefused) {
  torch::manual_seed(1);
  const torch::Tensor x = Samples();
  // A mean over the batch: no dimension grows with it.
  EXPECT_FALSE(FindBatchLayout(x.mean(0, true), x.mean(0, true), kSamples).ok());
  // Two dimensions grow: not one batch.
  EXPECT_FALSE(
      FindBatchLayout(torch::randn({1, 1}), torch::randn({kSamples, kSamples}), kSamples).ok());
  // A flattened batch whose first entries are not sample 0's, in either order.
  const torch::Tensor flat = x.reshape({-1, 4});
  const torch::Tensor shuffled = flat.index_select(0, torch::randperm(flat.size(0)));
  absl::StatusOr<BatchLayout> layout =
      FindBatchLayout(x.narrow(0, 0, 1).reshape({-1, 4}) + 1, shuffled, kSamples);
  EXPECT_FALSE(layout.ok());
  EXPECT_NE(layout.status().message().find("unknown order"), std::string::npos) << layout.status();
}

}  // namespace
}  // namespace ompq::engine
