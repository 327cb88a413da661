// Tests of the worker's JobSpec/report/stage conversions (workers/worker_mapping.h).
#include "workers/worker_mapping.h"

#include <gtest/gtest.h>

namespace ompq::worker {
namespace {

TEST(ToSearchOptions, AbsentFieldsKeepEngineDefaults) {
  v1::JobSpec spec;
  spec.set_size_budget_bytes(1000);
  engine::SearchOptions options = ToSearchOptions(spec, "/j/model.pt", "/j/calib", "cpu");
  EXPECT_EQ(options.model_path, "/j/model.pt");
  EXPECT_EQ(options.calib_path, "/j/calib");
  EXPECT_EQ(options.size_budget_bytes, 1000);
  EXPECT_FALSE(options.bops_budget.has_value());
  EXPECT_EQ(options.weight_bits, (std::vector<int>{2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(options.act_bits, 8);
  EXPECT_EQ(options.pin_first_last_bits, 8);  // Absent means 8.
  EXPECT_FALSE(options.beta.has_value());
  EXPECT_EQ(options.search_samples, 32);
  EXPECT_EQ(options.export_profile, engine::ExportProfile::kDefault);
  EXPECT_EQ(options.device, "cpu");
}

TEST(ToSearchOptions, CopiesEveryGivenField) {
  v1::JobSpec spec;
  spec.set_bops_budget(75000000000);
  spec.add_weight_bits(2);
  spec.add_weight_bits(4);
  spec.set_act_bits(6);
  spec.set_pin_first_last_bits(0);  // Explicit 0: no pin.
  auto* pin = spec.add_pins();
  pin->set_name_regex("fc");
  pin->set_bits(8);
  spec.set_beta(0.5);
  spec.set_search_samples(16);
  spec.set_seed(42);
  spec.set_export_profile(v1::EXPORT_PROFILE_TENSORRT);
  engine::SearchOptions options = ToSearchOptions(spec, "m", "c", "cuda:1");
  EXPECT_FALSE(options.size_budget_bytes.has_value());
  EXPECT_EQ(options.bops_budget, 75000000000);
  EXPECT_EQ(options.weight_bits, (std::vector<int>{2, 4}));
  EXPECT_EQ(options.act_bits, 6);
  EXPECT_EQ(options.pin_first_last_bits, 0);
  ASSERT_EQ(options.pins.size(), 1u);
  EXPECT_EQ(options.pins[0], (std::pair<std::string, int>{"fc", 8}));
  EXPECT_EQ(options.beta, 0.5);
  EXPECT_EQ(options.search_samples, 16);
  EXPECT_EQ(options.seed, 42);
  EXPECT_EQ(options.export_profile, engine::ExportProfile::kTensorRt);
  EXPECT_EQ(options.device, "cuda:1");
  EXPECT_EQ(ToQuantizeOptions(spec, "m", "c", "", "", "cpu", "out").export_profile,
            engine::ExportProfile::kTensorRt);
}

nlohmann::json SampleReport() {
  return nlohmann::json::parse(R"({
    "job": "jobs/a",
    "model": {"digest": "sha256:x", "parameters": 1000, "fp32_size_bytes": 4000},
    "layers": [
      {"name": "conv1", "kind": "conv2d", "params": 432, "macs": 10000, "bits": 8,
       "pinned": true, "importance": 1.0},
      {"name": "fc", "kind": "linear", "params": 500, "macs": 500, "bits": 3,
       "pinned": false, "importance": 0.25}],
    "result": {"size_bytes": 1200, "bops": 700000, "objective": 3.5, "lp_bound": 3.75}
  })");
}

TEST(ToJobResult, CopiesTotalsAndLayers) {
  auto result = ToJobResult(SampleReport());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->size_bytes(), 1200);
  EXPECT_EQ(result->bops(), 700000);
  EXPECT_DOUBLE_EQ(result->objective(), 3.5);
  EXPECT_DOUBLE_EQ(result->lp_bound(), 3.75);
  EXPECT_EQ(result->fp32_size_bytes(), 4000);
  ASSERT_EQ(result->layers_size(), 2);
  EXPECT_EQ(result->layers(1).name(), "fc");
  EXPECT_EQ(result->layers(1).kind(), "linear");
  EXPECT_EQ(result->layers(1).bits(), 3);
  EXPECT_EQ(result->layers(0).macs(), 10000);
  EXPECT_TRUE(result->layers(0).pinned());
  EXPECT_DOUBLE_EQ(result->layers(1).importance(), 0.25);
  EXPECT_FALSE(result->has_accuracy());
}

TEST(ToJobResult, CopiesAccuracyWhenPresent) {
  nlohmann::json report = SampleReport();
  report["accuracy"] = {{"fp32", 0.9}, {"quantized_before_finetune", 0.8}, {"quantized", 0.85}};
  auto result = ToJobResult(report);
  ASSERT_TRUE(result.ok());
  ASSERT_TRUE(result->has_accuracy());
  EXPECT_DOUBLE_EQ(result->accuracy().quantized(), 0.85);
}

TEST(ToJobResult, NamesTheBrokenField) {
  nlohmann::json report = SampleReport();
  report["result"].erase("lp_bound");
  EXPECT_NE(ToJobResult(report).status().message().find("result.lp_bound"), std::string::npos);
  report = SampleReport();
  report["layers"][1]["bits"] = "three";
  EXPECT_NE(ToJobResult(report).status().message().find("layers[1].bits"), std::string::npos);
  EXPECT_FALSE(ToJobResult(nlohmann::json::object()).ok());
}

TEST(ToProtoStage, EveryEngineStage) {
  EXPECT_EQ(ToProtoStage(engine::Stage::kAnalyzing), v1::ANALYZING);
  EXPECT_EQ(ToProtoStage(engine::Stage::kOrthogonality), v1::ORTHOGONALITY);
  EXPECT_EQ(ToProtoStage(engine::Stage::kSolving), v1::SOLVING);
  EXPECT_EQ(ToProtoStage(engine::Stage::kCalibrating), v1::CALIBRATING);
  EXPECT_EQ(ToProtoStage(engine::Stage::kFinetuning), v1::FINETUNING);
  EXPECT_EQ(ToProtoStage(engine::Stage::kEvaluating), v1::EVALUATING);
  EXPECT_EQ(ToProtoStage(engine::Stage::kExporting), v1::EXPORTING);
}

TEST(JobProgress, MonotonicAcrossStagesUpTo100) {
  JobProgress progress(JobProgress::SearchStages());
  EXPECT_DOUBLE_EQ(progress.Percent(v1::FETCHING_INPUTS, 0), 0);
  double analyzing = progress.Percent(v1::ANALYZING, 0.5);
  EXPECT_GT(analyzing, 0);
  double orthogonality = progress.Percent(v1::ORTHOGONALITY, 0.5);
  EXPECT_GT(orthogonality, analyzing);
  // A stage going back (or one not planned) never lowers the percent.
  EXPECT_DOUBLE_EQ(progress.Percent(v1::ANALYZING, 0), orthogonality);
  EXPECT_DOUBLE_EQ(progress.Percent(v1::FINETUNING, 0.9), orthogonality);
  EXPECT_DOUBLE_EQ(progress.Percent(v1::EXPORTING, 1), 100);
  EXPECT_DOUBLE_EQ(progress.Percent(v1::EXPORTING, 2), 100);  // Clamped.
}

}  // namespace
}  // namespace ompq::worker
