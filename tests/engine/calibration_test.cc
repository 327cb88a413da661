// One-pass calibration (probed_model.h, quant_layers.h) on models made by real PyTorch: the
// activation quantizer every site gets from ProbedModel::Calibrate, a single forward pass,
// is the one a layer-by-layer calibration gives (capture the site's input from the model
// whose earlier sites are already quantized, fit, set; site after site), and the weight
// ranges fitted on all cores are those fitted one layer at a time.
#include <gtest/gtest.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "workers/engine/probed_model.h"
#include "workers/engine/quant_layers.h"
#include "workers/engine/quantizer.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

struct Case {
  std::string model;  // Path of the TorchScript file.
  std::string calib;  // Its calibration inputs.
};

std::unique_ptr<ProbedModel> Load(const std::string& path) {
  absl::StatusOr<LoadedModel> loaded = LoadTorchScriptModel(path, "cpu");
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<ProbedModel>> model = ProbedModel::Create(*std::move(loaded));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

// Every layer at 3 bits (the grid is coarse, so quantized prefixes really move the
// later inputs).
std::vector<QuantLayer> Layers(ProbedModel& model) {
  std::unordered_map<std::string, int> bits;
  for (const LayerSiteNode& site : model.sites()) bits[site.name] = 3;
  absl::StatusOr<std::vector<QuantLayer>> layers = PlanLayers(model, bits);
  EXPECT_TRUE(layers.ok()) << layers.status();
  return layers.ok() ? *std::move(layers) : std::vector<QuantLayer>();
}

class CalibrationTest : public ::testing::TestWithParam<Case> {};

TEST_P(CalibrationTest, OnePassEqualsLayerByLayer) {
  torch::NoGradGuard no_grad;
  absl::StatusOr<CalibrationData> data = LoadCalibrationFile(GetParam().calib);
  ASSERT_TRUE(data.ok()) << data.status();
  const torch::Tensor calib =
      data->inputs.narrow(0, 0, std::min<int64_t>(64, data->inputs.size(0)));

  std::unique_ptr<ProbedModel> one_pass = Load(GetParam().model);
  std::unique_ptr<ProbedModel> stepwise = Load(GetParam().model);
  ASSERT_NE(one_pass, nullptr);
  ASSERT_NE(stepwise, nullptr);
  std::vector<QuantLayer> layers = Layers(*one_pass);
  std::vector<QuantLayer> reference = Layers(*stepwise);
  ASSERT_FALSE(layers.empty());
  ASSERT_EQ(layers.size(), reference.size());

  // Weights: all cores at once against one layer at a time.
  ASSERT_TRUE(FitWeights(layers, ExportProfile::kDefault).ok());
  for (QuantLayer& layer : reference) {
    IntraOpThreads one_thread(1);
    QuantizerOptions options;
    options.bits = layer.bits;
    absl::StatusOr<QuantParams> params = FitWeightQuantizer(layer.fp_weight, options);
    ASSERT_TRUE(params.ok()) << params.status();
    layer.weight_params = *params;
    absl::StatusOr<torch::Tensor> codes = Quantize(layer.fp_weight, *params);
    ASSERT_TRUE(codes.ok());
    absl::StatusOr<torch::Tensor> weight = Dequantize(*codes, *params, layer.weight.scalar_type());
    ASSERT_TRUE(weight.ok());
    InstallWeight(layer, *weight);
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    EXPECT_TRUE(torch::equal(layers[l].weight_params.scale, reference[l].weight_params.scale))
        << layers[l].name;
    EXPECT_TRUE(torch::equal(layers[l].weight_params.zero_point,
                             reference[l].weight_params.zero_point))
        << layers[l].name;
    EXPECT_TRUE(torch::equal(layers[l].weight, reference[l].weight)) << layers[l].name;
  }

  QuantizerOptions act;
  act.bits = 4;
  CalibrationPlan plan;
  plan.sites.assign(one_pass->sites().size(), false);
  plan.names.resize(one_pass->sites().size());
  int planned = 0, reported = 0;
  for (const QuantLayer& layer : layers) {
    for (int site : layer.sites) {
      plan.sites[site] = true;
      plan.names[site] = layer.name;
      ++planned;
    }
  }
  plan.options = act;
  plan.progress = [&](int fitted) {
    EXPECT_EQ(fitted, reported + 1);
    reported = fitted;
    return true;
  };
  ASSERT_TRUE(one_pass->Calibrate(calib, plan).ok());
  EXPECT_EQ(reported, planned);

  // The reference: site by site in execution order, each on the inputs the quantized
  // sites before it produce.
  std::vector<int> order;
  for (const QuantLayer& layer : reference) {
    order.insert(order.end(), layer.sites.begin(), layer.sites.end());
  }
  std::sort(order.begin(), order.end());
  for (int site : order) {
    absl::StatusOr<torch::Tensor> inputs =
        stepwise->Capture(site, calib, calib.size(0), int64_t{1} << 40);
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    IntraOpThreads threads(ActivationFitThreads(inputs->numel()));
    absl::StatusOr<QuantParams> fitted = FitActivationQuantizer(*inputs, act);
    ASSERT_TRUE(fitted.ok()) << fitted.status();
    stepwise->session().SetActivation(
        site, ActQuant{*fitted, fitted->scale[0].item<double>(),
                       fitted->zero_point[0].item<int64_t>()});
  }
  for (int site : order) {
    std::optional<ActQuant> got = one_pass->session().activation(site);
    std::optional<ActQuant> want = stepwise->session().activation(site);
    ASSERT_TRUE(got.has_value()) << one_pass->sites()[site].name;
    ASSERT_TRUE(want.has_value());
    EXPECT_EQ(got->zero_point, want->zero_point) << one_pass->sites()[site].name;
    EXPECT_NEAR(got->scale, want->scale, 1e-9 * want->scale) << one_pass->sites()[site].name;
  }

  // The calibrated models compute the same output.
  absl::StatusOr<c10::IValue> a = one_pass->Forward(calib);
  absl::StatusOr<c10::IValue> b = stepwise->Forward(calib);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::allclose(a->toTensor(), b->toTensor(), 1e-5, 1e-5));
}

