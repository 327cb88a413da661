// Each layer's distortion per bit-width (layer_distortion.h) against the independent
// PyTorch/numpy computation of make_models.py (forward pre-hooks on the nn.Module, the
// BatchNorm folded in float64, quant_reference.py's clipping search).
#include "workers/engine/layer_distortion.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tests/engine/test_models.h"
#include "workers/engine/layer_discovery.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

using testing::Expected;
using testing::kSamples;
using testing::ModelFile;

class LayerDistortionTest : public ::testing::TestWithParam<const char*> {};

TEST_P(LayerDistortionTest, MatchesIndependentComputation) {
  c10::InferenceMode inference_mode;
  const std::string name = GetParam();
  const nlohmann::json expected = Expected(name)["distortion"];
  absl::StatusOr<LoadedModel> model = LoadTorchScriptModel(ModelFile(name + ".pt"), "cpu");
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<CalibrationData> calibration = LoadCalibrationFile(ModelFile("calib_images.pt"));
  ASSERT_TRUE(calibration.ok()) << calibration.status();
  absl::StatusOr<TappedModel> tapped =
      TappedModel::Create(model->module, torch::kCPU, /*measure_inputs=*/true);
  ASSERT_TRUE(tapped.ok()) << tapped.status();
  absl::StatusOr<LayerFeatures> features =
      tapped->Collect(calibration->inputs.narrow(0, 0, kSamples), 0, nullptr);
  ASSERT_TRUE(features.ok()) << features.status();
  ASSERT_EQ(features->weights.size(), features->layers.size());
  const std::vector<int> bits = {2, 3, 4, 5, 6, 7, 8};
  absl::StatusOr<std::vector<std::vector<double>>> distortion = LayerDistortions(
      features->weights, features->input_energy,
      std::vector<std::vector<int>>(features->layers.size(), bits), ExportProfile::kDefault);
  ASSERT_TRUE(distortion.ok()) << distortion.status();
  ASSERT_EQ(expected.size(), features->layers.size());
  for (size_t i = 0; i < features->layers.size(); ++i) {
    const std::string& layer = features->layers[i].name;
    ASSERT_TRUE(expected.contains(layer)) << layer;
    for (size_t j = 0; j < bits.size(); ++j) {
      const double want = expected[layer][std::to_string(bits[j])].get<double>();
      const double got = (*distortion)[i][j];
      // The engine sums float32 errors in float64, the reference is float64 throughout:
      // the clip ratio chosen can differ where two ratios' losses agree to float32.
      EXPECT_NEAR(got, want, 2e-3 * want + 1e-12) << layer << " at " << bits[j] << " bits";
      if (j > 0) EXPECT_LE(got, (*distortion)[i][j - 1]) << layer;
    }
    // Each bit halves the step: D falls by about 4x per bit at the widths that matter.
    EXPECT_GT((*distortion)[i][1], 2.0 * (*distortion)[i][3]) << layer;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, LayerDistortionTest,
                         ::testing::Values("resnet18", "mobilenet_v2"));

TEST(LayerDistortion, RefusesMismatchedEnergy) {
  const torch::Tensor weight = torch::randn({8, 4, 3, 3});
  EXPECT_FALSE(LayerDistortion(weight, torch::ones({3}), {4}, ExportProfile::kDefault).ok());
  // Groups: 8 input channels read 4 at a time by 8 outputs (2 groups) is fine.
  EXPECT_TRUE(LayerDistortion(weight, torch::ones({8}), {4}, ExportProfile::kDefault).ok());
}

TEST(LayerDistortion, ZeroWeightHasNoDistortion) {
  absl::StatusOr<std::vector<double>> d =
      LayerDistortion(torch::zeros({4, 3}), torch::ones({3}), {2, 8}, ExportProfile::kDefault);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)[0], 0.0);
  EXPECT_EQ((*d)[1], 0.0);
}

}  // namespace
}  // namespace ompq::engine
