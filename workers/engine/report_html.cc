// report.html: one self-contained page (inline CSS, SVG drawn here; no scripts, fonts or
// network), so it opens offline and can be attached to a ticket as is.
//
// The renderer reads the report.json document defensively: a missing or null field is
// shown as "n/a" rather than throwing, since the page is a courtesy next to the JSON.
#include "workers/engine/report_html.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "workers/engine/report_html_parts.h"

namespace ompq::engine {
namespace {

using nlohmann::json;
using namespace html;  // NOLINT: the page's own helpers.

constexpr char kCss[] = R"css(
:root{--ink:#1d2433;--muted:#5d6678;--line:#e3e7ef;--bg:#f4f6fa;--card:#fff;--accent:#346eb4}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:linear-gradient(120deg,#1f3b63,#346eb4);color:#fff;padding:28px 40px 24px}
header h1{margin:0 0 4px;font-size:26px;font-weight:650;letter-spacing:.2px}
header .sub{opacity:.85;font-size:14px}
header .meta{margin-top:12px;display:flex;flex-wrap:wrap;gap:8px}
.pill{background:rgba(255,255,255,.14);border:1px solid rgba(255,255,255,.25);border-radius:999px;
 padding:2px 10px;font-size:12.5px;white-space:nowrap}
main{max-width:1320px;margin:0 auto;padding:24px 40px 48px}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:20px 24px;
 margin-bottom:22px;box-shadow:0 1px 2px rgba(20,30,50,.04)}
h2{font-size:17px;margin:0 0 4px}
h3{font-size:14px;margin:18px 0 4px}
.note{color:var(--muted);font-size:13px;margin:0 0 14px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(185px,1fr));gap:16px;margin-bottom:22px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 18px}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.6px}
.card .value{font-size:26px;font-weight:650;margin:4px 0 2px;font-variant-numeric:tabular-nums}
.card .detail{color:var(--muted);font-size:12.5px}
.meter{height:8px;border-radius:4px;background:#e8ecf3;margin-top:10px;overflow:hidden}
.meter>div{height:100%;border-radius:4px}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th{text-align:left;color:var(--muted);font-weight:600;font-size:12px;border-bottom:2px solid var(--line);
 padding:6px 8px;position:sticky;top:0;background:#fff}
td{border-bottom:1px solid var(--line);padding:5px 8px;white-space:nowrap}
td.num,th.num{text-align:right}
td.name{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:12.5px;
 white-space:normal;word-break:break-all}
tr:hover td{background:#f7f9fc}
.chip{display:inline-block;min-width:28px;text-align:center;border-radius:6px;color:#fff;
 font-weight:650;padding:1px 6px}
.pin{display:inline-block;border-radius:6px;background:#eef1f6;color:#3b4254;font-size:11.5px;padding:1px 7px}
.ibar{display:inline-block;height:7px;border-radius:3px;background:#8b6bd1;vertical-align:middle;margin-right:6px}
.scroll{overflow-x:auto}
.tablewrap{max-height:640px;overflow:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
footer{color:var(--muted);font-size:12px;text-align:center;padding:0 0 30px}
)css";

std::string Card(const std::string& label, const std::string& value, const std::string& detail,
                 double meter = -1, const std::string& meter_color = "") {
  std::string out = absl::StrCat("<div class=\"card\"><div class=\"label\">", label,
                                 "</div><div class=\"value\">", value,
                                 "</div><div class=\"detail\">", detail, "</div>");
  if (meter >= 0) {
    absl::StrAppendFormat(&out,
                          "<div class=\"meter\"><div style=\"width:%.1f%%;background:%s\"></div>"
                          "</div>",
                          std::clamp(meter, 0.0, 1.0) * 100, meter_color);
  }
  return out + "</div>";
}

// Green inside the budget (using nearly all of it is the point), red if ever over.
std::string UseColor(double fraction) { return fraction > 1.0 ? "#d64541" : "#2e9d6e"; }

std::string KeyFigures(const json& report, const std::vector<Layer>& layers) {
  const json& model = Obj(report, "model");
  const json& budget = Obj(report, "budget");
  const json& result = Obj(report, "result");
  std::string out = "<div class=\"cards\">";

  const double size = Num(result, "size_bytes");
  const double fp32 = Num(model, "fp32_size_bytes");
  if (HasNumber(budget, "size_bytes")) {
    const double b = Num(budget, "size_bytes");
    const double use = b > 0 ? size / b : 0;
    out += Card("Model size", Bytes(size),
                absl::StrFormat("%.1f%% of the %s budget (%s B of %s B)", use * 100, Bytes(b),
                                Thousands(size), Thousands(b)),
                use, UseColor(use));
  } else {
    out += Card("Model size", Bytes(size), absl::StrFormat("no size budget; %s B", Thousands(size)),
                fp32 > 0 ? size / fp32 : -1, "#346eb4");
  }

  const double bops = Num(result, "bops");
  if (HasNumber(budget, "bops")) {
    const double b = Num(budget, "bops");
    const double use = b > 0 ? bops / b : 0;
    out += Card("BOPs", Si(bops), absl::StrFormat("%.1f%% of the %s budget", use * 100, Si(b)), use,
                UseColor(use));
  } else {
    out += Card("BOPs", Si(bops), "no BOPs budget (per input sample)");
  }

  out += Card(
      "Compression", fp32 > 0 && size > 0 ? absl::StrFormat("%.1f\u00d7", fp32 / size) : "n/a",
      absl::StrFormat("FP32 model: %s (%s parameters)", Bytes(fp32), Si(Num(model, "parameters"))));

  double weighted = 0, total = 0;
  for (const Layer& l : layers) {
    weighted += l.params * l.bits;
    total += l.params;
  }
  out += Card("Mean weight bits", total > 0 ? absl::StrFormat("%.2f", weighted / total) : "n/a",
              absl::StrFormat("over %d quantized layers, weighted by parameters", layers.size()));

  const double objective = Num(result, "objective"), lp = Num(result, "lp_bound");
  out += Card("Objective", absl::StrFormat("%.6g", objective),
              lp > 0 ? absl::StrFormat("LP bound %.6g; the integer optimum reaches %.3f%% of it",
                                       lp, 100 * objective / lp)
                     : "LP bound n/a",
              lp > 0 ? objective / lp : -1, "#8b6bd1");

  const json& acc = Obj(report, "accuracy");
  if (HasNumber(acc, "quantized")) {
    const double q = Num(acc, "quantized"), f = Num(acc, "fp32", NAN);
    out += Card(
        "Top-1 quantized", absl::StrFormat("%.2f%%", 100 * q),
        std::isfinite(f) ? absl::StrFormat("FP32 %.2f%% (%+.2f pt)", 100 * f, 100 * (q - f)) : "",
        q, "#346eb4");
  }
  return out + "</div>";
}

std::string Heatmap(const std::vector<Layer>& layers, const json& orm) {
  const int n = static_cast<int>(layers.size());
  if (n == 0 || !orm.is_array() || static_cast<int>(orm.size()) != n) {
    return "<p class=\"note\">No orthogonality matrix in this report.</p>";
  }
  const double cell = std::clamp(760.0 / n, 4.0, 30.0);
  const double font = std::clamp(cell * 0.85, 7.0, 11.5);
  const double left = 230, top = 16, grid = cell * n;
  const double legend_x = left + grid + 30;
  const double width = legend_x + 90, height = top + grid + 60;
  const bool cell_titles = n <= 150;  // Keeps the page small for very deep models.
  std::string svg = absl::StrFormat(
      "<svg viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" role=\"img\" "
      "aria-label=\"Orthogonality matrix heatmap\">",
      width, height, width);
  svg += "<defs><linearGradient id=\"heat\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int s = 0; s <= 10; ++s) {
    absl::StrAppendFormat(&svg, "<stop offset=\"%.1f\" stop-color=\"%s\"/>", s / 10.0,
                          Scale(kHeat, s / 10.0));
  }
  svg += "</linearGradient></defs>";
  for (int i = 0; i < n; ++i) {
    const json& row = orm[i];
    for (int j = 0; j < n; ++j) {
      const double v = row.is_array() && j < static_cast<int>(row.size()) && row[j].is_number()
                           ? row[j].get<double>()
                           : NAN;
      absl::StrAppendFormat(&svg,
                            "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                            "fill=\"%s\">",
                            left + j * cell, top + i * cell, cell + 0.3, cell + 0.3,
                            std::isfinite(v) ? Scale(kHeat, v) : "#cccccc");
      if (cell_titles) {
        absl::StrAppendFormat(&svg, "<title>%s \u00d7 %s: %.4f</title>", Escape(layers[i].name),
                              Escape(layers[j].name), v);
      }
      svg += "</rect>";
    }
  }
  // Row labels need one line of text each; column numbers need room for their digits.
  const int every = std::max(1, static_cast<int>(std::ceil(font / cell)));
  const double digits = n > 100 ? 3 : n > 10 ? 2 : 1;
  const int col_every =
      std::max(1, static_cast<int>(std::ceil(font * (0.62 * digits + 0.4) / cell)));
  for (int i = 0; i < n; i += every) {
    absl::StrAppendFormat(&svg,
                          "<text x=\"%.1f\" y=\"%.2f\" font-size=\"%.1f\" fill=\"#3b4254\" "
                          "text-anchor=\"end\"><title>%s</title>%s</text>",
                          left - 6, top + (i + 0.5) * cell + font / 3, font, Escape(layers[i].name),
                          Escape(absl::StrFormat("%s  %d", Truncate(layers[i].name, 30), i)));
  }
  for (int i = 0; i < n; i += col_every) {
    absl::StrAppendFormat(&svg,
                          "<text x=\"%.2f\" y=\"%.1f\" font-size=\"%.1f\" fill=\"#3b4254\" "
                          "text-anchor=\"middle\"><title>%s</title>%d</text>",
                          left + (i + 0.5) * cell, top + grid + 14, font, Escape(layers[i].name),
                          i);
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#5d6678\" "
                        "text-anchor=\"middle\">layer (execution order)</text>",
                        left + grid / 2, top + grid + 36);
  // Colour legend.
  const double lh = std::min(grid, 300.0);
  absl::StrAppendFormat(&svg,
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"16\" height=\"%.1f\" "
                        "fill=\"url(#heat)\" rx=\"3\"/>",
                        legend_x, top, lh);
  for (int s = 0; s <= 4; ++s) {
    const double y = top + lh - lh * s / 4.0;
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#5d6678\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#3b4254\">%.2f</text>",
        legend_x + 16, legend_x + 20, y, y, legend_x + 24, y + 4, s / 4.0);
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#5d6678\">ORM</text>",
                        legend_x - 2, top + lh + 18);
  return svg + "</svg>";
}

std::string LayerTable(const std::vector<Layer>& layers, int min_bits, int max_bits) {
  std::string out =
      "<div class=\"tablewrap\"><table><thead><tr><th class=\"num\">#</th><th>layer</th>"
      "<th>kind</th><th>weight shape</th><th class=\"num\">params</th><th class=\"num\">MACs</th>"
      "<th class=\"num\">bits</th><th class=\"num\">act</th><th>importance</th>"
      "<th class=\"num\">&gamma;</th><th></th></tr></thead><tbody>";
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    absl::StrAppendFormat(
        &out,
        "<tr><td class=\"num\">%d</td><td class=\"name\">%s</td><td>%s</td><td>%s</td>"
        "<td class=\"num\">%s</td><td class=\"num\">%s</td>"
        "<td class=\"num\"><span class=\"chip\" style=\"background:%s\">%d</span></td>"
        "<td class=\"num\">%d</td>"
        "<td><span class=\"ibar\" style=\"width:%.0fpx\"></span>%.4f</td>"
        "<td class=\"num\">%.3f</td><td>%s</td></tr>",
        i, Escape(l.name), Escape(l.kind), Escape(l.shape), Thousands(l.params), Si(l.macs),
        BitsColor(l.bits, min_bits, max_bits), l.bits, l.act_bits,
        4 + 56 * std::clamp(l.importance, 0.0, 1.0), l.importance, l.gamma,
        l.pinned ? "<span class=\"pin\">pinned</span>" : "");
  }
  return out + "</tbody></table></div>";
}

std::string AccuracySection(const json& acc) {
  struct Row {
    const char* key;
    const char* label;
    const char* color;
  };
  const Row rows[] = {{"fp32", "FP32", "#7c8699"},
                      {"quantized_before_finetune", "quantized, before finetuning", "#e09a2c"},
                      {"quantized", "quantized, finetuned", "#346eb4"}};
  const double fp32 = Num(acc, "fp32", NAN);
  std::string svg =
      "<svg viewBox=\"0 0 900 130\" width=\"900\" role=\"img\" "
      "aria-label=\"Top-1 accuracy\">";
  int k = 0;
  for (const Row& r : rows) {
    if (!HasNumber(acc, r.key)) continue;
    const double v = Num(acc, r.key);
    const double y = 10 + 40 * k++;
    std::string delta;
    if (std::isfinite(fp32) && std::string(r.key) != "fp32") {
      delta = absl::StrFormat("  (%+.2f pt vs FP32)", 100 * (v - fp32));
    }
    absl::StrAppendFormat(&svg,
                          "<text x=\"210\" y=\"%.0f\" font-size=\"13\" fill=\"#3b4254\" "
                          "text-anchor=\"end\">%s</text>"
                          "<rect x=\"220\" y=\"%.0f\" width=\"500\" height=\"24\" rx=\"5\" "
                          "fill=\"#eef1f6\"/>"
                          "<rect x=\"220\" y=\"%.0f\" width=\"%.1f\" height=\"24\" rx=\"5\" "
                          "fill=\"%s\"/>"
                          "<text x=\"730\" y=\"%.0f\" font-size=\"13\" font-weight=\"600\" "
                          "fill=\"#1d2433\">%.2f%%<tspan font-weight=\"400\" fill=\"#5d6678\">"
                          "%s</tspan></text>",
                          y + 17, r.label, y, y, 500 * std::clamp(v, 0.0, 1.0), r.color, y + 17,
                          100 * v, delta);
  }
  return svg + "</svg>";
}

// How the weights were finetuned: the settings, then the PTQ reconstruction units (AdaRound
// per layer, BRECQ per residual block) with their errors, or the QAT run's figures.
std::string QuantizationSection(const json& q) {
  auto value = [&](const char* key) -> std::string {
    const json* v = Get(q, key);
    if (v == nullptr) return "n/a";
    return v->is_string() ? Escape(v->get<std::string>()) : Escape(v->dump());
  };
  const std::string finetune = Str(q, "finetune", "n/a");
  std::string out = "<div class=\"tablewrap\"><table><tbody>";
  const char* rows[][2] = {{"finetune", "finetuning"},
                           {"act_bits", "activation bits"},
                           {"calib_samples", "calibration samples"},
                           {"iters", "reconstruction iterations per unit"},
                           {"seed", "seed"},
                           {"weights", "weight quantizers"},
                           {"activations", "activation quantizers"}};
  for (const auto& row : rows) {
    if (std::string(row[0]) == "iters" && finetune != "ptq") continue;
    absl::StrAppend(&out, "<tr><th>", row[1], "</th><td>", value(row[0]), "</td></tr>");
  }
  out += "</tbody></table></div>";

  if (const json* units = Get(q, "units"); units != nullptr && units->is_array()) {
    absl::StrAppend(&out,
                    "<h3>Reconstruction units</h3><p class=\"note\">Mean squared error of each "
                    "unit's output against the float model's, with nearest rounding and after "
                    "learned rounding (a residual block is reconstructed as one unit).</p>"
                    "<div class=\"tablewrap\"><table><thead><tr><th>layers</th><th>method</th>"
                    "<th class=\"num\">MSE nearest</th><th class=\"num\">MSE after</th>"
                    "<th class=\"num\">change</th><th class=\"num\">samples</th></tr></thead>"
                    "<tbody>");
    for (const json& unit : *units) {
      std::vector<std::string> names;
      if (const json* l = Get(unit, "layers"); l != nullptr && l->is_array()) {
        for (const json& n : *l) names.push_back(n.is_string() ? Escape(n.get<std::string>()) : "?");
      }
      const double before = Num(unit, "mse_nearest", NAN), after = Num(unit, "mse", NAN);
      const std::string change = before > 0 && std::isfinite(after)
                                     ? absl::StrFormat("%+.1f%%", 100 * (after - before) / before)
                                     : "n/a";
      absl::StrAppendFormat(&out,
                            "<tr><td class=\"name\">%s</td><td>%s</td><td class=\"num\">%.4g</td>"
                            "<td class=\"num\">%.4g</td><td class=\"num\">%s</td>"
                            "<td class=\"num\">%.0f</td></tr>",
                            absl::StrJoin(names, ", "), Escape(Str(unit, "method", "n/a")), before,
                            after, change, Num(unit, "samples", NAN));
    }
    out += "</tbody></table></div>";
  }

  if (const json* qat = Get(q, "qat"); qat != nullptr && qat->is_object()) {
    out += "<h3>Quantization-aware training</h3><div class=\"tablewrap\"><table><tbody>";
    for (const auto& [key, v] : qat->items()) {
      absl::StrAppend(&out, "<tr><th>", Escape(absl::StrReplaceAll(key, {{"_", " "}})),
                      "</th><td>",
                      v.is_string()            ? Escape(v.get<std::string>())
                      : v.is_number_float()    ? absl::StrFormat("%.4g", v.get<double>())
                                               : Escape(v.dump()),
                      "</td></tr>");
    }
    out += "</tbody></table></div>";
  }
  return out;
}

std::string TimingSection(const json& timings) {
  const char* stages[] = {"analyze",  "orthogonality", "solve", "calibrate",
                          "finetune", "evaluate",      "export"};
  const char* colors[] = {"#346eb4", "#8b6bd1", "#2e9d6e", "#3aa6b9",
                          "#e09a2c", "#d64541", "#7c8699"};
  double sum = 0;
  for (const char* s : stages) sum += std::max(0.0, Num(timings, s));
  const double total = std::max(Num(timings, "total", sum), sum);
  if (total <= 0) return "<p class=\"note\">No timings recorded.</p>";
  std::string svg =
      "<svg viewBox=\"0 0 1240 86\" width=\"100%\" role=\"img\" "
      "aria-label=\"Time per stage\">";
  double x = 0;
  int k = 0;
  std::string legend;
  for (size_t i = 0; i < std::size(stages); ++i) {
    if (!HasNumber(timings, stages[i])) continue;
    const double t = std::max(0.0, Num(timings, stages[i]));
    const double w = 1240 * t / total;
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%.2f\" y=\"0\" width=\"%.2f\" height=\"30\" fill=\"%s\">"
                          "<title>%s: %s</title></rect>",
                          x, w, colors[i], stages[i], Seconds(t));
    x += w;
    const double lx = 170.0 * k++;
    absl::StrAppendFormat(&legend,
                          "<rect x=\"%.0f\" y=\"50\" width=\"12\" height=\"12\" rx=\"2\" "
                          "fill=\"%s\"/><text x=\"%.0f\" y=\"60\" font-size=\"12.5\" "
                          "fill=\"#3b4254\">%s <tspan font-weight=\"600\">%s</tspan></text>",
                          lx, colors[i], lx + 18, stages[i], Seconds(t));
  }
  svg += legend + "</svg>";
  return absl::StrCat("<p class=\"note\">Total ", Seconds(total),
                      " from loading the model to writing the artifacts.</p>", svg);
}

}  // namespace

