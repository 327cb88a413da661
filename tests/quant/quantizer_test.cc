// Quantizer arithmetic against independent computations: the clipping search against numpy
// (quant_reference.py), round trips against torch's own fake-quantize ops, BatchNorm
// folding against torch's Conv/Linear + BatchNorm modules.
#include "workers/engine/quantizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ompq::engine {
namespace {

const nlohmann::json& Reference() {
  static const nlohmann::json* doc = [] {
    std::ifstream in(OMPQ_QUANT_REFERENCE);
    auto* j = new nlohmann::json(nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false));
    return j;
  }();
  return *doc;
}

torch::Tensor ReferenceTensor(const std::string& name) {
  const nlohmann::json& t = Reference()["tensors"][name];
  std::vector<double> values = t["values"].get<std::vector<double>>();
  std::vector<int64_t> shape = t["shape"].get<std::vector<int64_t>>();
  return torch::tensor(values, torch::kDouble).reshape(shape);
}

QuantizerOptions OptionsOf(const nlohmann::json& c) {
  QuantizerOptions o;
  o.bits = c["bits"].get<int>();
  o.p = c["p"].get<double>();
  o.symmetric = c["symmetric"].get<bool>();
  if (c.contains("max_search_elements")) {
    o.max_search_elements = c["max_search_elements"].get<int64_t>();
  }
  return o;
}

TEST(QuantizerReferenceTest, ReferenceWasGenerated) {
  ASSERT_FALSE(Reference().is_discarded()) << "cannot read " << OMPQ_QUANT_REFERENCE;
  EXPECT_EQ(Reference()["weights"].size(), 8u);
  EXPECT_EQ(Reference()["activations"].size(), 6u);
}

// Which reference candidate our scale is (-1 when none). Our search works in float32, so
// it may pick another candidate than the float64 reference where their losses agree to
// float32 rounding; the chosen scale is still exactly one of the reference's grid scales.
int CandidateOf(double scale, const std::vector<double>& candidate_scales) {
  for (size_t k = 0; k < candidate_scales.size(); ++k) {
    if (std::abs(scale - candidate_scales[k]) <= 1e-12 * candidate_scales[k]) {
      return static_cast<int>(k);
    }
  }
  return -1;
}

// Checks one channel: our candidate is within float32 noise of the reference's best, and
// counts exact agreements.
void CheckChoice(double scale, int64_t zero, const std::vector<double>& candidate_scales,
                 const std::vector<double>& candidate_losses, int k, double ref_scale,
                 int64_t ref_zero, int* exact) {
  const int ours = CandidateOf(scale, candidate_scales);
  ASSERT_GE(ours, 0) << "scale " << scale << " is not on the reference grid";
  EXPECT_LE(candidate_losses[ours], candidate_losses[k] * (1 + 1e-5) + 1e-30)
      << "ours k=" << ours << " reference k=" << k;
  if (ours == k) {
    ++*exact;
    EXPECT_EQ(scale, ref_scale);
    EXPECT_EQ(zero, ref_zero);
  }
}

