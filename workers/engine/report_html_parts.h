// The pieces report.html is built from: escaping, tolerant field access into report.json,
// number formats and colour scales (report_html_parts.cc); the charts (report_html_charts.cc).
#ifndef OMPQ_WORKERS_ENGINE_REPORT_HTML_PARTS_H_
#define OMPQ_WORKERS_ENGINE_REPORT_HTML_PARTS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace ompq::engine::html {

std::string Escape(const std::string& s);

// Field access that tolerates absence, null and wrong types.
const nlohmann::json* Get(const nlohmann::json& j, const char* key);
bool HasNumber(const nlohmann::json& j, const char* key);
double Num(const nlohmann::json& j, const char* key, double fallback = 0);
std::string Str(const nlohmann::json& j, const char* key, const std::string& fallback = "");
const nlohmann::json& Obj(const nlohmann::json& j, const char* key);

std::string Thousands(double value);  // 1234567 -> "1,234,567".
std::string Bytes(double bytes);      // KiB / MiB.
std::string Si(double value);         // 1234567 -> "1.23 M" (MACs, BOPs, parameters).
std::string Seconds(double s);
std::string Truncate(const std::string& s, size_t n);  // Keeps the end: "…conv1".

struct Rgb {
  double r, g, b;
};
std::string Hex(Rgb c);
/// Piecewise-linear colour scale through `stops`, t in [0, 1].
std::string Scale(const std::vector<Rgb>& stops, double t);
extern const std::vector<Rgb> kHeat;  // Heatmap: dark blue orthogonal, yellow redundant.
extern const std::vector<Rgb> kBits;  // Bits: few warm, many cool.
std::string BitsColor(int bits, int lo, int hi);

/// One row of report.json `layers`, as the page shows it.
struct Layer {
  std::string name, kind, shape;
  double params = 0, macs = 0, gamma = 0, importance = 0;
  int bits = 0, act_bits = 0;
  bool pinned = false;
};
/// The report's layers, missing fields as zero.
std::vector<Layer> ReadLayers(const nlohmann::json& report);

/// Bars of bits per layer, importance as a line on a second axis, pinned layers marked.
std::string BitsChart(const std::vector<Layer>& layers, int min_bits, int max_bits);

/// report.json `frontier` as an SVG: size against the predicted distortion (or the
/// objective) and, where measured, top-1; the job's own allocation marked. Empty when the
/// report has no frontier.
std::string FrontierChart(const nlohmann::json& report);

}  // namespace ompq::engine::html

#endif  // OMPQ_WORKERS_ENGINE_REPORT_HTML_PARTS_H_
