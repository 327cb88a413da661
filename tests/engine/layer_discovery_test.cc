// Layer discovery and Gram collection against the independent PyTorch computation
// (forward hooks on the nn.Module before export, numpy float64).
#include "workers/engine/layer_discovery.h"

#include <gtest/gtest.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "common/job_error.h"
#include "tests/engine/test_models.h"
#include "workers/engine/orthogonality.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"
#include "workers/engine/transformer_rewrite.h"

namespace ompq::engine {
namespace {

using testing::Expected;
using testing::kSamples;
using testing::ModelFile;

struct Case {
  const char* model;
  const char* calibration;
};

class LayerDiscoveryTest : public ::testing::TestWithParam<Case> {};

TEST_P(LayerDiscoveryTest, MatchesIndependentComputation) {
  c10::InferenceMode inference_mode;
  const Case& c = GetParam();
  const nlohmann::json expected = Expected(c.model);
  absl::StatusOr<LoadedModel> model =
      LoadTorchScriptModel(ModelFile(std::string(c.model) + ".pt"), "cpu");
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<CalibrationData> calibration = LoadCalibrationFile(ModelFile(c.calibration));
  ASSERT_TRUE(calibration.ok()) << calibration.status();
  const torch::Tensor inputs = calibration->inputs.narrow(0, 0, kSamples);

  absl::StatusOr<TappedModel> tapped = TappedModel::Create(model->module);
  ASSERT_TRUE(tapped.ok()) << tapped.status();
  // One ompq::tap per site in the rewritten graph.
  int taps = 0;
  std::function<void(torch::jit::Block*)> count = [&](torch::jit::Block* block) {
    for (torch::jit::Node* node : block->nodes()) {
      if (node->kind().toQualString() == std::string("ompq::tap")) ++taps;
      for (torch::jit::Block* inner : node->blocks()) count(inner);
    }
  };
  count(tapped->graph()->block());
  EXPECT_EQ(taps, tapped->tap_sites());

  int progress_calls = 0;
  absl::StatusOr<LayerFeatures> features = tapped->Collect(inputs, 0, [&](int measured, int sites) {
    ++progress_calls;
    EXPECT_EQ(measured, progress_calls);
    EXPECT_EQ(sites, tapped->tap_sites());
    return true;
  });
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(features->samples, kSamples);
  // The rewritten graph's output matches the untouched graph's on the first samples.
  std::string skipped;
  EXPECT_TRUE(tapped->CheckAgainstModel(inputs, features->output, 0, &skipped).ok());
  EXPECT_TRUE(skipped.empty()) << skipped;
  // ... and the check notices an output that is not the model's.
  const c10::IValue wrong = features->output.toTensor() + 1.0;
  absl::Status mismatch = tapped->CheckAgainstModel(inputs, wrong, 0);
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kInternal) << mismatch;