TEST(QuantizerReferenceTest, WeightScalesAndCodesMatchNumpy) {
  ASSERT_FALSE(Reference().is_discarded());
  int channels = 0, exact = 0, clipped_channels = 0;
  for (const nlohmann::json& c : Reference()["weights"]) {
    SCOPED_TRACE(c["tensor"].dump() + " bits " + c["bits"].dump() + " p " + c["p"].dump() +
                 " symmetric " + c["symmetric"].dump());
    torch::Tensor w = ReferenceTensor(c["tensor"]).to(torch::kFloat);
    absl::StatusOr<QuantParams> params = FitWeightQuantizer(w, OptionsOf(c));
    ASSERT_TRUE(params.ok()) << params.status();
    EXPECT_EQ(params->axis, 0);
    EXPECT_EQ(params->bits, c["bits"].get<int>());
    auto scale = c["scale"].get<std::vector<double>>();
    auto zero = c["zero_point"].get<std::vector<int64_t>>();
    auto k = c["k"].get<std::vector<int>>();
    auto scales = c["candidate_scales"].get<std::vector<std::vector<double>>>();
    auto losses = c["candidate_losses"].get<std::vector<std::vector<double>>>();
    ASSERT_EQ(params->channels(), static_cast<int64_t>(scale.size()));
    int exact_here = 0;
    for (size_t ch = 0; ch < scale.size(); ++ch) {
      SCOPED_TRACE("channel " + std::to_string(ch));
      std::vector<double> ch_scales, ch_losses;
      for (size_t j = 0; j < scales.size(); ++j) {
        ch_scales.push_back(scales[j][ch]);
        ch_losses.push_back(losses[j][ch]);
      }
      CheckChoice(params->scale[ch].item<double>(), params->zero_point[ch].item<int64_t>(),
                  ch_scales, ch_losses, k[ch], scale[ch], zero[ch], &exact_here);
      clipped_channels += k[ch] > 0;
    }
    channels += static_cast<int>(scale.size());
    exact += exact_here;
    if (exact_here == static_cast<int>(scale.size())) {
      // Same grid, so the same integer codes, element by element.
      absl::StatusOr<torch::Tensor> codes = Quantize(w, *params);
      ASSERT_TRUE(codes.ok()) << codes.status();
      auto expected = c["codes"].get<std::vector<int64_t>>();
      EXPECT_TRUE(torch::equal(codes->reshape({-1}), torch::tensor(expected, torch::kLong)));
    }
  }
  std::printf("weight channels: %d, same candidate as numpy: %d\n", channels, exact);
  EXPECT_GE(exact, channels - 2);
  // The cases exercise the search itself, not only the full [min, max] range.
  EXPECT_GT(clipped_channels, 10);
}

TEST(QuantizerReferenceTest, ActivationScalesMatchNumpy) {
  ASSERT_FALSE(Reference().is_discarded());
  int exact = 0;
  for (const nlohmann::json& c : Reference()["activations"]) {
    SCOPED_TRACE(c["tensor"].dump() + " bits " + c["bits"].dump());
    torch::Tensor x = ReferenceTensor(c["tensor"]).to(torch::kFloat);
    absl::StatusOr<QuantParams> params = FitActivationQuantizer(x, OptionsOf(c));
    ASSERT_TRUE(params.ok()) << params.status();
    EXPECT_EQ(params->axis, -1);
    ASSERT_EQ(params->channels(), 1);
    CheckChoice(params->scale.item<double>(), params->zero_point.item<int64_t>(),
                c["candidate_scales"].get<std::vector<double>>(),
                c["candidate_losses"].get<std::vector<double>>(), c["k"].get<int>(),
                c["scale"].get<double>(), c["zero_point"].get<int64_t>(), &exact);
  }
  EXPECT_GE(exact, static_cast<int>(Reference()["activations"].size()) - 1);
}

TEST(QuantizerTest, UnsignedAndSymmetricActivationGrids) {
  QuantizerOptions o;
  o.bits = 8;
  torch::Tensor relu = ReferenceTensor("relu_act");
  ASSERT_GE(relu.min().item<double>(), 0.0);
  absl::StatusOr<QuantParams> unsigned_params = FitActivationQuantizer(relu, o);
  ASSERT_TRUE(unsigned_params.ok());
  // Data with min >= 0 uses the whole grid for [0, max]: z = 0, s = max * r / 255.
  EXPECT_EQ(unsigned_params->zero_point.item<int64_t>(), 0);
  EXPECT_LE(unsigned_params->scale.item<double>(), relu.max().item<double>() / 255 * (1 + 1e-12));

  o.symmetric = true;
  torch::Tensor centred = ReferenceTensor("centred_act");
  absl::StatusOr<QuantParams> sym = FitActivationQuantizer(centred, o);
  ASSERT_TRUE(sym.ok());
  EXPECT_EQ(sym->zero_point.item<int64_t>(), 128);
  const double m = centred.abs().max().item<double>();
  EXPECT_LE(sym->scale.item<double>(), 2 * m / 255 * (1 + 1e-12));
  EXPECT_GT(sym->scale.item<double>(), 2 * m * 0.2 / 255);
}

