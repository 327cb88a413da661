// Residual block discovery (graph_layers.h FindResidualBlocks) and block reconstruction
// (brecq.h) on small ResNet- and MobileNetV2-style models made by real PyTorch, traced and
// scripted (tests/models/make_residual_models.py): the blocks found are exactly those the
// modules were built with a skip, an extracted block computes what PyTorch's forward hook
// saw, BRECQ lowers the block output error below nearest rounding, and a full PTQ run
// reconstructs the blocks and exports a model Python agrees with.
#include "workers/engine/brecq.h"

#include <gtest/gtest.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "workers/engine/graph_layers.h"
#include "workers/engine/quantize.h"
#include "workers/engine/quantizer.h"
#include "workers/engine/search.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

namespace fs = std::filesystem;

std::string Input(const std::string& name) {
  return std::string(OMPQ_RESIDUAL_MODELS_DIR) + "/" + name;
}

nlohmann::json ExpectedBlocks() {
  std::ifstream in(Input("blocks.json"));
  return nlohmann::json::parse(in);
}

torch::Tensor LoadTensor(const std::string& name) {
  absl::StatusOr<CalibrationData> data = LoadCalibrationFile(Input(name));
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok() ? data->inputs : torch::Tensor();
}

// A model's inlined forward graph with its layer sites and residual blocks.
struct Analysed {
  torch::jit::Module module;
  std::shared_ptr<torch::jit::Graph> graph;
  std::vector<LayerSiteNode> sites;
  std::vector<ResidualBlock> blocks;

  std::vector<std::vector<std::string>> BlockNames() const {
    std::vector<std::vector<std::string>> names;
    for (const ResidualBlock& block : blocks) {
      names.emplace_back();
      for (int s : block.sites) names.back().push_back(sites[s].name);
    }
    return names;
  }
};

Analysed Analyse(const std::string& model) {
  Analysed a;
  absl::StatusOr<LoadedModel> loaded = LoadTorchScriptModel(Input(model + ".pt"), "cpu");
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return a;
  a.module = loaded->module;
  a.graph = a.module.get_method("forward").graph()->copy();
  torch::jit::Inline(*a.graph);
  FoldStaticIfs(*a.graph, a.module);  // As quantization does.
  a.sites = FindLayerSites(*a.graph, a.module);
  a.blocks = FindResidualBlocks(*a.graph, a.sites);
  return a;
}

class BlockDiscoveryTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BlockDiscoveryTest, FindsExactlyTheBlocksBuiltWithASkip) {
  const Analysed a = Analyse(GetParam());
  const auto expected =
      ExpectedBlocks().at(GetParam()).get<std::vector<std::vector<std::string>>>();
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(a.BlockNames(), expected);
  for (const ResidualBlock& block : a.blocks) {
    ASSERT_GE(block.input_site, 0);
    EXPECT_EQ(a.sites[block.input_site].node->input(0), block.input);
  }
  // Layers outside the blocks exist (stem, transition, classifier) and stay outside.
  size_t in_blocks = 0;
  for (const auto& names : expected) in_blocks += names.size();
  EXPECT_GT(a.sites.size(), in_blocks);
}

INSTANTIATE_TEST_SUITE_P(Models, BlockDiscoveryTest,
                         ::testing::Values("resnet_traced", "resnet_scripted", "mbv2_traced",
                                           "mbv2_scripted", "mbv2if_traced", "mbv2if_scripted"));

// Without folding, a scripted `if self.use_res_connect:` holds both branches: every layer
// of those modules has two call sites and no skip is visible at the top level.
TEST(FoldStaticIfsTest, LeavesEachLayerCallOnce) {
  absl::StatusOr<LoadedModel> loaded = LoadTorchScriptModel(Input("mbv2if_scripted.pt"), "cpu");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::shared_ptr<torch::jit::Graph> graph = loaded->module.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  const size_t unfolded = FindLayerSites(*graph, loaded->module).size();
  EXPECT_EQ(FoldStaticIfs(*graph, loaded->module), 3);
  const std::vector<LayerSiteNode> sites = FindLayerSites(*graph, loaded->module);
  EXPECT_EQ(unfolded, sites.size() + 9);  // The three modules' convs, once more each.
  std::set<std::string> names;
  for (const LayerSiteNode& site : sites) names.insert(site.name);
  EXPECT_EQ(names.size(), sites.size());
}