std::string RenderReportHtml(const nlohmann::json& report) {
  const std::vector<Layer> layers = ReadLayers(report);
  const json& model = Obj(report, "model");
  const json& search = Obj(report, "search");

  // The bits colour scale spans the candidate bit-widths searched.
  int min_bits = 16, max_bits = 1;
  if (const json* wb = Get(search, "weight_bits"); wb != nullptr && wb->is_array()) {
    for (const json& b : *wb) {
      if (!b.is_number()) continue;
      min_bits = std::min(min_bits, b.get<int>());
      max_bits = std::max(max_bits, b.get<int>());
    }
  }
  for (const Layer& l : layers) {
    min_bits = std::min(min_bits, l.bits);
    max_bits = std::max(max_bits, l.bits);
  }
  if (min_bits > max_bits) min_bits = max_bits = 8;

  const std::string job = Str(report, "job", "(unnamed job)");
  std::string digest = Str(model, "digest", "unknown model");
  const std::string short_digest =
      digest.size() > 19 ? digest.substr(0, 19) + "\u2026" : digest;  // "sha256:" + 12 hex.

  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<title>OMPQ report \u2014 ",
      Escape(job), "</title><style>", kCss, "</style></head><body><header>",
      "<h1>Mixed-precision quantization report</h1><div class=\"sub\">", Escape(job),
      " &middot; model <span title=\"", Escape(digest), "\">", Escape(short_digest),
      "</span></div><div class=\"meta\">");
  auto pill = [&](const std::string& text) {
    absl::StrAppend(&html, "<span class=\"pill\">", text, "</span>");
  };
  pill(absl::StrFormat("%d quantized layers", layers.size()));
  if (const json* wb = Get(search, "weight_bits"); wb != nullptr && wb->is_array()) {
    std::vector<std::string> bits;
    for (const json& b : *wb) bits.push_back(b.is_number() ? std::to_string(b.get<int>()) : "?");
    pill("weight bits {" + absl::StrJoin(bits, ",") + "}");
  }
  if (HasNumber(search, "act_bits"))
    pill(absl::StrFormat("activations %.0f-bit", Num(search, "act_bits")));
  if (HasNumber(search, "beta")) pill(absl::StrFormat("&beta; = %g", Num(search, "beta")));
  if (HasNumber(search, "samples")) {
    pill(absl::StrFormat("%.0f search samples", Num(search, "samples")));
  }
  if (HasNumber(search, "seed")) pill(absl::StrFormat("seed %.0f", Num(search, "seed")));
  html += "</div></header><main>";

  html += KeyFigures(report, layers);

  absl::StrAppend(&html, "<section><h2>Bits and importance per layer</h2><p class=\"note\">",
                  "Bars: weight bits chosen for each layer in execution order. Line: importance "
                  "&theta; (layers more orthogonal to the rest score higher and earn more bits). "
                  "Hover a bar for details.</p><div class=\"scroll\">",
                  BitsChart(layers, min_bits, max_bits), "</div></section>");

  if (std::string frontier = FrontierChart(report); !frontier.empty()) {
    absl::StrAppend(&html, "<section><h2>Size against quality</h2><p class=\"note\">",
                    "The best allocation at each size from the smallest reachable one to every "
                    "layer at its widest candidate, solved from the same search. Where the "
                    "curve flattens, more bytes buy little. Squares: top-1 measured with "
                    "nearest rounding (<code>--frontier-evals</code>).</p><div class=\"scroll\">",
                    frontier, "</div></section>");
  }

  const json* orm = Get(report, "orm");
  absl::StrAppend(
      &html, "<section><h2>Orthogonality between layers (ORM)</h2><p class=\"note\">",
      "Linear CKA of the layers' features on the calibration batch: 1 on the diagonal, "
      "near 0 for layers that carry different information. Hover a cell for the pair.</p>"
      "<div class=\"scroll\">",
      Heatmap(layers, orm != nullptr ? *orm : json()), "</div></section>");

  const json& acc = Obj(report, "accuracy");
  if (!acc.empty()) {
    absl::StrAppend(&html,
                    "<section><h2>Accuracy</h2><p class=\"note\">Top-1 on the evaluation "
                    "data.</p>",
                    AccuracySection(acc), "</section>");
  }

  const json& quantization = Obj(report, "quantization");
  if (!quantization.empty()) {
    absl::StrAppend(&html, "<section><h2>Quantization</h2>", QuantizationSection(quantization),
                    "</section>");
  }

  absl::StrAppend(&html, "<section><h2>Layers</h2><p class=\"note\">",
                  "Parameters are weight elements; MACs are per input sample.</p>",
                  LayerTable(layers, min_bits, max_bits), "</section>");

  absl::StrAppend(&html, "<section><h2>Timings</h2>", TimingSection(Obj(report, "timings_seconds")),
                  "</section></main><footer>Generated by ompq from report.json &middot; ",
                  Escape(job), "</footer></body></html>\n");
  return html;
}

}  // namespace ompq::engine
