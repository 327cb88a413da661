// Quantization after the search (workers/engine/quantize.h) on a small CNN trained on
// Fashion-MNIST by real PyTorch (tests/models/make_ptq_inputs.py): PTQ lowers every
// layer's reconstruction error below nearest rounding, the exported model loads in Python
// and gives the accuracy the report states, runs are deterministic for a seed, and bad
// eval data is refused before any long work.
#include "workers/engine/quantize.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/job_error.h"
#include "workers/engine/search.h"
#include "tests/engine/ptq_fixture.h"

namespace ompq::engine {
namespace {

namespace fs = std::filesystem;

class QuantizeTest : public PtqFixture {
 protected:
  QuantizeOptions Options(FinetuneMode finetune) { return FixtureQuantizeOptions(finetune); }
};

TEST_F(QuantizeTest, PtqBeatsNearestRoundingAndExportsAModelPythonAgreesWith) {
  nlohmann::json report = Search();
  ASSERT_TRUE(report.contains("layers"));
  std::vector<std::string> stages;
  absl::StatusOr<std::vector<std::string>> files = RunQuantization(
      Options(FinetuneMode::kPtq), report, [&](Stage stage, double fraction, const std::string&) {
        EXPECT_GE(fraction, 0.0);
        EXPECT_LE(fraction, 1.0);
        std::string name = stage == Stage::kCalibrating  ? "calibrating"
                           : stage == Stage::kFinetuning ? "finetuning"
                           : stage == Stage::kEvaluating ? "evaluating"
                           : stage == Stage::kExporting  ? "exporting"
                                                         : "other";
        if (stages.empty() || stages.back() != name) stages.push_back(name);
        return true;
      });
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files, (std::vector<std::string>{"model_quantized.pt", "encodings.json",
                                             "model_quantized.onnx"}));
  EXPECT_EQ(stages, (std::vector<std::string>{"calibrating", "finetuning", "evaluating",
                                              "exporting"}));

  // Every reconstructed layer ends at or below its nearest-rounding error, and the
  // low-bit ones strictly below.
  const nlohmann::json& layers = report["quantization"]["layers"];
  ASSERT_EQ(layers.size(), report["layers"].size());
  int improved = 0;
  for (const nlohmann::json& layer : layers) {
    ASSERT_TRUE(layer.contains("reconstruction_mse")) << layer.dump();
    const double nearest = layer["reconstruction_mse_nearest"];
    const double learned = layer["reconstruction_mse"];
    EXPECT_LE(learned, nearest) << layer["name"];
    if (learned < nearest) ++improved;
    EXPECT_TRUE(layer["batch_norm_folded"].get<bool>() ||
                layer["name"].get<std::string>().rfind("fc", 0) == 0)
        << layer["name"] << " follows a BatchNorm that was not folded";
  }
  EXPECT_GT(improved, 0);
  std::cout << "timings: " << report["timings_seconds"].dump() << "\n";

  const nlohmann::json& accuracy = report["accuracy"];
  for (const char* key : {"fp32", "quantized_before_finetune", "quantized"}) {
    ASSERT_TRUE(accuracy.contains(key)) << key;
    EXPECT_GE(accuracy[key].get<double>(), 0.0);
    EXPECT_LE(accuracy[key].get<double>(), 1.0);
  }
  // The model learned something (10 classes: chance is 0.1).
  EXPECT_GT(accuracy["fp32"].get<double>(), 0.5);
  for (const char* key : {"finetune", "evaluate", "export"}) {
    EXPECT_GT(report["timings_seconds"][key].get<double>(), 0.0) << key;
  }

