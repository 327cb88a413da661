// Shared by quantize_test and qat_test: the small Fashion-MNIST CNN and data that
// tests/models/make_ptq_inputs.py writes into OMPQ_PTQ_INPUTS_DIR, an output folder per
// test, and the search whose report those tests quantize.
#ifndef OMPQ_TESTS_ENGINE_PTQ_FIXTURE_H_
#define OMPQ_TESTS_ENGINE_PTQ_FIXTURE_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "nlohmann/json.hpp"
#include "workers/engine/quantize.h"
#include "workers/engine/search.h"

namespace ompq::engine {

/// A file written by make_ptq_inputs.py (model.pt, calib.pt, eval.pt, train.pt, ...).
inline std::string Input(const std::string& name) {
  return std::string(OMPQ_PTQ_INPUTS_DIR) + "/" + name;
}

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class PtqFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
    out_ = std::filesystem::temp_directory_path() /
           ("ompq-" + std::string(test->test_suite_name()) + "-" + std::to_string(::getpid()) +
            "-" + test->name());
    std::filesystem::remove_all(out_);
  }
  void TearDown() override { std::filesystem::remove_all(out_); }

  // Quantization of the fixture's model and data (eval included) into out_: 256
  // calibration samples, 200 PTQ steps, seed 7.
  QuantizeOptions FixtureQuantizeOptions(FinetuneMode finetune) const {
    QuantizeOptions options;
    options.model_path = Input("model.pt");
    options.calib_path = Input("calib.pt");
    options.eval_path = Input("eval.pt");
    options.finetune = finetune;
    options.calib_samples = 256;
    options.iters = 200;
    options.seed = 7;
    options.out_dir = out_.string();
    return options;
  }

  // The search's options at a 150 KiB size budget.
  static SearchOptions FixtureSearchOptions() {
    SearchOptions search;
    search.model_path = Input("model.pt");
    search.calib_path = Input("calib.pt");
    search.size_budget_bytes = 150 * 1024;
    return search;
  }

  // The search's report at a 150 KiB size budget.
  static nlohmann::json Search() {
    absl::StatusOr<SearchResult> result = RunSearch(FixtureSearchOptions(), nullptr);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->report : nlohmann::json();
  }

  std::filesystem::path out_;
};

}  // namespace ompq::engine

#endif  // OMPQ_TESTS_ENGINE_PTQ_FIXTURE_H_
