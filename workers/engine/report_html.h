// Renders report.html: a self-contained page (inline CSS and SVG, no network) for people.
#ifndef OMPQ_WORKERS_ENGINE_REPORT_HTML_H_
#define OMPQ_WORKERS_ENGINE_REPORT_HTML_H_

#include <string>

#include "nlohmann/json.hpp"

namespace ompq::engine {

/// Builds the page from a report.json document (PRODUCT.md schema): ORM heatmap, per-layer
/// bits and importance chart, budget use, accuracy when present, timings.
std::string RenderReportHtml(const nlohmann::json& report);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_REPORT_HTML_H_