TEST(QuantizerTest, TensorRtWeightsUseTheNarrowSymmetricRange) {
  // --export-profile tensorrt: signed codes within +-(2^(b-1) - 1), zero point 2^(b-1) (0
  // once shifted), and the largest magnitude of a channel on the grid's last code.
  torch::Tensor w = ReferenceTensor("conv_w");
  for (int bits : {2, 4, 8}) {
    QuantizerOptions o = WeightQuantizerOptions(bits, ExportProfile::kTensorRt);
    o.num_candidates = 1;  // No clipping: the range is the channel's own.
    absl::StatusOr<QuantParams> params = FitWeightQuantizer(w, o);
    ASSERT_TRUE(params.ok()) << params.status();
    EXPECT_TRUE(params->symmetric && params->narrow_range);
    EXPECT_EQ(params->quant_min(), 1);
    EXPECT_TRUE((params->zero_point == (1 << (bits - 1))).all().item<bool>()) << bits;
    absl::StatusOr<torch::Tensor> codes = Quantize(w, *params);
    ASSERT_TRUE(codes.ok());
    EXPECT_GE(codes->min().item<int64_t>(), 1) << bits;
    torch::Tensor m = std::get<0>(w.reshape({w.size(0), -1}).abs().max(1)).to(torch::kDouble);
    EXPECT_TRUE(torch::allclose(params->scale, m / ((1 << (bits - 1)) - 1), 1e-12)) << bits;
    const std::vector<Encoding> e = EncodingsOf(*params);
    EXPECT_DOUBLE_EQ(e[0].min, -e[0].max) << bits;
  }
  QuantizerOptions asymmetric_narrow;
  asymmetric_narrow.narrow_range = true;
  EXPECT_FALSE(FitWeightQuantizer(w, asymmetric_narrow).ok());
  EXPECT_FALSE(WeightQuantizerOptions(8, ExportProfile::kDefault).symmetric);
}

TEST(QuantizerTest, SearchClipsAnOutlier) {
  // Channel 0 of conv_w has one value at 12 standard deviations: at 3 bits the search
  // gives up on it, so its scale is below the plain min/max one.
  torch::Tensor w = ReferenceTensor("conv_w");
  QuantizerOptions o;
  o.bits = 3;
  absl::StatusOr<QuantParams> searched = FitWeightQuantizer(w, o);
  ASSERT_TRUE(searched.ok());
  torch::Tensor flat = w.reshape({w.size(0), -1});
  absl::StatusOr<QuantParams> minmax =
      QuantParamsFromRange(std::get<0>(flat.min(1)), std::get<0>(flat.max(1)), 3, false, 0);
  ASSERT_TRUE(minmax.ok()) << minmax.status();
  EXPECT_LT(searched->scale[0].item<double>(), minmax->scale[0].item<double>() * 0.99);
  // And its error is smaller than min/max quantization's, channel by channel, in Lp.
  auto lp = [&](const QuantParams& p) {
    return (QuantizeDequantize(w, p).value() - w).abs().pow(2.4).reshape({w.size(0), -1}).sum(1);
  };
  EXPECT_TRUE((lp(*searched) <= lp(*minmax) * (1 + 1e-5)).all().item<bool>());
  EXPECT_LT(lp(*searched)[0].item<double>(), lp(*minmax)[0].item<double>());
}

