// Tests of how ompqctl prints jobs (client/job_output.h, progress_display.h,
// summary_table.h).
#include "client/job_output.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "absl/time/clock.h"
#include "client/progress_display.h"
#include "client/summary_table.h"
#include "nlohmann/json.hpp"

namespace ompq::client {
namespace {

TEST(JobToJson, DefaultsArePresent) {
  v1::Job job;
  job.set_name("jobs/abc");
  job.set_state(v1::QUEUED);
  nlohmann::json doc = nlohmann::json::parse(JobToJson(job));
  EXPECT_EQ(doc["name"], "jobs/abc");
  EXPECT_EQ(doc["state"], "QUEUED");
  // Zero values must still appear: CI scripts read them unconditionally.
  EXPECT_EQ(doc["stage"], "STAGE_UNSPECIFIED");
  EXPECT_EQ(doc["progress"], 0);
  EXPECT_EQ(doc["attempt"], 0);
  EXPECT_FALSE(doc.contains("error"));
}

TEST(JobToJson, FailureCarriesError) {
  v1::Job job;
  job.set_name("jobs/x");
  job.set_state(v1::FAILED);
  job.mutable_error()->set_code("INVALID_ARGUMENT");
  job.mutable_error()->set_reason("INVALID_MODEL");
  job.mutable_error()->set_message("not TorchScript");
  nlohmann::json doc = nlohmann::json::parse(JobToJson(job));
  EXPECT_EQ(doc["error"]["reason"], "INVALID_MODEL");
  EXPECT_EQ(doc["error"]["code"], "INVALID_ARGUMENT");
  EXPECT_EQ(doc["error"]["message"], "not TorchScript");
}

TEST(JobListToJson, IsOneDocument) {
  v1::Job a, b;
  a.set_name("jobs/a");
  b.set_name("jobs/b");
  nlohmann::json doc = nlohmann::json::parse(JobListToJson({a, b}));
  ASSERT_EQ(doc["jobs"].size(), 2u);
  EXPECT_EQ(doc["jobs"][1]["name"], "jobs/b");
  EXPECT_EQ(nlohmann::json::parse(JobListToJson({}))["jobs"].size(), 0u);
}

v1::Job RunningJob() {
  v1::Job job;
  job.set_name("jobs/r");
  job.set_state(v1::RUNNING);
  job.set_stage(v1::ORTHOGONALITY);
  job.set_progress(42.4);
  job.set_message("layer 3/9");
  return job;
}

TEST(FormatProgressLine, StateStagePercentElapsedMessage) {
  EXPECT_EQ(FormatProgressLine(RunningJob(), absl::Seconds(7)),
            "[RUNNING] ORTHOGONALITY   42%  00:07  layer 3/9");
  v1::Job queued;
  queued.set_state(v1::QUEUED);
  EXPECT_EQ(FormatProgressLine(queued, absl::Seconds(65)), "[QUEUED]    0%  01:05");
  EXPECT_EQ(FormatElapsed(absl::Seconds(3723)), "1:02:03");
}

TEST(FormatProgressLine, TimeLeftInStageWhileRunning) {
  v1::Job job = RunningJob();
  job.set_stage(v1::FINETUNING);
  job.set_eta_seconds(95.4);
  EXPECT_EQ(FormatProgressLine(job, absl::Seconds(7)),
            "[RUNNING] FINETUNING   42%  00:07  ~01:35 left in stage  layer 3/9");
  job.set_state(v1::SUCCEEDED);  // A finished job has nothing left.
  EXPECT_EQ(FormatProgressLine(job, absl::Seconds(7)).find("left"), std::string::npos);
}

TEST(ProgressDisplay, PlainModePrintsOnlyChanges) {
  std::ostringstream out;
  ProgressDisplay display(out, /*interactive=*/false);
  v1::Job job = RunningJob();
  display.Update(job, absl::Now());
  job.set_progress(50);  // Same state and stage: no new line.
  display.Update(job, absl::Now());
  job.set_stage(v1::SOLVING);
  display.Update(job, absl::Now());
  display.Finish();
  std::string text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_NE(text.find("SOLVING"), std::string::npos);
}

TEST(ProgressDisplay, InteractiveModeRedrawsOneLine) {
  std::ostringstream out;
  ProgressDisplay display(out, /*interactive=*/true);
  v1::Job job = RunningJob();
  display.Update(job, absl::Now());
  job.set_message("");  // Shorter line: the rest of the old one must be blanked.
  display.Update(job, absl::Now());
  display.Finish();
  std::string text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 2);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
  size_t first = text.find('\r');
  size_t second = text.find('\r', first + 1);
  size_t end = text.find('\n');
  EXPECT_EQ(text.substr(second).find("layer"), std::string::npos);
  // The second line is padded to the first one's width.
  EXPECT_EQ(end - second, second - first);
}

TEST(FormatSummary, TableAndTotals) {
  v1::Job job;
  job.set_name("jobs/s");
  job.set_state(v1::SUCCEEDED);
  job.mutable_spec()->set_size_budget_bytes(2000);
  v1::JobResult* result = job.mutable_result();
  result->set_size_bytes(1500);
  result->set_fp32_size_bytes(6000);
  result->set_bops(1000000);
  result->set_objective(9.5);
  result->set_lp_bound(10);
  v1::LayerResult* layer = result->add_layers();
  layer->set_name("features.0.conv");
  layer->set_kind("conv2d");
  layer->set_params(432);
  layer->set_bits(8);
  layer->set_pinned(true);
  layer->set_importance(1);
  std::string text = FormatSummary(job, "results", {"report.json", "report.html"});
  EXPECT_NE(text.find("features.0.conv"), std::string::npos);
  EXPECT_NE(text.find("8*"), std::string::npos);
  EXPECT_NE(text.find("75.00%"), std::string::npos);  // 1500 of 2000.
  EXPECT_NE(text.find("4.0x smaller"), std::string::npos);
  EXPECT_NE(text.find("within 5.000%"), std::string::npos);
  EXPECT_NE(text.find("results/ report.json, report.html"), std::string::npos);
  EXPECT_EQ(text.find("Accuracy"), std::string::npos);  // No eval data given.

  // The distortion objective is minimised: its LP bound lies below it.
  job.mutable_spec()->set_objective(v1::OBJECTIVE_DISTORTION);
  result->set_objective(0.05);
  result->set_lp_bound(0.04);
  text = FormatSummary(job, "results", {"report.json"});
  EXPECT_NE(text.find("weighted distortion, LP bound 0.04, within 20.000%"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace ompq::client
