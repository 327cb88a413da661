// RunSearch end to end on real models: the report contract, the exact optimum, pins,
// progress and cancellation, every bad input's reason, and the artifacts.
#include "workers/engine/search.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "common/digest.h"
#include "common/job_error.h"
#include "tests/engine/test_models.h"

namespace ompq::engine {
namespace {

using testing::ModelFile;

SearchOptions GroupedOptions() {
  SearchOptions options;
  options.model_path = ModelFile("grouped.pt");
  options.calib_path = ModelFile("calib_grouped.pt");
  options.size_budget_bytes = 7000;  // All 8-bit: 7832 bytes; free layers at 2 bits: 6560.
  options.search_samples = 16;
  return options;
}

nlohmann::json Search(const SearchOptions& options) {
  absl::StatusOr<SearchResult> result = RunSearch(options, nullptr);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? result->report : nlohmann::json();
}

// Every allocation of the report's layers (pinned ones at their bits, free ones over
// `candidates`) within the size budget, by enumeration; `visit(bits)` sees each one.
void EnumerateWithin(const nlohmann::json& report, const std::vector<int>& candidates,
                     int64_t size_budget, const std::function<void(const std::vector<int>&)>& visit) {
  const nlohmann::json& layers = report["layers"];
  const int64_t other_bytes = report["model"]["other_bytes"];
  std::vector<int> choice(layers.size(), 0), bits(layers.size());
  while (true) {
    int64_t bits_total = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      bits[i] =
          layers[i]["pinned"].get<bool>() ? layers[i]["bits"].get<int>() : candidates[choice[i]];
      bits_total += layers[i]["params"].get<int64_t>() * bits[i];
    }
    if ((bits_total + 7) / 8 + other_bytes <= size_budget) visit(bits);
    size_t i = 0;
    for (; i < layers.size(); ++i) {
      if (layers[i]["pinned"].get<bool>()) continue;
      if (++choice[i] < static_cast<int>(candidates.size())) break;
      choice[i] = 0;
    }
    if (i == layers.size()) break;
  }
}

// The largest sum c_i b_i within the budget (the orthogonality objective).
double ExhaustiveOptimum(const nlohmann::json& report, const std::vector<int>& candidates,
                         int64_t size_budget) {
  double best = -1;
  EnumerateWithin(report, candidates, size_budget, [&](const std::vector<int>& bits) {
    double objective = 0;
    for (size_t i = 0; i < bits.size(); ++i) {
      objective += report["layers"][i]["coefficient"].get<double>() * bits[i];
    }
    best = std::max(best, objective);
  });
  return best;
}

// The smallest sum theta_i D_i(b_i) within the budget, from the report's own tables
// (layers[].distortion and importance): the distortion objective.
double ExhaustiveDistortion(const nlohmann::json& report, const std::vector<int>& candidates,
                            int64_t size_budget) {
  double best = std::numeric_limits<double>::infinity();
  EnumerateWithin(report, candidates, size_budget, [&](const std::vector<int>& bits) {
    double objective = 0;
    for (size_t i = 0; i < bits.size(); ++i) {
      const nlohmann::json& layer = report["layers"][i];
      objective += layer["importance"].get<double>() *
                   layer["distortion"][std::to_string(bits[i])].get<double>();
    }
    best = std::min(best, objective);
  });
  return best;
}

TEST(SearchTest, ReportFollowsTheContract) {
  SearchOptions options = GroupedOptions();
  options.pins = {{"depth.*", 4}};
  options.seed = 42;
  const nlohmann::json report = Search(options);
  ASSERT_FALSE(report.is_null());

  EXPECT_EQ(report["job"], "");
  absl::StatusOr<std::string> digest = DigestOfFile(options.model_path);
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(report["model"]["digest"], *digest);
  const nlohmann::json expected = testing::Expected("grouped");
  EXPECT_EQ(report["model"]["parameters"], expected["total_parameters"]);
  EXPECT_EQ(report["model"]["fp32_size_bytes"], 4 * expected["total_parameters"].get<int64_t>());
  EXPECT_EQ(report["model"]["other_bytes"], expected["other_bytes"]);

  // The defaults: the distortion objective at beta 0.
  EXPECT_EQ(report["search"]["objective"], "distortion");
  EXPECT_EQ(report["search"]["beta"], 0.0);
  EXPECT_EQ(report["search"]["samples"], 16);
  EXPECT_EQ(report["search"]["weight_bits"], (std::vector<int>{2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(report["search"]["act_bits"], 8);
  EXPECT_EQ(report["search"]["seed"], 42);

  const nlohmann::json& layers = report["layers"];
  ASSERT_EQ(layers.size(), expected["layers"].size());
  double max_importance = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE(layers[i].dump());
    EXPECT_EQ(layers[i]["name"], expected["layers"][i]["name"]);
    EXPECT_EQ(layers[i]["kind"], expected["layers"][i]["kind"]);
    EXPECT_EQ(layers[i]["weight_shape"], expected["layers"][i]["weight_shape"]);
    EXPECT_EQ(layers[i]["params"], expected["layers"][i]["params"]);
    EXPECT_EQ(layers[i]["macs"], expected["layers"][i]["macs"]);
    EXPECT_EQ(layers[i]["act_bits"], 8);
    EXPECT_NEAR(layers[i]["gamma"].get<double>(), expected["gamma"][i].get<double>(), 1e-4);
    const int bits = layers[i]["bits"];
    EXPECT_GE(bits, 2);
    EXPECT_LE(bits, 8);
    const double importance = layers[i]["importance"];
    EXPECT_GT(importance, 0.0);
    EXPECT_LE(importance, 1.0);
    max_importance = std::max(max_importance, importance);
  }
  EXPECT_DOUBLE_EQ(max_importance, 1.0);
  // Pins: first and last at 8, the depthwise layer by regex at 4, nothing else pinned.
  EXPECT_EQ(layers.front()["bits"], 8);
  EXPECT_EQ(layers.back()["bits"], 8);
  EXPECT_TRUE(layers.front()["pinned"]);
  EXPECT_EQ(layers[2]["name"], "depthwise");
  EXPECT_EQ(layers[2]["bits"], 4);
  EXPECT_TRUE(layers[2]["pinned"]);
  EXPECT_FALSE(layers[1]["pinned"]);
  EXPECT_EQ(report["search"]["pins"][0]["layers"], nlohmann::json({"depthwise"}));

  ASSERT_EQ(report["orm"].size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    ASSERT_EQ(report["orm"][i].size(), layers.size());
    EXPECT_EQ(report["orm"][i][i], 1.0);
    EXPECT_NEAR(report["orm"][i][0].get<double>(), expected["orm"][i][0].get<double>(), 1e-5);
  }
  EXPECT_EQ(report["budget"]["size_bytes"], 7000);
  EXPECT_TRUE(report["budget"]["bops"].is_null());

  // The result is consistent with the bits and within the budget.
  int64_t bits_total = 0, bops = 0;
  double objective = 0;
  for (const nlohmann::json& layer : layers) {
    bits_total += layer["params"].get<int64_t>() * layer["bits"].get<int>();
    bops += layer["macs"].get<int64_t>() * layer["bits"].get<int>() * 8;
    objective += layer["importance"].get<double>() *
                 layer["distortion"][std::to_string(layer["bits"].get<int>())].get<double>();
  }
  const nlohmann::json& result = report["result"];
  EXPECT_EQ(result["size_bytes"],
            (bits_total + 7) / 8 + report["model"]["other_bytes"].get<int64_t>());
  EXPECT_LE(result["size_bytes"].get<int64_t>(), 7000);
  EXPECT_EQ(result["bops"], bops);
  EXPECT_NEAR(result["objective"].get<double>(), objective, 1e-12);
  // Minimised: the relaxation's bound is below the integer optimum.
  EXPECT_LE(result["lp_bound"].get<double>(), result["objective"].get<double>() + 1e-12);

  for (const char* key :
       {"analyze", "orthogonality", "solve", "finetune", "evaluate", "export", "total"}) {
    ASSERT_TRUE(report["timings_seconds"].contains(key)) << key;
    EXPECT_GE(report["timings_seconds"][key].get<double>(), 0.0) << key;
  }
  EXPECT_GT(report["timings_seconds"]["orthogonality"].get<double>(), 0.0);
}

TEST(SearchTest, IntegerObjectiveIsTheExhaustiveOptimum) {
  for (int64_t budget : {6600, 6800, 7000, 7400}) {
    SearchOptions options = GroupedOptions();
    options.objective = Objective::kOrthogonality;
    options.size_budget_bytes = budget;
    options.beta = 5.0;  // Spreads the coefficients so the choice is not trivial.
    const nlohmann::json report = Search(options);
    ASSERT_FALSE(report.is_null());
    const double best = ExhaustiveOptimum(report, options.weight_bits, budget);
    EXPECT_NEAR(report["result"]["objective"].get<double>(), best, 1e-9) << budget;
    EXPECT_LE(report["result"]["size_bytes"].get<int64_t>(), budget);
  }
}

TEST(SearchTest, DistortionObjectiveIsTheExhaustiveOptimum) {
  for (double beta : {0.0, 1.0}) {
    for (int64_t budget : {6600, 7000, 7400}) {
      SearchOptions options = GroupedOptions();
      options.objective = Objective::kDistortion;
      options.size_budget_bytes = budget;
      options.beta = beta;
      const nlohmann::json report = Search(options);
      ASSERT_FALSE(report.is_null());
      EXPECT_EQ(report["search"]["objective"], "distortion");
      for (const nlohmann::json& layer : report["layers"]) {
        ASSERT_TRUE(layer.contains("distortion")) << layer["name"];
        if (beta == 0.0) {
          EXPECT_EQ(layer["importance"].get<double>(), 1.0);
        }
        // Non-increasing in bits.
        double previous = std::numeric_limits<double>::infinity();
        for (int bits : options.weight_bits) {
          if (!layer["distortion"].contains(std::to_string(bits))) continue;
          const double d = layer["distortion"][std::to_string(bits)].get<double>();
          EXPECT_LE(d, previous) << layer["name"] << " at " << bits;
          previous = d;
        }
      }
      const double best = ExhaustiveDistortion(report, options.weight_bits, budget);
      EXPECT_NEAR(report["result"]["objective"].get<double>(), best, 1e-9 * (1 + best))
          << budget;
      EXPECT_LE(report["result"]["lp_bound"].get<double>(),
                report["result"]["objective"].get<double>() + 1e-12);
      EXPECT_LE(report["result"]["size_bytes"].get<int64_t>(), budget);
    }
  }
}

TEST(SearchTest, FrontierPointsAreOptimalAndMonotone) {
  for (Objective objective : {Objective::kOrthogonality, Objective::kDistortion}) {
    SearchOptions options = GroupedOptions();
    options.objective = objective;
    options.beta = 5.0;
    const nlohmann::json report = Search(options);
    ASSERT_FALSE(report.is_null());
    const nlohmann::json& frontier = report["frontier"];
    ASSERT_GE(frontier.size(), 20u);
    // The smallest reachable size (free layers at 2 bits) to every layer at 8 bits.
    EXPECT_EQ(frontier.front()["size_bytes"], 6560);
    EXPECT_EQ(frontier.back()["size_bytes"], 7832);
    const bool distortion = objective == Objective::kDistortion;
    for (size_t k = 0; k < frontier.size(); ++k) {
      const nlohmann::json& point = frontier[k];
      const int64_t budget = point["size_budget_bytes"];
      EXPECT_LE(point["size_bytes"].get<int64_t>(), budget);
      ASSERT_EQ(point["bits"].size(), report["layers"].size());
      const double best = distortion ? ExhaustiveDistortion(report, options.weight_bits, budget)
                                     : ExhaustiveOptimum(report, options.weight_bits, budget);
      EXPECT_NEAR(point["objective"].get<double>(), best, 1e-9 * (1 + std::fabs(best))) << k;
      if (k > 0) {
        const double previous = frontier[k - 1]["objective"].get<double>();
        if (distortion) {
          EXPECT_LE(point["objective"].get<double>(), previous + 1e-12) << k;
          EXPECT_TRUE(point.contains("distortion"));
        } else {
          EXPECT_GE(point["objective"].get<double>(), previous - 1e-12) << k;
        }
        EXPECT_GT(budget, frontier[k - 1]["size_budget_bytes"].get<int64_t>());
      }
    }
  }
}

TEST(SearchTest, BopsBudgetCandidateSetAndSampleCount) {
  SearchOptions options;
  options.model_path = ModelFile("sequence.pt");
  options.calib_path = ModelFile("calib_sequence.npz");
  options.size_budget_bytes.reset();
  options.bops_budget = 19200 * 8 * 6;  // MACs total 19200: every layer at 6 bits on average.
  options.weight_bits = {8, 4};
  options.pin_first_last_bits = 0;
  const nlohmann::json report = Search(options);
  ASSERT_FALSE(report.is_null());
  EXPECT_EQ(report["search"]["samples"], 20);  // All 20 (fewer than search_samples = 32).
  EXPECT_EQ(report["search"]["weight_bits"], (std::vector<int>{4, 8}));
  EXPECT_LE(report["result"]["bops"].get<int64_t>(), *options.bops_budget);
  for (const nlohmann::json& layer : report["layers"]) {
    EXPECT_TRUE(layer["bits"] == 4 || layer["bits"] == 8) << layer;
    EXPECT_FALSE(layer["pinned"]);
  }
  EXPECT_TRUE(report["budget"]["size_bytes"].is_null());
  EXPECT_EQ(report["layers"][1]["name"], "shared");
  EXPECT_EQ(report["layers"][1]["calls"], 2);
}

TEST(SearchTest, ProgressCoversTheStagesInOrder) {
  std::vector<Stage> stages;
  double last_fraction = -1;
  absl::StatusOr<SearchResult> result =
      RunSearch(GroupedOptions(), [&](Stage stage, double fraction, const std::string& message) {
        EXPECT_GE(fraction, 0.0);
        EXPECT_LE(fraction, 1.0);
        EXPECT_FALSE(message.empty());
        if (stages.empty() || stages.back() != stage) {
          stages.push_back(stage);
        } else {
          EXPECT_GE(fraction, last_fraction) << message;
        }
        last_fraction = fraction;
        return true;
      });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(stages,
            (std::vector<Stage>{Stage::kAnalyzing, Stage::kOrthogonality, Stage::kSolving}));
}

TEST(SearchTest, CancelsInEveryStage) {
  for (Stage cancel_at : {Stage::kAnalyzing, Stage::kOrthogonality, Stage::kSolving}) {
    int calls_after_cancel = 0;
    bool cancelled = false;
    absl::StatusOr<SearchResult> result =
        RunSearch(GroupedOptions(), [&](Stage stage, double, const std::string&) {
          if (cancelled) ++calls_after_cancel;
          if (stage == cancel_at) cancelled = true;
          return !cancelled;
        });
    EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(ReasonOf(result.status()), reason::kCancelled);
    EXPECT_EQ(calls_after_cancel, 0);
  }
}

struct BadCase {
  const char* model;
  const char* calibration;
  const char* reason;
  const char* fragment;
  int search_samples = 16;
  int64_t size_budget = 1 << 30;
};

class SearchBadInputTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(SearchBadInputTest, FailsWithItsReason) {
  const BadCase& c = GetParam();
  SearchOptions options;
  options.model_path = ModelFile(c.model);
  options.calib_path = ModelFile(c.calibration);
  options.search_samples = c.search_samples;
  options.size_budget_bytes = c.size_budget;
  absl::StatusOr<SearchResult> result = RunSearch(options, nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(ReasonOf(result.status()), c.reason) << result.status();
  EXPECT_NE(result.status().message().find(c.fragment), absl::string_view::npos)
      << result.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Reasons, SearchBadInputTest,
    ::testing::Values(
        BadCase{"empty.pt", "calib_images.pt", "INVALID_MODEL", "an empty file"},
        BadCase{"state_dict.pt", "calib_images.pt", "INVALID_MODEL", "state_dict"},
        BadCase{"random.bin", "calib_images.pt", "INVALID_MODEL", "unrecognised binary"},
        BadCase{"reads_file.pt", "calib_vectors.pt", "UNSUPPORTED_OP", "from_file"},
        BadCase{"custom_op.pt", "calib_vectors.pt", "UNSUPPORTED_OP", "ompqtest::double_it"},
        BadCase{"no_layers.pt", "calib_images.pt", "NO_QUANTIZABLE_LAYERS", "no Conv1d"},
        BadCase{"resnet18.pt", "calib_one_channel.pt", "INPUT_MISMATCH",
                "inputs of shape [16, 1, 64, 64]"},
        BadCase{"resnet18.pt", "calib_one_channel.pt", "INPUT_MISMATCH",
                "to have 3 channels, but got 1 channels instead"},
        BadCase{"resnet18.pt", "calib_nan.pt", "NON_FINITE_INPUT", "1 NaN or Inf values"},
        BadCase{"resnet18.pt", "calib_one_sample.pt", "INVALID_INPUT", "holds 1 sample(s)"},
        BadCase{"resnet18.pt", "calib_images.pt", "INVALID_INPUT", "at least 2 samples", 1},
        BadCase{"resnet18.pt", "state_dict.pt", "INVALID_INPUT", "cannot read torch.save() file"},
        BadCase{"grouped.pt", "calib_grouped.pt", "INFEASIBLE_BUDGET", "", 16, 1000}),
    [](const ::testing::TestParamInfo<BadCase>& info) {
      return std::string(info.param.reason) + "_" + std::to_string(info.index);
    });

TEST(SearchTest, RefusesBadOptions) {
  SearchOptions options = GroupedOptions();
  options.size_budget_bytes.reset();
  EXPECT_EQ(RunSearch(options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  options = GroupedOptions();
  options.weight_bits = {2, 17};
  EXPECT_EQ(RunSearch(options, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  options = GroupedOptions();
  options.pins = {{"(unclosed", 4}};
  absl::Status status = RunSearch(options, nullptr).status();
  EXPECT_NE(status.message().find("not a valid regex"), absl::string_view::npos) << status;
}

TEST(SearchTest, WritesTheArtifacts) {
  const nlohmann::json report = Search(GroupedOptions());
  ASSERT_FALSE(report.is_null());
  const std::string dir = (std::filesystem::path(::testing::TempDir()) / "ompq-artifacts").string();
  std::filesystem::remove_all(dir);
  absl::StatusOr<std::vector<std::string>> files = WriteArtifacts(report, dir);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files, (std::vector<std::string>{"report.json", "bit_config.json", "report.html"}));

  std::ifstream report_in(dir + "/report.json");
  EXPECT_EQ(nlohmann::json::parse(report_in), report);
  std::ifstream config_in(dir + "/bit_config.json");
  const nlohmann::ordered_json config = nlohmann::ordered_json::parse(config_in);
  ASSERT_EQ(config.size(), report["layers"].size());
  size_t i = 0;
  for (const auto& [name, bits] : config.items()) {
    EXPECT_EQ(name, report["layers"][i]["name"].get<std::string>());  // Execution order.
    EXPECT_EQ(bits.get<int>(), report["layers"][i]["bits"].get<int>());
    ++i;
  }
  EXPECT_GT(std::filesystem::file_size(dir + "/report.html"), 0u);
  EXPECT_FALSE(WriteArtifacts(nlohmann::json::object(), dir).ok());
}

}  // namespace
}  // namespace ompq::engine