TEST(QuantizerTest, RoundTripIsWithinHalfAStepInsideTheRange) {
  torch::manual_seed(7);
  torch::Tensor w = torch::randn({16, 8, 3, 3}, torch::kDouble) *
                    torch::linspace(0.01, 2.0, 16, torch::kDouble).reshape({16, 1, 1, 1});
  for (int bits : {2, 4, 8}) {
    QuantizerOptions o;
    o.bits = bits;
    absl::StatusOr<QuantParams> p = FitWeightQuantizer(w, o);
    ASSERT_TRUE(p.ok());
    absl::StatusOr<torch::Tensor> q = QuantizeDequantize(w, *p);
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(q->scalar_type(), torch::kDouble);
    torch::Tensor s = p->scale.reshape({16, 1, 1, 1});
    torch::Tensor z = p->zero_point.to(torch::kDouble).reshape({16, 1, 1, 1});
    torch::Tensor lo = -z * s;
    torch::Tensor hi = (p->quant_max() - z) * s;
    torch::Tensor inside = (w >= lo) & (w <= hi);
    torch::Tensor err = (w - *q).abs();
    EXPECT_TRUE(
        (err.masked_select(inside) <= (s / 2 * (1 + 1e-9)).expand_as(w).masked_select(inside))
            .all()
            .item<bool>())
        << bits;
    // Outside the range, values clamp to its ends.
    torch::Tensor clamped = torch::max(torch::min(w, hi), lo);
    EXPECT_TRUE(
        torch::allclose(q->masked_select(~inside), clamped.masked_select(~inside), 0, 1e-12))
        << bits;
    // Codes stay on the b-bit grid.
    torch::Tensor codes = Quantize(w, *p).value();
    EXPECT_GE(codes.min().item<int64_t>(), 0);
    EXPECT_LE(codes.max().item<int64_t>(), p->quant_max());
    EXPECT_TRUE(torch::allclose(Dequantize(codes, *p, torch::kDouble).value(), *q));
  }
}

TEST(QuantizerTest, MatchesTorchFakeQuantize) {
  torch::manual_seed(11);
  torch::Tensor w = torch::randn({12, 5, 3, 3}) * 0.3;
  QuantizerOptions o;
  o.bits = 4;
  absl::StatusOr<QuantParams> p = FitWeightQuantizer(w, o);
  ASSERT_TRUE(p.ok());
  torch::Tensor ours = QuantizeDequantize(w, *p).value();
  EXPECT_EQ(ours.scalar_type(), torch::kFloat);
  torch::Tensor theirs = torch::fake_quantize_per_channel_affine(
      w, p->scale.to(torch::kFloat), p->zero_point.to(torch::kInt), 0, 0, p->quant_max());
  EXPECT_LT((ours - theirs).abs().max().item<double>(), 1e-6);

  torch::Tensor x = torch::randn({64, 32}) + 0.7;
  for (int bits : {3, 8, 16}) {
    o.bits = bits;
    absl::StatusOr<QuantParams> a = FitActivationQuantizer(x, o);
    ASSERT_TRUE(a.ok());
    torch::Tensor ours_a = QuantizeDequantize(x, *a).value();
    torch::Tensor theirs_a = torch::fake_quantize_per_tensor_affine(
        x, a->scale.item<double>(), a->zero_point.item<int64_t>(), 0, a->quant_max());
    // torch computes x * (1 / scale) in float32: exact to the code up to 8 bits, but at
    // 16 bits float32 cannot resolve x / scale to 0.5 and an element may land one step off.
    const double tolerance = bits <= 8 ? 1e-6 : 1.01 * a->scale.item<double>();
    EXPECT_LE((ours_a - theirs_a).abs().max().item<double>(), tolerance) << bits;
    EXPECT_LT(((ours_a - theirs_a).abs() > 1e-6).to(torch::kDouble).mean().item<double>(), 0.01)
        << bits;
  }
}

TEST(QuantizerTest, ZeroChannelAndOneBit) {
  torch::Tensor w = torch::zeros({2, 4}, torch::kDouble);
  w[1] = torch::tensor({-1.0, 0.5, 1.0, 0.25}, torch::kDouble);
  QuantizerOptions o;
  o.bits = 1;
  absl::StatusOr<QuantParams> p = FitWeightQuantizer(w, o);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_DOUBLE_EQ(p->scale[0].item<double>(), kMinScale);
  EXPECT_EQ(p->zero_point[0].item<int64_t>(), 0);
  torch::Tensor q = QuantizeDequantize(w, *p).value();
  EXPECT_TRUE(torch::equal(q[0], w[0]));  // Zero stays exactly zero.
  // Two levels, one of them zero.
  torch::Tensor levels = std::get<0>(torch::_unique(q[1]));
  EXPECT_LE(levels.numel(), 2);
  EXPECT_TRUE((levels == 0).any().item<bool>());
}