TEST_P(CalibrationTest, ProgressCanStopThePass) {
  std::unique_ptr<ProbedModel> model = Load(GetParam().model);
  ASSERT_NE(model, nullptr);
  std::vector<QuantLayer> layers = Layers(*model);
  CalibrationPlan plan;
  plan.sites.assign(model->sites().size(), true);
  plan.names.assign(model->sites().size(), "layer");
  absl::StatusOr<CalibrationData> data = LoadCalibrationFile(GetParam().calib);
  ASSERT_TRUE(data.ok());
  // A progress that says stop cancels the pass at the first fitted site.
  plan.progress = [](int) { return false; };
  absl::Status status = model->Calibrate(data->inputs.narrow(0, 0, 4), plan);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_FALSE(model->session().activation(1).has_value());
}

INSTANTIATE_TEST_SUITE_P(
    Models, CalibrationTest,
    ::testing::Values(Case{OMPQ_PTQ_INPUTS_DIR "/model.pt", OMPQ_PTQ_INPUTS_DIR "/calib.pt"},
                      Case{OMPQ_RESIDUAL_MODELS_DIR "/resnet_traced.pt",
                           OMPQ_RESIDUAL_MODELS_DIR "/calib.pt"},
                      Case{OMPQ_RESIDUAL_MODELS_DIR "/mbv2if_scripted.pt",
                           OMPQ_RESIDUAL_MODELS_DIR "/calib.pt"}),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string name = info.param.model.substr(info.param.model.rfind('/') + 1);
      name = name.substr(0, name.find('.'));
      return name;
    });

}  // namespace
}  // namespace ompq::engine
