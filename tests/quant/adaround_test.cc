// AdaRound: learned rounding must beat round-to-nearest on layers with correlated inputs
// (where the output error is not the sum of per-weight errors), stay on the grid, and be
// reproducible for a seed.
#include "workers/engine/adaround.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <vector>

namespace ompq::engine {
namespace {

// Channels mixed from a few latent maps and blurred spatially: strongly correlated inputs,
// as after a real conv + ReLU stack.
torch::Tensor CorrelatedImages(int64_t n, int64_t channels, int64_t size) {
  torch::Tensor latent = torch::randn({n, 4, size + 2, size + 2});
  torch::Tensor blur = torch::ones({4, 1, 3, 3}) / 9.0;
  const std::vector<int64_t> one = {1}, zero = {0};  // Literal 0 would also match padding="...".
  latent = torch::conv2d(latent, blur, torch::Tensor(), one, zero, one, /*groups=*/4);
  torch::Tensor mix = torch::randn({channels, 4, 1, 1});
  torch::Tensor x = torch::conv2d(latent, mix) + 0.1 * torch::randn({n, channels, size, size});
  return torch::relu(x);
}

struct ConvCase {
  torch::Tensor weight, bias, inputs;
  LayerOp op;
  QuantParams params;
};

ConvCase MakeConvCase(int bits) {
  torch::manual_seed(1);
  ConvCase c;
  c.weight = torch::randn({24, 16, 3, 3}) * 0.1;
  c.bias = torch::randn({24}) * 0.1;
  c.inputs = CorrelatedImages(256, 16, 10);
  c.op.kind = LayerOp::Kind::kConv;
  c.op.padding = {1};
  QuantizerOptions o;
  o.bits = bits;
  c.params = FitWeightQuantizer(c.weight, o).value();
  return c;
}

AdaRoundOptions FastOptions() {
  AdaRoundOptions o;
  o.iters = 800;
  o.seed = 5;
  return o;
}

TEST(AdaRoundTest, BeatsNearestRoundingOnAConvAt3Bits) {
  ConvCase c = MakeConvCase(3);
  std::vector<double> fractions;
  absl::StatusOr<AdaRoundResult> r = RunAdaRound(c.weight, c.bias, c.op, c.params, c.inputs,
                                                 torch::Tensor(), FastOptions(), [&](double f) {
                                                   fractions.push_back(f);
                                                   return true;
                                                 });
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("conv 3-bit reconstruction MSE: nearest %.6g, AdaRound %.6g (ratio %.3f)\n",
              r->mse_nearest, r->mse_adaround, r->mse_adaround / r->mse_nearest);
  EXPECT_FALSE(r->kept_nearest);
  EXPECT_LT(r->mse_adaround, 0.8 * r->mse_nearest);

  // Codes are on the 3-bit grid, and one step at most from nearest rounding (AdaRound
  // only chooses between floor and ceil).
  EXPECT_EQ(r->codes.sizes(), c.weight.sizes());
  EXPECT_EQ(r->codes.scalar_type(), torch::kLong);
  EXPECT_GE(r->codes.min().item<int64_t>(), 0);
  EXPECT_LE(r->codes.max().item<int64_t>(), 7);
  torch::Tensor nearest = Quantize(c.weight, c.params).value();
  EXPECT_LE((r->codes - nearest).abs().max().item<int64_t>(), 1);
  EXPECT_GT((r->codes != nearest).sum().item<int64_t>(), 0);

  // The weight is the codes dequantised, and the reported MSE is what torch computes.
  torch::Tensor dequantised = Dequantize(r->codes, c.params).value();
  EXPECT_TRUE(torch::allclose(r->weight, dequantised, 1e-6, 1e-7));
  torch::NoGradGuard no_grad;
  torch::Tensor y = torch::conv2d(c.inputs, c.weight, c.bias, 1, 1);
  const double mse = (torch::conv2d(c.inputs, dequantised, c.bias, 1, 1) - y)
                         .to(torch::kDouble)
                         .pow(2)
                         .mean()
                         .item<double>();
  EXPECT_NEAR(r->mse_adaround, mse, 1e-4 * mse);
  torch::Tensor nearest_w = QuantizeDequantize(c.weight, c.params).value();
  const double mse_nearest = (torch::conv2d(c.inputs, nearest_w, c.bias, 1, 1) - y)
                                 .to(torch::kDouble)
                                 .pow(2)
                                 .mean()
                                 .item<double>();
  EXPECT_NEAR(r->mse_nearest, mse_nearest, 1e-4 * mse_nearest);

  // Progress rises to 1.
  ASSERT_FALSE(fractions.empty());
  EXPECT_DOUBLE_EQ(fractions.back(), 1.0);
  for (size_t i = 1; i < fractions.size(); ++i) EXPECT_GT(fractions[i], fractions[i - 1]);
}

TEST(AdaRoundTest, IsDeterministicForASeed) {
  ConvCase c = MakeConvCase(3);
  AdaRoundOptions o = FastOptions();
  o.iters = 200;
  absl::StatusOr<AdaRoundResult> a =
      RunAdaRound(c.weight, c.bias, c.op, c.params, c.inputs, torch::Tensor(), o);
  torch::manual_seed(999);  // Global RNG state must not matter.
  absl::StatusOr<AdaRoundResult> b =
      RunAdaRound(c.weight, c.bias, c.op, c.params, c.inputs, torch::Tensor(), o);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::equal(a->codes, b->codes));
  EXPECT_EQ(a->mse_adaround, b->mse_adaround);
  // Explicit FP targets are the same as letting it compute them.
  torch::Tensor targets;
  {
    torch::NoGradGuard no_grad;
    targets = torch::conv2d(c.inputs, c.weight, c.bias, 1, 1);
  }
  absl::StatusOr<AdaRoundResult> t =
      RunAdaRound(c.weight, c.bias, c.op, c.params, c.inputs, targets, o);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(torch::equal(a->codes, t->codes));
}

TEST(AdaRoundTest, BeatsNearestOnALinearLayerAt4Bits) {
  torch::manual_seed(2);
  torch::Tensor latent = torch::randn({512, 6});
  torch::Tensor x = torch::matmul(latent, torch::randn({6, 48})) + 0.05 * torch::randn({512, 48});
  torch::Tensor w = torch::randn({32, 48}) * 0.2;
  QuantizerOptions qo;
  qo.bits = 4;
  QuantParams params = FitWeightQuantizer(w, qo).value();
  LayerOp op;  // linear
  absl::StatusOr<AdaRoundResult> r =
      RunAdaRound(w, torch::Tensor(), op, params, x, torch::Tensor(), FastOptions());
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("linear 4-bit reconstruction MSE: nearest %.6g, AdaRound %.6g (ratio %.3f)\n",
              r->mse_nearest, r->mse_adaround, r->mse_adaround / r->mse_nearest);
  EXPECT_FALSE(r->kept_nearest);
  EXPECT_LT(r->mse_adaround, 0.8 * r->mse_nearest);
  EXPECT_GE(r->codes.min().item<int64_t>(), 0);
  EXPECT_LE(r->codes.max().item<int64_t>(), 15);
}

TEST(AdaRoundTest, CancelStopsTheRun) {
  ConvCase c = MakeConvCase(3);
  int calls = 0;
  absl::StatusOr<AdaRoundResult> r =
      RunAdaRound(c.weight, c.bias, c.op, c.params, c.inputs, torch::Tensor(), FastOptions(),
                  [&](double) { return ++calls < 3; });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 3);
}

