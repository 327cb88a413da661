// Tests of report.html: self-contained, escaped, and showing what report.json holds.
#include "workers/engine/report_html.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>

namespace ompq::engine {
namespace {

using nlohmann::json;

// A MobileNetV2-shaped report (53 layers) with plausible numbers; `evil` names one layer
// with markup, as a user's model could.
json SampleReport(bool with_accuracy, const std::string& evil = "") {
  json layers = json::array();
  std::vector<std::string> names = {"features.0.0", "features.1.conv.0.0", "features.1.conv.1"};
  for (int block = 2; block <= 17; ++block) {
    for (const char* part : {"conv.0.0", "conv.1.0", "conv.2"}) {
      names.push_back("features." + std::to_string(block) + "." + part);
    }
  }
  names.push_back("features.18.0");
  names.push_back("classifier.1");
  if (!evil.empty()) names[5] = evil;
  const int n = static_cast<int>(names.size());
  json orm = json::array();
  for (int i = 0; i < n; ++i) {
    json row = json::array();
    for (int j = 0; j < n; ++j) {
      const double d = std::abs(i - j);
      row.push_back(i == j ? 1.0
                           : std::exp(-d / 9.0) * (0.55 + 0.4 * std::fabs(std::sin(i * j + 1.0))));
    }
    orm.push_back(row);
  }
  for (int i = 0; i < n; ++i) {
    const bool pinned = i == 0 || i == n - 1;
    const double importance = 0.35 + 0.65 * std::fabs(std::cos(i * 0.37));
    const bool depthwise = names[i].find("conv.1.0") != std::string::npos;
    layers.push_back(
        {{"name", names[i]},
         {"kind", i == n - 1 ? "linear" : "conv2d"},
         {"weight_shape", i == n - 1 ? json{1000, 1280} : json{96, depthwise ? 1 : 24, 3, 3}},
         {"params", 864 + 997 * i},
         {"macs", 2000000 + 131071 * i},
         {"bits", pinned ? 8 : 2 + static_cast<int>(std::lround(importance * 6)) % 7},
         {"act_bits", 8},
         {"pinned", pinned},
         {"gamma", 10 + 5 * std::sin(i)},
         {"importance", importance}});
  }
  json report = {
      {"job", "jobs/mobilenet-v2-1p5mib"},
      {"model",
       {{"digest", "sha256:3f5e2b9c1d7a4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"},
        {"parameters", 3504872},
        {"fp32_size_bytes", 14019488}}},
      {"search",
       {{"beta", 1e-9},
        {"samples", 32},
        {"weight_bits", {2, 3, 4, 5, 6, 7, 8}},
        {"act_bits", 8},
        {"seed", 0}}},
      {"layers", layers},
      {"orm", orm},
      {"budget", {{"size_bytes", 1572864}, {"bops", nullptr}}},
      {"result",
       {{"size_bytes", 1571990},
        {"bops", 72543210987LL},
        {"objective", 251.42},
        {"lp_bound", 251.9}}},
      {"timings_seconds",
       {{"analyze", 0.41},
        {"orthogonality", 1.22},
        {"solve", 0.004},
        {"finetune", 312.5},
        {"evaluate", 20.3},
        {"export", 1.1},
        {"total", 335.6}}}};
  if (with_accuracy) {
    report["accuracy"] = {
        {"fp32", 0.9231}, {"quantized_before_finetune", 0.8512}, {"quantized", 0.9105}};
  }
  return report;
}

TEST(ReportHtml, SelfContainedWithChartsAndEscapedNames) {
  const std::string html = RenderReportHtml(SampleReport(true, "evil.<script>alert(1)</script>"));
  if (const char* out = std::getenv("OMPQ_SAMPLE_REPORT_HTML")) std::ofstream(out) << html;
  // Nothing fetched from the network: no external src/href, no scripts at all.
  EXPECT_FALSE(std::regex_search(
      html, std::regex(R"((src|href)\s*=\s*["']?\s*(https?:)?//)", std::regex::icase)));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  // Heatmap: one cell per ORM entry.
  size_t cells = 0;
  for (size_t pos = 0; (pos = html.find(" \u00d7 ", pos)) != std::string::npos; ++pos) ++cells;
  EXPECT_GE(cells, 53u * 53u);
  EXPECT_NE(html.find("jobs/mobilenet-v2-1p5mib"), std::string::npos);
  EXPECT_NE(html.find("sha256:3f5e2b9c1d7a"), std::string::npos);
  EXPECT_NE(html.find("classifier.1"), std::string::npos);
  EXPECT_NE(html.find("Accuracy"), std::string::npos);
  EXPECT_NE(html.find("91.05%"), std::string::npos);
  EXPECT_NE(html.find("99.9% of the 1.50 MiB budget"), std::string::npos);
  EXPECT_NE(html.find("8.9\u00d7"), std::string::npos);  // 14019488 / 1571990.
}

TEST(ReportHtml, PlotsTheFrontierWithMeasuredTopOne) {
  json report = SampleReport(false);
  EXPECT_EQ(RenderReportHtml(report).find("Size against quality"), std::string::npos);
  const int n = static_cast<int>(report["layers"].size());
  json frontier = json::array();
  for (int k = 0; k < 5; ++k) {
    json point = {{"size_bytes", 1000000 + 200000 * k},
                  {"bops", 1000 * (k + 1)},
                  {"objective", 0.5 / (k + 1)},
                  {"distortion", 0.4 / std::pow(4.0, k)},
                  {"bits", std::vector<int>(n, 2 + k)}};
    if (k % 2 == 0) point["top1_nearest"] = 0.80 + 0.02 * k;
    frontier.push_back(point);
  }
  report["frontier"] = frontier;
  const std::string html = RenderReportHtml(report);
  EXPECT_NE(html.find("Size against quality"), std::string::npos);
  EXPECT_NE(html.find("predicted distortion (log, better up)"), std::string::npos);
  EXPECT_NE(html.find("top-1 88.00%"), std::string::npos);  // The measured point k = 4.
  EXPECT_EQ(html.find("top-1 82.00%"), std::string::npos);  // k = 1 was not measured.
  EXPECT_NE(html.find("this job"), std::string::npos);
}

TEST(ReportHtml, ShowsHowTheWeightsWereFinetuned) {
  json ptq = SampleReport(true);
  ptq["quantization"] = {
      {"finetune", "ptq"},
      {"act_bits", 4},
      {"calib_samples", 256},
      {"iters", 200},
      {"seed", 0},
      {"units",
       {{{"layers", {"features.1.conv.0.0", "features.1.conv.2"}},
         {"method", "brecq"},
         {"mse_nearest", 0.02},
         {"mse", 0.015},
         {"samples", 256}},
        {{"layers", {"classifier.1"}}, {"method", "adaround"}, {"mse_nearest", 0.5},
         {"mse", nullptr}, {"samples", 256}}}}};
  std::string html = RenderReportHtml(ptq);
  EXPECT_NE(html.find("<h2>Quantization</h2>"), std::string::npos);
  EXPECT_NE(html.find("features.1.conv.0.0, features.1.conv.2"), std::string::npos);
  EXPECT_NE(html.find(">brecq<"), std::string::npos);
  EXPECT_NE(html.find("-25.0%"), std::string::npos);  // (0.015 - 0.02) / 0.02.
  EXPECT_NE(html.find(">200<"), std::string::npos);   // iterations, shown for PTQ.

  json qat = SampleReport(true);
  qat["quantization"] = {{"finetune", "qat"},
                         {"iters", 0},
                         {"qat",
                          {{"epochs", 1},
                           {"lr", 0.001},
                           {"train_loss_after", 0.6757530727},
                           {"optimizer", "adam<>"}}}};
  html = RenderReportHtml(qat);
  EXPECT_NE(html.find("Quantization-aware training"), std::string::npos);
  EXPECT_NE(html.find("train loss after</th><td>0.6758<"), std::string::npos);
  EXPECT_NE(html.find("adam&lt;&gt;"), std::string::npos);
  EXPECT_EQ(html.find("reconstruction iterations"), std::string::npos);  // Not for QAT.
  EXPECT_EQ(html.find("Reconstruction units"), std::string::npos);
}

TEST(ReportHtml, OptionalFieldsMayBeMissingOrNull) {
  json report = SampleReport(false);
  report["budget"] = {{"size_bytes", nullptr}, {"bops", 80000000000LL}};
  report.erase("timings_seconds");
  const std::string html = RenderReportHtml(report);
  EXPECT_EQ(html.find("Top-1"), std::string::npos);  // No accuracy section without data.
  EXPECT_EQ(html.find("<h2>Quantization</h2>"), std::string::npos);
  EXPECT_NE(html.find("no size budget"), std::string::npos);
  EXPECT_NE(html.find("of the 80 G budget"), std::string::npos);
  // Even an empty document renders a page rather than throwing.
  EXPECT_NE(RenderReportHtml(json::object()).find("</html>"), std::string::npos);
  EXPECT_NE(RenderReportHtml(json::array()).find("</html>"), std::string::npos);
}

}  // namespace
}  // namespace ompq::engine