  // Python's view of the artifacts (needs report.json beside them).
  ASSERT_TRUE(WriteArtifacts(report, out_.string()).ok());
  const std::string command = std::string("/usr/bin/python3 ") + OMPQ_CHECK_QUANTIZED_MODEL +
                              " " + out_.string() + " " + Input("eval.pt");
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

TEST_F(QuantizeTest, SameSeedGivesTheSameModel) {
  nlohmann::json report = Search();
  QuantizeOptions options = Options(FinetuneMode::kPtq);
  options.iters = 50;
  options.eval_path.clear();
  nlohmann::json first_report = report, second_report = report;
  ASSERT_TRUE(RunQuantization(options, first_report, nullptr).ok());
  const std::string first = ReadFile(out_ / "encodings.json");
  const torch::jit::Module first_model = torch::jit::load((out_ / "model_quantized.pt").string());
  ASSERT_TRUE(RunQuantization(options, second_report, nullptr).ok());
  EXPECT_EQ(ReadFile(out_ / "encodings.json"), first);
  const torch::jit::Module second_model = torch::jit::load((out_ / "model_quantized.pt").string());
  std::vector<torch::Tensor> first_tensors, second_tensors;
  for (const auto& p : first_model.named_parameters()) first_tensors.push_back(p.value);
  for (const auto& p : second_model.named_parameters()) second_tensors.push_back(p.value);
  ASSERT_EQ(first_tensors.size(), second_tensors.size());
  for (size_t i = 0; i < first_tensors.size(); ++i) {
    EXPECT_TRUE(torch::equal(first_tensors[i], second_tensors[i])) << "parameter " << i;
  }
  EXPECT_EQ(first_report["quantization"], second_report["quantization"]);
}

TEST_F(QuantizeTest, NoFinetuneKeepsNearestRoundingAndStillExports) {
  nlohmann::json report = Search();
  absl::StatusOr<std::vector<std::string>> files =
      RunQuantization(Options(FinetuneMode::kNone), report, nullptr);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(fs::exists(out_ / "model_quantized.pt"));
  EXPECT_EQ(report["accuracy"]["quantized"], report["accuracy"]["quantized_before_finetune"]);
  for (const nlohmann::json& layer : report["quantization"]["layers"]) {
    EXPECT_EQ(layer["rounding"], "nearest");
  }
}

TEST_F(QuantizeTest, CancelStopsFinetuning) {
  nlohmann::json report = Search();
  int finetune_calls = 0;
  absl::StatusOr<std::vector<std::string>> files = RunQuantization(
      Options(FinetuneMode::kPtq), report, [&](Stage stage, double, const std::string&) {
        if (stage != Stage::kFinetuning) return true;
        return ++finetune_calls < 3;  // Stop a few steps into the first layer.
      });
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(fs::exists(out_ / "model_quantized.pt"));
}

struct BadEval {
  std::string file;
  std::string reason;
  std::string message;
};

class BadEvalTest : public ::testing::TestWithParam<BadEval> {};

TEST_P(BadEvalTest, IsRefusedWithItsReason) {
  QuantizeOptions options;
  options.model_path = Input("model.pt");
  options.calib_path = Input("calib.pt");
  options.eval_path = Input(GetParam().file);
  absl::Status status = CheckEvalData(options);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(ReasonOf(status), GetParam().reason) << status;
  EXPECT_NE(status.message().find(GetParam().message), std::string::npos) << status;
}

INSTANTIATE_TEST_SUITE_P(
    Files, BadEvalTest,
    ::testing::Values(BadEval{"eval_unlabelled.pt", "INVALID_INPUT", "no labels"},
                      BadEval{"eval_bad_labels.pt", "INVALID_INPUT", "10 classes"},
                      BadEval{"eval_wrong_shape.pt", "INPUT_MISMATCH", "eval data"}),
    [](const ::testing::TestParamInfo<BadEval>& info) {
      return info.param.reason + std::to_string(info.index);
    });

TEST(CheckEvalDataTest, AcceptsGoodEvalData) {
  QuantizeOptions options;
  options.model_path = Input("model.pt");
  options.calib_path = Input("calib.pt");
  options.eval_path = Input("eval.pt");
  EXPECT_TRUE(CheckEvalData(options).ok());
}

}  // namespace
}  // namespace ompq::engine