TEST(QuantizerTest, RefusesBadInput) {
  QuantizerOptions o;
  torch::Tensor w = torch::randn({4, 3});
  for (int bits : {0, 17}) {
    o.bits = bits;
    EXPECT_EQ(FitWeightQuantizer(w, o).status().code(), absl::StatusCode::kInvalidArgument);
  }
  o.bits = 1;
  o.symmetric = true;
  EXPECT_EQ(FitActivationQuantizer(w, o).status().code(), absl::StatusCode::kInvalidArgument);
  o = QuantizerOptions();
  o.num_candidates = 101;  // r_100 = 0
  EXPECT_EQ(FitWeightQuantizer(w, o).status().code(), absl::StatusCode::kInvalidArgument);
  o = QuantizerOptions();
  torch::Tensor bad = w.clone();
  bad[1][2] = std::nan("");
  EXPECT_EQ(FitWeightQuantizer(bad, o).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FitActivationQuantizer(torch::empty({0}), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FitWeightQuantizer(torch::tensor(1.0), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FitWeightQuantizer(torch::ones({3}, torch::kInt), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A per-channel quantizer for 4 channels does not fit 5.
  absl::StatusOr<QuantParams> p = FitWeightQuantizer(w, o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Quantize(torch::randn({5, 3}), *p).status().code(), absl::StatusCode::kInvalidArgument);
  QuantParams broken = *p;
  broken.zero_point[0] = 256;
  EXPECT_EQ(Quantize(w, broken).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantParamsFromRange(torch::ones({2}), torch::zeros({2}), 8, false, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(QuantizerTest, EncodingsFollowTheAimetConvention) {
  torch::Tensor w = ReferenceTensor("conv_w");
  QuantizerOptions o;
  o.bits = 4;
  QuantParams p = FitWeightQuantizer(w, o).value();
  std::vector<Encoding> e = EncodingsOf(p);
  ASSERT_EQ(e.size(), 6u);
  for (size_t c = 0; c < e.size(); ++c) {
    EXPECT_EQ(e[c].bitwidth, 4);
    EXPECT_FALSE(e[c].is_symmetric);
    EXPECT_EQ(e[c].offset, -p.zero_point[c].item<int64_t>());
    EXPECT_DOUBLE_EQ(e[c].scale, p.scale[c].item<double>());
    EXPECT_DOUBLE_EQ(e[c].min, e[c].offset * e[c].scale);
    EXPECT_DOUBLE_EQ(e[c].max, (e[c].offset + 15) * e[c].scale);
    EXPECT_LE(e[c].min, 0.0);
    EXPECT_GE(e[c].max, 0.0);
  }
  // A toolchain reading (q + offset) * scale gets our dequantised values.
  torch::Tensor codes = Quantize(w, p).value();
  for (int64_t c = 0; c < 6; ++c) {
    torch::Tensor theirs = (codes[c].to(torch::kDouble) + e[c].offset) * e[c].scale;
    EXPECT_TRUE(torch::allclose(theirs, QuantizeDequantize(w, p).value()[c], 0, 1e-15)) << c;
  }
}

// ---- BatchNorm folding against torch's modules (float64, eval mode) ----

template <typename BN>
void SetRandomStats(BN& bn, int64_t channels) {
  torch::NoGradGuard no_grad;
  bn->running_mean.copy_(torch::randn({channels}, torch::kDouble));
  bn->running_var.copy_(torch::rand({channels}, torch::kDouble) * 2 + 0.1);
  if (bn->options.affine()) {
    bn->weight.copy_(torch::randn({channels}, torch::kDouble));
    bn->bias.copy_(torch::randn({channels}, torch::kDouble));
  }
  bn->eval();
}

template <typename BN>
BatchNormParams ParamsOf(const BN& bn) {
  BatchNormParams p;
  p.running_mean = bn->running_mean;
  p.running_var = bn->running_var;
  if (bn->options.affine()) {
    p.weight = bn->weight;
    p.bias = bn->bias;
  }
  p.eps = bn->options.eps();
  return p;
}

TEST(FoldBatchNormTest, ConvMatchesConvThenBatchNorm) {
  torch::manual_seed(3);
  for (bool with_bias : {true, false}) {
    for (int64_t groups : {1, 4}) {
      SCOPED_TRACE(std::to_string(with_bias) + " groups " + std::to_string(groups));
      torch::nn::Conv2d conv(
          torch::nn::Conv2dOptions(4, 8, 3).stride(2).padding(1).groups(groups).bias(with_bias));
      torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(8).eps(1e-3));
      conv->to(torch::kDouble);
      bn->to(torch::kDouble);
      SetRandomStats(bn, 8);
      torch::Tensor x = torch::randn({5, 4, 9, 9}, torch::kDouble);
      torch::NoGradGuard no_grad;
      torch::Tensor expected = bn(conv(x));
      absl::StatusOr<FoldedLayer> folded =
          FoldBatchNorm(conv->weight, with_bias ? conv->bias : torch::Tensor(), ParamsOf(bn));
      ASSERT_TRUE(folded.ok()) << folded.status();
      torch::Tensor got = torch::conv2d(x, folded->weight, folded->bias, 2, 1, 1, groups);
      EXPECT_TRUE(torch::allclose(got, expected, 1e-10, 1e-10))
          << (got - expected).abs().max().item<double>();
      // The fold changed something: a wrong fold would not agree by accident.
      EXPECT_FALSE(torch::allclose(folded->weight, conv->weight));
    }
  }
}

TEST(FoldBatchNormTest, LinearWithNonAffineBatchNorm) {
  torch::manual_seed(4);
  torch::nn::Linear linear(torch::nn::LinearOptions(6, 5));
  torch::nn::BatchNorm1d bn(torch::nn::BatchNorm1dOptions(5).affine(false));
  linear->to(torch::kDouble);
  bn->to(torch::kDouble);
  SetRandomStats(bn, 5);
  torch::Tensor x = torch::randn({7, 6}, torch::kDouble);
  torch::NoGradGuard no_grad;
  absl::StatusOr<FoldedLayer> folded = FoldBatchNorm(linear->weight, linear->bias, ParamsOf(bn));
  ASSERT_TRUE(folded.ok()) << folded.status();
  EXPECT_TRUE(
      torch::allclose(torch::linear(x, folded->weight, folded->bias), bn(linear(x)), 1e-10, 1e-10));
}

TEST(FoldBatchNormTest, FloatWeightStaysFloat) {
  BatchNormParams bn;
  bn.running_mean = torch::zeros({3});
  bn.running_var = torch::full({3}, 4.0);
  bn.eps = 0;
  absl::StatusOr<FoldedLayer> folded = FoldBatchNorm(torch::ones({3, 2}), torch::Tensor(), bn);
  ASSERT_TRUE(folded.ok());
  EXPECT_EQ(folded->weight.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(folded->weight, torch::full({3, 2}, 0.5f)));
  EXPECT_TRUE(torch::allclose(folded->bias, torch::zeros({3})));
}

TEST(FoldBatchNormTest, RefusesMismatchedShapes) {
  BatchNormParams bn;
  bn.running_mean = torch::zeros({4});
  bn.running_var = torch::ones({4});
  EXPECT_EQ(FoldBatchNorm(torch::ones({3, 2}), torch::Tensor(), bn).status().code(),
            absl::StatusCode::kInvalidArgument);
  bn.running_mean = torch::zeros({3});
  bn.running_var = torch::ones({3});
  EXPECT_EQ(FoldBatchNorm(torch::ones({3, 2}), torch::ones({2}), bn).status().code(),
            absl::StatusCode::kInvalidArgument);
  bn.running_var = -torch::ones({3});
  bn.eps = 0;
  EXPECT_EQ(FoldBatchNorm(torch::ones({3, 2}), torch::Tensor(), bn).status().code(),
            absl::StatusCode::kInvalidArgument);
  bn.running_var = torch::Tensor();
  EXPECT_EQ(FoldBatchNorm(torch::ones({3, 2}), torch::Tensor(), bn).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ompq::engine