// The downsample block (layer2) of the ResNet: conv1, conv2 and the shortcut conv.
class ResNetBlockTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    a_ = Analyse(GetParam());
    ASSERT_EQ(a_.blocks.size(), 2u);
    block_ = a_.blocks[1];
    inputs_ = LoadTensor("layer2_input.pt");
    outputs_ = LoadTensor("layer2_output.pt");
    ASSERT_TRUE(inputs_.defined() && outputs_.defined());
  }

  Analysed a_;
  ResidualBlock block_;
  torch::Tensor inputs_, outputs_;
};

TEST_P(ResNetBlockTest, ExtractedBlockComputesWhatPyTorchSaw) {
  torch::NoGradGuard no_grad;
  absl::StatusOr<BlockGraph> own =
      BlockGraph::Extract(*a_.graph, block_, a_.sites, "", nullptr, /*weights_as_inputs=*/false);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_TRUE(own->layer_names().empty());
  EXPECT_TRUE(torch::allclose(own->Run(a_.module, inputs_), outputs_, 1e-4, 1e-5));

  absl::StatusOr<BlockGraph> inputs =
      BlockGraph::Extract(*a_.graph, block_, a_.sites, "", nullptr, /*weights_as_inputs=*/true);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  EXPECT_EQ(inputs->layer_names(),
            (std::vector<std::string>{"layer2.conv1", "layer2.conv2", "layer2.downsample.0"}));
  std::vector<torch::Tensor> weights;
  for (int s : block_.sites)
    weights.push_back(*ResolveTensor(a_.module, a_.sites[s].weight_path, true));
  EXPECT_TRUE(torch::allclose(inputs->Run(a_.module, inputs_, weights), outputs_, 1e-4, 1e-5));
  // The weights given are the ones used.
  weights[1] = torch::zeros_like(weights[1]);
  EXPECT_FALSE(torch::allclose(inputs->Run(a_.module, inputs_, weights), outputs_, 1e-2, 1e-2));
}

TEST_P(ResNetBlockTest, ReconstructionBeatsNearestRoundingAndRepeatsForASeed) {
  torch::NoGradGuard no_grad;
  absl::StatusOr<BlockGraph> graph =
      BlockGraph::Extract(*a_.graph, block_, a_.sites, "", nullptr, /*weights_as_inputs=*/true);
  ASSERT_TRUE(graph.ok()) << graph.status();
  std::vector<torch::Tensor> weights;
  std::vector<QuantParams> params;
  QuantizerOptions three_bits;
  three_bits.bits = 3;
  for (int s : block_.sites) {
    weights.push_back(ResolveTensor(a_.module, a_.sites[s].weight_path, true)->clone());
    absl::StatusOr<QuantParams> fitted = FitWeightQuantizer(weights.back(), three_bits);
    ASSERT_TRUE(fitted.ok()) << fitted.status();
    params.push_back(*fitted);
  }
  AdaRoundOptions options;
  options.iters = 150;
  options.seed = 3;
  int calls = 0;
  double last = 0;
  absl::StatusOr<BrecqResult> result = RunBlockReconstruction(
      *graph, a_.module, weights, params, inputs_, outputs_, options, [&](double fraction) {
        ++calls;
        EXPECT_GT(fraction, last);
        last = fraction;
        return true;
      });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(calls, options.iters);  // Every step reports (and may cancel).
  EXPECT_DOUBLE_EQ(last, 1.0);
  EXPECT_FALSE(result->kept_nearest);
  EXPECT_LT(result->mse_brecq, result->mse_nearest);
  ASSERT_EQ(result->codes.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_GE(result->codes[k].min().item<int64_t>(), 0);
    EXPECT_LE(result->codes[k].max().item<int64_t>(), 7);
  }
  // The error reported is the block's with the codes handed back.
  std::vector<torch::Tensor> dequantized;
  for (size_t k = 0; k < 3; ++k) {
    absl::StatusOr<torch::Tensor> w = Dequantize(result->codes[k], params[k], torch::kFloat);
    ASSERT_TRUE(w.ok());
    dequantized.push_back(*w);
  }
  const double mse =
      (graph->Run(a_.module, inputs_, dequantized) - outputs_).pow(2).mean().item<double>();
  EXPECT_NEAR(mse, result->mse_brecq, 1e-3 * result->mse_brecq);

  absl::StatusOr<BrecqResult> again =
      RunBlockReconstruction(*graph, a_.module, weights, params, inputs_, outputs_, options);
  ASSERT_TRUE(again.ok()) << again.status();
  for (size_t k = 0; k < 3; ++k) EXPECT_TRUE(torch::equal(again->codes[k], result->codes[k]));

  // Cancelling stops it.
  absl::StatusOr<BrecqResult> cancelled =
      RunBlockReconstruction(*graph, a_.module, weights, params, inputs_, outputs_, options,
                             [](double fraction) { return fraction < 0.05; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
}

INSTANTIATE_TEST_SUITE_P(Models, ResNetBlockTest,
                         ::testing::Values("resnet_traced", "resnet_scripted"));

// The whole PTQ pipeline on the residual models: blocks reconstructed with BRECQ, the rest
// with AdaRound, the exported model checked in Python.
class BrecqPtqTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    out_ = fs::temp_directory_path() /
           ("ompq-brecq-test-" + std::to_string(::getpid()) + "-" + GetParam());
    fs::remove_all(out_);
  }
  void TearDown() override { fs::remove_all(out_); }
  fs::path out_;
};

