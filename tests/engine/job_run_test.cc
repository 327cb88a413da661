// The engine's pipeline (workers/engine/job_run.h) on the Fashion-MNIST CNN of
// make_ptq_inputs.py: the stages run as calls on inputs loaded once, the model as loaded
// is never changed by quantizing its copy, and bad labelled data fails at Load, before
// any long work.
#include "workers/engine/job_run.h"

#include <gtest/gtest.h>
#include <torch/script.h>

#include <filesystem>

#include "common/job_error.h"
#include "tests/engine/ptq_fixture.h"
#include "workers/engine/frontier_eval.h"

namespace ompq::engine {
namespace {

namespace fs = std::filesystem;

class JobRunTest : public PtqFixture {
 protected:
  static SearchOptions Search() { return FixtureSearchOptions(); }
  QuantizeOptions Quantize(FinetuneMode finetune) const {
    QuantizeOptions options = FixtureQuantizeOptions(finetune);
    options.iters = 20;
    return options;
  }
};

TEST_F(JobRunTest, RunsTheStagesOnInputsLoadedOnce) {
  std::vector<Stage> stages;
  auto progress = [&](Stage stage, double, const std::string&) {
    if (stages.empty() || stages.back() != stage) stages.push_back(stage);
    return true;
  };
  absl::StatusOr<std::unique_ptr<JobRun>> run =
      JobRun::Load(Search(), Quantize(FinetuneMode::kPtq), progress);
  ASSERT_TRUE(run.ok()) << run.status();
  // Quantize needs the search's bits.
  EXPECT_EQ((*run)->Quantize(progress).code(), absl::StatusCode::kFailedPrecondition);

  // The float weights as loaded, to compare after quantizing.
  std::vector<torch::Tensor> loaded;
  for (const torch::Tensor& p : (*run)->inputs().model.module.parameters()) {
    loaded.push_back(p.detach().clone());
  }
  ASSERT_TRUE((*run)->Search(progress).ok());
  ASSERT_TRUE((*run)->Quantize(progress).ok());
  absl::StatusOr<std::vector<std::string>> files = (*run)->WriteReport();
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files, (std::vector<std::string>{"report.json", "bit_config.json", "report.html",
                                              "model_quantized.pt", "encodings.json",
                                              "model_quantized.onnx"}));
  for (const std::string& file : *files) EXPECT_TRUE(fs::exists(out_ / file)) << file;
  EXPECT_EQ(stages, (std::vector<Stage>{Stage::kAnalyzing, Stage::kOrthogonality, Stage::kSolving,
                                        Stage::kCalibrating, Stage::kFinetuning,
                                        Stage::kEvaluating, Stage::kExporting}));

  const nlohmann::json& report = (*run)->report();
  EXPECT_EQ(report["quantization"]["finetune"], "ptq");
  EXPECT_GT(report["accuracy"]["fp32"].get<double>(), 0.5);  // 71.6% in Python (meta.json).
  EXPECT_GT(report["timings_seconds"]["analyze"].get<double>(), 0.0);
  // Quantizing worked on a copy: the loaded model's weights are untouched.
  size_t i = 0;
  for (const torch::Tensor& p : (*run)->inputs().model.module.parameters()) {
    ASSERT_LT(i, loaded.size());
    EXPECT_TRUE(torch::equal(p, loaded[i++])) << "parameter " << i - 1;
  }
  EXPECT_EQ(i, loaded.size());
}

TEST(FrontierEvalPoints, SpreadEvenlyWithBothEnds) {
  EXPECT_EQ(FrontierEvalPoints(24, 8), (std::vector<size_t>{0, 3, 7, 10, 13, 16, 20, 23}));
  EXPECT_EQ(FrontierEvalPoints(5, 8), (std::vector<size_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(FrontierEvalPoints(24, 2), (std::vector<size_t>{0, 23}));
  EXPECT_EQ(FrontierEvalPoints(24, 1), (std::vector<size_t>{23}));
  EXPECT_TRUE(FrontierEvalPoints(24, 0).empty());
  EXPECT_TRUE(FrontierEvalPoints(0, 8).empty());
}

// A frontier point is measured the way the job measures its own allocation: at the job's
// own bits, the point's top-1 is the job's top-1 with nearest rounding.
TEST_F(JobRunTest, FrontierTopOneAtTheJobsBitsIsTheJobsOwn) {
  QuantizeOptions options = Quantize(FinetuneMode::kNone);
  options.frontier_evals = 2;
  absl::StatusOr<std::unique_ptr<JobRun>> run = JobRun::Load(Search(), options, nullptr);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE((*run)->Search(nullptr).ok());
  nlohmann::json& report = (*run)->report();
  ASSERT_GE(report["frontier"].size(), 20u);
  // The last point (every free layer at 8 bits) is replaced by the job's own allocation.
  std::vector<int> bits;
  for (const nlohmann::json& layer : report["layers"]) bits.push_back(layer["bits"]);
  report["frontier"].back()["bits"] = bits;
  ASSERT_TRUE((*run)->Quantize(nullptr).ok());
  const nlohmann::json& frontier = report["frontier"];
  ASSERT_TRUE(frontier.front().contains("top1_nearest"));
  ASSERT_TRUE(frontier.back().contains("top1_nearest"));
  EXPECT_EQ(frontier[1].contains("top1_nearest"), false);
  EXPECT_EQ(frontier.back()["top1_nearest"].get<double>(),
            report["accuracy"]["quantized"].get<double>());
  // The smallest point has fewer bits everywhere: it is not better than the job's.
  EXPECT_LE(frontier.front()["top1_nearest"].get<double>(), report["accuracy"]["fp32"].get<double>());
}

TEST_F(JobRunTest, BadEvalDataFailsAtLoad) {
  QuantizeOptions options = Quantize(FinetuneMode::kNone);
  options.eval_path = Input("eval_bad_labels.pt");
  absl::StatusOr<std::unique_ptr<JobRun>> run = JobRun::Load(Search(), options, nullptr);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(ReasonOf(run.status()), "INVALID_INPUT") << run.status();
  EXPECT_NE(run.status().message().find("10 classes"), std::string::npos) << run.status();
}

TEST_F(JobRunTest, QatWithoutTrainingDataFailsAtLoad) {
  absl::StatusOr<std::unique_ptr<JobRun>> run =
      JobRun::Load(Search(), Quantize(FinetuneMode::kQat), nullptr);
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(ReasonOf(run.status()), "INVALID_INPUT") << run.status();
}

}  // namespace
}  // namespace ompq::engine
