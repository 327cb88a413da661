// ompqctl frontier's table from a report.json document.
#include "client/frontier_table.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_split.h"

namespace ompq::client {
namespace {

nlohmann::json Report() {
  return nlohmann::json::parse(R"({
    "search": {"objective": "distortion"},
    "layers": [{"params": 100, "bits": 4}, {"params": 300, "bits": 2}],
    "result": {"size_bytes": 150, "bops": 2000, "objective": 0.5},
    "frontier": [
      {"size_bytes": 100, "bops": 1000, "objective": 0.9, "bits": [2, 2], "distortion": 0.3},
      {"size_bytes": 200, "bops": 3000, "objective": 0.2, "bits": [4, 4], "distortion": 0.05,
       "top1_nearest": 0.8512}]})");
}

TEST(FormatFrontier, OneRowPerPointWithTheJobInItsPlace) {
  absl::StatusOr<std::string> table = FormatFrontier(Report());
  ASSERT_TRUE(table.ok()) << table.status();
  std::vector<std::string> lines = absl::StrSplit(*table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << *table;
  EXPECT_NE(lines[0].find("W. DISTORTION"), std::string::npos);
  EXPECT_NE(lines[1].find("2.00"), std::string::npos) << lines[1];  // Average bits.
  EXPECT_NE(lines[1].find("0.3"), std::string::npos) << lines[1];
  // The job (size 150, bits 4 and 2: average 2.5) sits between the two points.
  EXPECT_NE(lines[2].find("2.50"), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("<- this job"), std::string::npos) << lines[2];
  EXPECT_NE(lines[3].find("85.12%"), std::string::npos) << lines[3];
  EXPECT_EQ(lines[3].find("<- this job"), std::string::npos);
}

TEST(FormatFrontier, RefusesAReportWithoutFrontier) {
  nlohmann::json report = Report();
  report.erase("frontier");
  EXPECT_EQ(FormatFrontier(report).status().code(), absl::StatusCode::kInvalidArgument);
  report = Report();
  report["frontier"][0].erase("bops");
  EXPECT_EQ(FormatFrontier(report).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ompq::client