TEST_P(BrecqPtqTest, BlocksAreReconstructedJointlyAndTheModelExports) {
  SearchOptions search;
  search.model_path = Input(GetParam() + ".pt");
  search.calib_path = Input("calib.pt");
  // About 4 bits per weight (the MobileNet-style model is larger).
  search.size_budget_bytes = GetParam().rfind("resnet", 0) == 0 ? 3 * 1024 : 5 * 1024;
  absl::StatusOr<SearchResult> searched = RunSearch(search, nullptr);
  ASSERT_TRUE(searched.ok()) << searched.status();
  nlohmann::json report = searched->report;

  QuantizeOptions options;
  options.model_path = search.model_path;
  options.calib_path = search.calib_path;
  if (GetParam().rfind("resnet", 0) == 0) options.eval_path = Input("eval.pt");
  options.calib_samples = 256;
  options.iters = 200;
  options.seed = 5;
  options.out_dir = out_.string();
  double last = 0;
  absl::StatusOr<std::vector<std::string>> files =
      RunQuantization(options, report, [&](Stage stage, double fraction, const std::string&) {
        if (stage == Stage::kFinetuning) {
          EXPECT_GE(fraction, last);  // Progress only moves forward across units.
          last = fraction;
        }
        return true;
      });
  ASSERT_TRUE(files.ok()) << files.status();

  const auto expected =
      ExpectedBlocks().at(GetParam()).get<std::vector<std::vector<std::string>>>();
  const nlohmann::json& units = report["quantization"]["units"];
  std::vector<std::vector<std::string>> brecq;
  size_t layers_in_units = 0;
  for (const nlohmann::json& unit : units) {
    layers_in_units += unit["layers"].size();
    EXPECT_LE(unit["mse"].get<double>(), unit["mse_nearest"].get<double>()) << unit.dump();
    if (unit["layers"].size() > 1) {
      brecq.push_back(unit["layers"].get<std::vector<std::string>>());
      // The joint reconstruction improved on nearest rounding.
      EXPECT_EQ(unit["method"], "brecq") << unit.dump();
      EXPECT_LT(unit["mse"].get<double>(), unit["mse_nearest"].get<double>()) << unit.dump();
    } else {
      EXPECT_NE(unit["method"], "brecq");
    }
  }
  EXPECT_EQ(brecq, expected);
  std::cout << GetParam() << " units: " << units.dump() << "\n";
  EXPECT_EQ(layers_in_units, report["quantization"]["layers"].size());
  for (const nlohmann::json& layer : report["quantization"]["layers"]) {
    bool in_block = false;
    for (const auto& names : expected) {
      in_block = in_block || std::find(names.begin(), names.end(), layer["name"]) != names.end();
    }
    EXPECT_EQ(layer["rounding"] == "brecq", in_block) << layer.dump();
  }

  if (options.eval_path.empty()) return;
  ASSERT_TRUE(WriteArtifacts(report, out_.string()).ok());
  const std::string command = std::string("/usr/bin/python3 ") + OMPQ_CHECK_QUANTIZED_MODEL + " " +
                              out_.string() + " " + Input("eval.pt");
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

INSTANTIATE_TEST_SUITE_P(Models, BrecqPtqTest,
                         ::testing::Values("resnet_traced", "resnet_scripted", "mbv2_traced",
                                           "mbv2_scripted", "mbv2if_scripted"));

}  // namespace
}  // namespace ompq::engine