TEST(AdaRoundTest, RefusesBadInput) {
  ConvCase c = MakeConvCase(3);
  AdaRoundOptions o = FastOptions();
  o.iters = 1;
  // Inputs with the wrong channel count: torch's own error, as a status.
  absl::StatusOr<AdaRoundResult> r =
      RunAdaRound(c.weight, c.bias, c.op, c.params, torch::randn({4, 3, 8, 8}), torch::Tensor(), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("torch"), std::string::npos) << r.status();
  // Targets for another number of samples.
  r = RunAdaRound(c.weight, c.bias, c.op, c.params, c.inputs, torch::randn({3, 24, 10, 10}), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // A per-tensor quantizer, or one for another layer.
  QuantParams per_tensor = FitActivationQuantizer(c.weight, QuantizerOptions()).value();
  r = RunAdaRound(c.weight, c.bias, c.op, per_tensor, c.inputs, torch::Tensor(), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // Conv parameters that do not fit a 2-d convolution.
  LayerOp bad = c.op;
  bad.stride = {1, 1, 1};
  r = RunAdaRound(c.weight, c.bias, bad, c.params, c.inputs, torch::Tensor(), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  o.learning_rate = 0;
  r = RunAdaRound(c.weight, c.bias, c.op, c.params, c.inputs, torch::Tensor(), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AdaRoundWeightTest, StartsAtTheWeightAndNearestRounding) {
  torch::manual_seed(9);
  torch::Tensor w = torch::randn({8, 4, 3, 3});
  QuantizerOptions qo;
  qo.bits = 4;
  QuantParams params = FitWeightQuantizer(w, qo).value();
  absl::StatusOr<AdaRoundWeight> ada = AdaRoundWeight::Create(w, params);
  ASSERT_TRUE(ada.ok()) << ada.status();
  // h(V) = frac(w / s) at the start, so the soft weight is the weight clipped to the grid.
  torch::Tensor s = params.scale.to(torch::kFloat).reshape({8, 1, 1, 1});
  torch::Tensor z = params.zero_point.to(torch::kFloat).reshape({8, 1, 1, 1});
  torch::Tensor clipped = torch::max(torch::min(w, (15 - z) * s), -z * s);
  EXPECT_TRUE(torch::allclose(ada->SoftWeight(), clipped, 1e-4, 1e-5));
  EXPECT_TRUE(ada->SoftWeight().requires_grad());
  // V >= 0 exactly where frac >= 0.5, which is nearest rounding.
  EXPECT_TRUE(torch::equal(ada->HardCodes(), ada->NearestCodes()));
  EXPECT_TRUE(torch::equal(ada->NearestCodes(), Quantize(w, params).value()));
  // The regulariser is 0 only when every h(V) is 0 or 1.
  EXPECT_GT(ada->Regularizer(2.0).item<double>(), 0.0);
  {
    torch::NoGradGuard no_grad;
    ada->v().copy_(torch::where(ada->v() >= 0, torch::full_like(ada->v(), 10.0),
                                torch::full_like(ada->v(), -10.0)));
  }
  EXPECT_NEAR(ada->Regularizer(2.0).item<double>(), 0.0, 1e-6);
  EXPECT_TRUE(torch::equal(ada->HardCodes(), ada->NearestCodes()));
}

TEST(AdaRoundWeightTest, BetaScheduleWarmsUpThenAnneals) {
  AdaRoundOptions o;
  o.iters = 100;
  o.warm_start = 0.2;
  o.beta_start = 20;
  o.beta_end = 2;
  EXPECT_FALSE(AdaRoundBeta(0, o).has_value());
  EXPECT_FALSE(AdaRoundBeta(19, o).has_value());
  ASSERT_TRUE(AdaRoundBeta(20, o).has_value());
  EXPECT_DOUBLE_EQ(*AdaRoundBeta(20, o), 20.0);
  EXPECT_DOUBLE_EQ(*AdaRoundBeta(60, o), 11.0);
  EXPECT_DOUBLE_EQ(*AdaRoundBeta(100, o), 2.0);
  for (int t = 21; t < 100; ++t) EXPECT_LT(*AdaRoundBeta(t, o), *AdaRoundBeta(t - 1, o));
}

TEST(AdaRoundWeightTest, ReconstructionLossSumsChannelsAndAveragesPositions) {
  torch::Tensor out = torch::zeros({2, 3, 4, 5});
  torch::Tensor target = torch::ones({2, 3, 4, 5});
  // 120 squared errors of 1 over 2 * 4 * 5 = 40 positions.
  EXPECT_DOUBLE_EQ(ReconstructionLoss(out, target).item<double>(), 3.0);
  EXPECT_DOUBLE_EQ(
      ReconstructionLoss(torch::zeros({4, 6}), torch::full({4, 6}, 2.0)).item<double>(), 24.0);
}

}  // namespace
}  // namespace ompq::engine