  const nlohmann::json& layers = expected["layers"];
  ASSERT_EQ(features->layers.size(), layers.size());
  EXPECT_EQ(progress_calls, static_cast<int>(layers.size()));
  int64_t quantized = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerInfo& got = features->layers[i];
    SCOPED_TRACE(got.name);
    EXPECT_EQ(got.name, layers[i]["name"].get<std::string>());
    EXPECT_EQ(got.kind, layers[i]["kind"].get<std::string>());
    EXPECT_EQ(got.weight_shape, layers[i]["weight_shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(got.params, layers[i]["params"].get<int64_t>());
    EXPECT_EQ(got.macs, layers[i]["macs"].get<int64_t>());
    EXPECT_EQ(got.calls, layers[i]["calls"].get<int>());
    EXPECT_EQ(got.after_batch_norm, layers[i]["after_batch_norm"].get<bool>());
    EXPECT_EQ(got.output_shape.front(), kSamples);
    quantized += got.params;
  }
  EXPECT_EQ(4 * (tapped->total_parameters() - quantized), expected["other_bytes"].get<int64_t>());
  // The parameters that stay FP32, each with a reason; together they are other_bytes.
  std::vector<std::string> unquantized;
  int64_t unquantized_params = 0;
  for (const UnquantizedParameter& parameter : tapped->unquantized()) {
    unquantized.push_back(parameter.name);
    unquantized_params += parameter.params;
    EXPECT_FALSE(parameter.reason.empty()) << parameter.name;
  }
  auto expected_unquantized = expected["unquantized"].get<std::vector<std::string>>();
  std::sort(unquantized.begin(), unquantized.end());
  std::sort(expected_unquantized.begin(), expected_unquantized.end());
  EXPECT_EQ(unquantized, expected_unquantized);
  EXPECT_EQ(unquantized_params, tapped->total_parameters() - quantized);

  absl::StatusOr<Orthogonality> orthogonality =
      ComputeOrthogonality(features->grams, features->samples, kDefaultBeta);
  ASSERT_TRUE(orthogonality.ok()) << orthogonality.status();
  EXPECT_TRUE(orthogonality->constant_layers.empty());
  const auto orm = expected["orm"].get<std::vector<std::vector<double>>>();
  const auto gamma = expected["gamma"].get<std::vector<double>>();
  double worst = 0;
  for (size_t i = 0; i < orm.size(); ++i) {
    for (size_t j = 0; j < orm.size(); ++j) {
      worst = std::max(worst, std::abs(orthogonality->orm[i][j] - orm[i][j]));
    }
    EXPECT_NEAR(orthogonality->gamma[i], gamma[i], 1e-5 * orm.size());
  }
  EXPECT_LE(worst, 1e-5);
  std::ostringstream error;
  error << worst;
  RecordProperty("max_orm_error", error.str());
}

// The transformer test models hold PyTorch's fused attention ops (traced without gradients);
// the instrumented graph holds none of them, and their projections are layers (above).
TEST(TransformerRewriteTest, FusedAttentionIsUnfused) {
  c10::InferenceMode inference_mode;
  // The ViT: two aten::_native_multi_head_attention; the text encoder: three
  // aten::_transformer_encoder_layer_fwd.
  for (const auto& [name, fused] :
       {std::pair<const char*, size_t>{"vit", 2}, {"text_encoder", 3}}) {
    SCOPED_TRACE(name);
    absl::StatusOr<LoadedModel> model =
        LoadTorchScriptModel(ModelFile(std::string(name) + ".pt"), "cpu");
    ASSERT_TRUE(model.ok()) << model.status();
    std::shared_ptr<torch::jit::Graph> original =
        model->module.get_method("forward").graph()->copy();
    torch::jit::Inline(*original);
    EXPECT_EQ(FusedTransformerOps(*original).size(), fused);
    absl::StatusOr<TappedModel> tapped = TappedModel::Create(model->module);
    ASSERT_TRUE(tapped.ok()) << tapped.status();
    EXPECT_TRUE(FusedTransformerOps(*tapped->graph()).empty());
    // What stays FP32 says why: LayerNorms, the ViT's class token and position embedding.
    std::map<std::string, std::string> reasons;
    for (const UnquantizedParameter& parameter : tapped->unquantized()) {
      reasons[parameter.name] = parameter.reason;
    }
    if (std::string(name) == "vit") {
      EXPECT_EQ(reasons["class_token"], "used by aten::expand");
      EXPECT_EQ(reasons["encoder.pos_embedding"], "used by aten::add");
      EXPECT_EQ(reasons["encoder.ln.weight"], "used by aten::layer_norm");
      EXPECT_EQ(reasons["heads.head.bias"], "bias of layer heads.head");
    } else {
      EXPECT_EQ(reasons["encoder.layers.0.norm1.weight"], "used by aten::layer_norm");
      EXPECT_EQ(reasons["encoder.layers.0.self_attn.in_proj_bias"],
                "bias of layer encoder.layers.0.self_attn.in_proj");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, LayerDiscoveryTest,
    ::testing::Values(Case{"resnet18", "calib_images.pt"}, Case{"mobilenet_v2", "calib_images.npz"},
                      Case{"grouped", "calib_grouped.pt"}, Case{"scripted", "calib_video.pt"},
                      Case{"sequence", "calib_sequence.npz"}, Case{"vit", "calib_vit.pt"},
                      Case{"text_encoder", "calib_text.pt"}, Case{"seq_first", "calib_text.pt"}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.model); });

TEST(LayerDiscoveryCollectTest, CancelStopsThePass) {
  c10::InferenceMode inference_mode;
  absl::StatusOr<LoadedModel> model = LoadTorchScriptModel(ModelFile("resnet18.pt"), "cpu");
  ASSERT_TRUE(model.ok());
  absl::StatusOr<TappedModel> tapped = TappedModel::Create(model->module);
  ASSERT_TRUE(tapped.ok());
  int calls = 0;
  absl::StatusOr<LayerFeatures> features =
      tapped->Collect(torch::randn({4, 3, 64, 64}), 0, [&](int, int) { return ++calls < 3; });
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(features.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(ReasonOf(features.status()), reason::kCancelled);
  // The same model still runs afterwards (the cancelled session is gone).
  EXPECT_TRUE(tapped->Collect(torch::randn({4, 3, 64, 64}), 0, nullptr).ok());
}

TEST(LayerDiscoveryCollectTest, NoLayersAndRejectedInputs) {
  c10::InferenceMode inference_mode;
  absl::StatusOr<LoadedModel> no_layers = LoadTorchScriptModel(ModelFile("no_layers.pt"), "cpu");
  ASSERT_TRUE(no_layers.ok());
  absl::Status status = TappedModel::Create(no_layers->module).status();
  EXPECT_EQ(ReasonOf(status), reason::kNoQuantizableLayers) << status;

  absl::StatusOr<LoadedModel> model = LoadTorchScriptModel(ModelFile("grouped.pt"), "cpu");
  ASSERT_TRUE(model.ok());
  absl::StatusOr<TappedModel> tapped = TappedModel::Create(model->module);
  ASSERT_TRUE(tapped.ok());
  // The check gives way when the model rejects the inputs, saying why; the full pass
  // reports the mismatch with the model's own message and the shape.
  std::string skipped;
  EXPECT_TRUE(
      tapped->CheckAgainstModel(torch::randn({8, 5, 16, 16}), c10::IValue(), 0, &skipped).ok());
  EXPECT_NE(skipped.find("to have 3 channels, but got 5 channels"), std::string::npos) << skipped;
  status = tapped->Collect(torch::randn({8, 5, 16, 16}), 0, nullptr).status();
  EXPECT_EQ(ReasonOf(status), reason::kInputMismatch) << status;
  EXPECT_NE(status.message().find("inputs of shape [8, 5, 16, 16]"), absl::string_view::npos)
      << status;
  EXPECT_NE(status.message().find("to have 3 channels, but got 5 channels"),
            absl::string_view::npos)
      << status;
  skipped.clear();
  const torch::Tensor good = torch::randn({8, 3, 16, 16});
  absl::StatusOr<LayerFeatures> features = tapped->Collect(good, 0, nullptr);
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_TRUE(tapped->CheckAgainstModel(good, features->output, 0, &skipped).ok());
  EXPECT_TRUE(skipped.empty()) << skipped;
}

// The textbook centred Gram H (X X^T) H of `output` in float64.
torch::Tensor TextbookCentredGram(const torch::Tensor& output) {
  const int64_t n = output.size(0);
  const torch::Tensor x = output.reshape({n, -1}).to(torch::kDouble);
  const torch::Tensor h = torch::eye(n, torch::kDouble) - 1.0 / n;
  return h.mm(x.mm(x.t())).mm(h);
}

double RelativeError(const torch::Tensor& got, const torch::Tensor& expected) {
  return ((got - expected).norm() / expected.norm()).item<double>();
}

// Compares CentredGram with the textbook H (X X^T) H in float64, including a
// channels-last map and enough columns to need several chunks. Float32 maps are
// multiplied in float32 per chunk and summed in float64 (see CentredGram): relative
// error ~1e-7; float64 maps stay exact to rounding.
TEST(CentredGramTest, MatchesTextbookFormula) {
  c10::InferenceMode inference_mode;
  torch::manual_seed(7);
  for (const torch::Tensor& output :
       {torch::randn({4, 3, 300, 300}) + 5.0,
        torch::randn({6, 8, 9, 10}).contiguous(at::MemoryFormat::ChannelsLast),
        torch::randn({5, 7}), torch::randn({32, 70000}) + 3.0}) {
    const torch::Tensor expected = TextbookCentredGram(output);
    double fraction = -1;
    const torch::Tensor got = CentredGram(output, &fraction);
    EXPECT_EQ(got.scalar_type(), torch::kDouble);
    EXPECT_LT(RelativeError(got, expected), 1e-6);
    EXPECT_GT(fraction, 0.0);
    EXPECT_LT(fraction, 1.0);
    const torch::Tensor exact = CentredGram(output.to(torch::kDouble));
    EXPECT_TRUE(torch::allclose(exact, expected, 1e-9, 1e-6))
        << (exact - expected).abs().max().item<double>();
  }
  // A constant output has no varying energy.
  double fraction = -1;
  CentredGram(torch::ones({3, 10}), &fraction);
  EXPECT_EQ(fraction, 0.0);
}

// Features whose mean is 1000x their spread across samples (and sparse, ReLU-like ones):
// centring before the float32 product keeps the Gram and the CKA between two layers as
// accurate as float64 needs, far inside the 1e-5 the ORM must meet.
TEST(CentredGramTest, Float32MapsWithLargeMeansStayAccurate) {
  c10::InferenceMode inference_mode;
  torch::manual_seed(11);
  const int64_t n = 32;
  const torch::Tensor base = torch::randn({n, 16, 40, 40});
  const torch::Tensor column_means = 1000.0 * (1.0 + torch::rand({1, 16, 40, 40}));
  const torch::Tensor first = column_means + base;
  const torch::Tensor second = 0.5 * base + 0.5 * torch::randn({n, 16, 40, 40}) + 10.0;
  const torch::Tensor sparse = torch::relu(torch::randn({n, 64, 20, 20}) - 1.0);
  std::vector<torch::Tensor> got, expected;
  for (const torch::Tensor& output : {first, second, sparse}) {
    ASSERT_EQ(output.scalar_type(), torch::kFloat);
    got.push_back(CentredGram(output));
    expected.push_back(TextbookCentredGram(output));
    EXPECT_LT(RelativeError(got.back(), expected.back()), 1e-6);
  }
  auto cka = [](const torch::Tensor& a, const torch::Tensor& b) {
    return ((a * b).sum() / (a.norm() * b.norm())).item<double>();
  };
  for (size_t i = 0; i < got.size(); ++i) {
    for (size_t j = i + 1; j < got.size(); ++j) {
      EXPECT_NEAR(cka(got[i], got[j]), cka(expected[i], expected[j]), 1e-7) << i << ", " << j;
    }
  }
}

}  // namespace
}  // namespace ompq::engine
