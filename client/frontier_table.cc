#include "client/frontier_table.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/units.h"

namespace ompq::client {

absl::StatusOr<std::string> FormatFrontier(const nlohmann::json& report) {
  const nlohmann::json frontier = report.value("frontier", nlohmann::json::array());
  if (!frontier.is_array() || frontier.empty()) {
    return absl::InvalidArgumentError("the job's report.json has no frontier");
  }
  try {
    std::vector<int64_t> params;
    std::vector<int> chosen_bits;
    for (const nlohmann::json& layer : report.at("layers")) {
      params.push_back(layer.at("params"));
      chosen_bits.push_back(layer.at("bits"));
    }
    int64_t total_params = 0;
    for (int64_t p : params) total_params += p;
    struct Row {
      int64_t size = 0;
      int64_t bops = 0;
      double objective = 0;
      double average_bits = 0;
      std::string distortion = "-";
      std::string top1 = "-";
      bool chosen = false;
    };
    auto average = [&](const std::vector<int>& bits) {
      double weighted = 0;
      for (size_t i = 0; i < bits.size() && i < params.size(); ++i) {
        weighted += static_cast<double>(params[i]) * bits[i];
      }
      return total_params > 0 ? weighted / static_cast<double>(total_params) : 0.0;
    };
    std::vector<Row> rows;
    for (const nlohmann::json& point : frontier) {
      Row row;
      row.size = point.at("size_bytes").get<int64_t>();
      row.bops = point.at("bops").get<int64_t>();
      row.objective = point.at("objective").get<double>();
      row.average_bits = average(point.at("bits").get<std::vector<int>>());
      if (point.contains("distortion")) {
        row.distortion = absl::StrFormat("%.4g", point["distortion"].get<double>());
      }
      if (point.contains("top1_nearest")) {
        row.top1 = absl::StrFormat("%.2f%%", 100.0 * point["top1_nearest"].get<double>());
      }
      rows.push_back(std::move(row));
    }
    // The job's own allocation, at its budget, among the grid's points.
    const nlohmann::json& result = report.at("result");
    Row chosen;
    chosen.size = result.at("size_bytes").get<int64_t>();
    chosen.bops = result.at("bops").get<int64_t>();
    chosen.objective = result.at("objective").get<double>();
    chosen.average_bits = average(chosen_bits);
    chosen.chosen = true;
    rows.insert(std::upper_bound(rows.begin(), rows.end(), chosen,
                                 [](const Row& a, const Row& b) { return a.size < b.size; }),
                chosen);
    const std::string objective =
        report.value("search", nlohmann::json::object()).value("objective", "orthogonality");
    std::string text = absl::StrFormat(
        "%12s  %8s  %10s  %14s  %12s  %7s\n", "SIZE", "AVG BITS", "BOPS",
        objective == "distortion" ? "W. DISTORTION" : "OBJECTIVE", "DISTORTION", "TOP-1");
    for (const Row& row : rows) {
      absl::StrAppend(&text, absl::StrFormat("%12s  %8.2f  %10s  %14.6g  %12s  %7s%s\n",
                                             FormatBytes(row.size), row.average_bits,
                                             FormatCount(row.bops), row.objective, row.distortion,
                                             row.top1, row.chosen ? "  <- this job" : ""));
    }
    return text;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed report.json frontier: ", e.what()));
  }
}

}  // namespace ompq::client
