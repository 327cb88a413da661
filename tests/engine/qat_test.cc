// Quantization-aware training (--finetune qat, workers/engine/quantize.h and qat.h) on the
// small Fashion-MNIST CNN of tests/models/make_ptq_inputs.py, trained on 2000 labelled
// training images the model never saw: QAT lowers the training loss of the quantized model
// below that of the calibrated nearest-rounding one, reports progress per step, the
// exported model loads in Python with the report's top-1, a run is deterministic for a
// seed, cancelling stops it, and bad training data is refused before any finetuning.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/job_error.h"
#include "workers/engine/qat.h"
#include "workers/engine/quantize.h"
#include "workers/engine/search.h"
#include "tests/engine/ptq_fixture.h"

namespace ompq::engine {
namespace {

namespace fs = std::filesystem;

class QatTest : public PtqFixture {
 protected:
  // Low-bit activations too, so that quantization costs accuracy QAT can win back.
  QuantizeOptions Options() const {
    QuantizeOptions options = FixtureQuantizeOptions(FinetuneMode::kQat);
    options.train_path = Input("train.pt");
    options.act_bits = 4;
    options.epochs = 1;
    options.lr = 1e-3;
    options.seed = 3;
    return options;
  }
};

TEST_F(QatTest, LowersTheTrainingLossAndExportsAModelPythonAgreesWith) {
  nlohmann::json report = Search();
  ASSERT_TRUE(report.contains("layers"));
  std::vector<std::string> stages;
  std::vector<double> finetune_fractions;
  absl::StatusOr<std::vector<std::string>> files = RunQuantization(
      Options(), report, [&](Stage stage, double fraction, const std::string& message) {
        EXPECT_GE(fraction, 0.0);
        EXPECT_LE(fraction, 1.0);
        std::string name = stage == Stage::kCalibrating  ? "calibrating"
                           : stage == Stage::kFinetuning ? "finetuning"
                           : stage == Stage::kEvaluating ? "evaluating"
                           : stage == Stage::kExporting  ? "exporting"
                                                         : "other";
        if (stages.empty() || stages.back() != name) stages.push_back(name);
        if (stage == Stage::kFinetuning) {
          EXPECT_NE(message.find("QAT"), std::string::npos) << message;
          finetune_fractions.push_back(fraction);
        }
        return true;
      });
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(stages, (std::vector<std::string>{"calibrating", "finetuning", "evaluating",
                                              "exporting"}));

  const nlohmann::json& qat = report["quantization"]["qat"];
  ASSERT_TRUE(qat.is_object()) << report["quantization"].dump();
  std::cout << "qat: " << qat.dump() << "\naccuracy: " << report["accuracy"].dump() << "\n";
  const int64_t steps = qat["steps"];
  EXPECT_EQ(steps, (2000 + kQatBatchSize - 1) / kQatBatchSize);
  // Progress once per step (plus the start and the end), never moving back.
  EXPECT_GE(static_cast<int64_t>(finetune_fractions.size()), steps);
  for (size_t i = 1; i < finetune_fractions.size(); ++i) {
    EXPECT_GE(finetune_fractions[i], finetune_fractions[i - 1]);
  }
  EXPECT_EQ(finetune_fractions.back(), 1.0);
  // Training lowered the loss of the exported (fixed-grid) model below that of the
  // calibrated nearest-rounding model it started from.
  const double before = qat["train_loss_before"], after = qat["train_loss_after"];
  EXPECT_LT(after, before);
  for (const nlohmann::json& layer : report["quantization"]["layers"]) {
    EXPECT_EQ(layer["rounding"], "qat (lsq)") << layer["name"];
  }
  const nlohmann::json& accuracy = report["accuracy"];
  EXPECT_GT(accuracy["fp32"].get<double>(), 0.5);
  EXPECT_GE(accuracy["quantized"].get<double>(),
            accuracy["quantized_before_finetune"].get<double>());

  // Python's view of the artifacts: top-1 within 0.1 pt of the report, weights on the
  // (learned) grids of encodings.json.
  ASSERT_TRUE(WriteArtifacts(report, out_.string()).ok());
  const std::string command = std::string("/usr/bin/python3 ") + OMPQ_CHECK_QUANTIZED_MODEL +
                              " " + out_.string() + " " + Input("eval.pt");
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

TEST_F(QatTest, SameSeedGivesTheSameModel) {
  nlohmann::json report = Search();
  QuantizeOptions options = Options();
  options.eval_path.clear();
  nlohmann::json first_report = report, second_report = report;
  ASSERT_TRUE(RunQuantization(options, first_report, nullptr).ok());
  const std::string first = ReadFile(out_ / "encodings.json");
  ASSERT_TRUE(RunQuantization(options, second_report, nullptr).ok());
  EXPECT_EQ(ReadFile(out_ / "encodings.json"), first);
  EXPECT_EQ(first_report["quantization"], second_report["quantization"]);
}

TEST_F(QatTest, CancelStopsTraining) {
  nlohmann::json report = Search();
  int finetune_calls = 0;
  absl::StatusOr<std::vector<std::string>> files =
      RunQuantization(Options(), report, [&](Stage stage, double, const std::string&) {
        if (stage != Stage::kFinetuning) return true;
        return ++finetune_calls < 4;  // Stop a few steps in.
      });
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(finetune_calls, 4);
  EXPECT_FALSE(fs::exists(out_ / "model_quantized.pt"));
}

TEST_F(QatTest, LabelsOutOfRangeAreRefusedBeforeFinetuning) {
  nlohmann::json report = Search();
  QuantizeOptions options = Options();
  options.train_path = Input("train_bad_labels.pt");
  bool finetuned = false;
  absl::StatusOr<std::vector<std::string>> files =
      RunQuantization(options, report, [&](Stage stage, double, const std::string&) {
        if (stage == Stage::kFinetuning) finetuned = true;
        return true;
      });
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(ReasonOf(files.status()), "INVALID_INPUT") << files.status();
  EXPECT_NE(files.status().message().find("train labels range over [10, 19]"), std::string::npos)
      << files.status();
  EXPECT_FALSE(finetuned);
}

TEST_F(QatTest, QatWithoutTrainingDataIsRefused) {
  nlohmann::json report = Search();
  QuantizeOptions options = Options();
  options.train_path.clear();
  absl::StatusOr<std::vector<std::string>> files = RunQuantization(options, report, nullptr);
  ASSERT_FALSE(files.ok());
  EXPECT_NE(files.status().message().find("pass --train FILE"), std::string::npos)
      << files.status();
  EXPECT_EQ(CheckTrainData(options).code(), absl::StatusCode::kInvalidArgument);
}

struct BadTrain {
  std::string file;
  std::string reason;
  std::string message;
};

class BadTrainTest : public ::testing::TestWithParam<BadTrain> {};

TEST_P(BadTrainTest, IsRefusedWithItsReason) {
  QuantizeOptions options;
  options.model_path = Input("model.pt");
  options.calib_path = Input("calib.pt");
  options.finetune = FinetuneMode::kQat;
  options.train_path = Input(GetParam().file);
  absl::Status status = CheckTrainData(options);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(ReasonOf(status), GetParam().reason) << status;
  EXPECT_NE(status.message().find(GetParam().message), std::string::npos) << status;
}

INSTANTIATE_TEST_SUITE_P(
    Files, BadTrainTest,
    ::testing::Values(BadTrain{"train_bad_labels.pt", "INVALID_INPUT", "10 classes"},
                      BadTrain{"eval_unlabelled.pt", "INVALID_INPUT", "train data has no labels"},
                      BadTrain{"eval_wrong_shape.pt", "INPUT_MISMATCH", "train data"}),
    [](const ::testing::TestParamInfo<BadTrain>& info) {
      return info.param.reason + std::to_string(info.index);
    });

TEST(CheckTrainDataTest, AcceptsGoodTrainingDataAndIgnoresItWithoutQat) {
  QuantizeOptions options;
  options.model_path = Input("model.pt");
  options.calib_path = Input("calib.pt");
  options.finetune = FinetuneMode::kQat;
  options.train_path = Input("train.pt");
  EXPECT_TRUE(CheckTrainData(options).ok());
  options.finetune = FinetuneMode::kPtq;
  options.train_path = Input("train_bad_labels.pt");
  EXPECT_TRUE(CheckTrainData(options).ok());
}

}  // namespace
}  // namespace ompq::engine
