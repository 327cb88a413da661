// The charts of report.html: bits per layer, and the size-quality frontier (where adding
// bytes stops buying quality, so that a person can pick a budget at the knee).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "workers/engine/report_html_parts.h"

namespace ompq::engine::html {

using nlohmann::json;

std::string BitsChart(const std::vector<Layer>& layers, int min_bits, int max_bits) {
  const int n = static_cast<int>(layers.size());
  const double left = 52, right = 60, top = 30, bottom = 150, plot_h = 260;
  const double width = 1240, plot_w = width - left - right, height = top + plot_h + bottom;
  const double step = plot_w / std::max(n, 1);
  const int y_max = std::max(max_bits, 8);
  auto y_bits = [&](double b) { return top + plot_h - plot_h * b / y_max; };
  auto y_imp = [&](double v) { return top + plot_h - plot_h * std::clamp(v, 0.0, 1.0); };

  std::string svg = absl::StrFormat(
      "<svg viewBox=\"0 0 %.0f %.0f\" width=\"100%%\" role=\"img\" "
      "aria-label=\"Weight bits and importance per layer\">",
      width, height);
  // Grid and axes.
  for (int b = 0; b <= y_max; b += (y_max > 8 ? 4 : 2)) {
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e7ef\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#5d6678\" "
        "text-anchor=\"end\">%d</text>",
        left, left + plot_w, y_bits(b), y_bits(b), left - 8, y_bits(b) + 4, b);
  }
  for (int i = 0; i <= 4; ++i) {
    absl::StrAppendFormat(
        &svg, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#8b6bd1\">%.2f</text>",
        left + plot_w + 8, y_imp(i / 4.0) + 4, i / 4.0);
  }
  absl::StrAppendFormat(&svg,
                        "<text transform=\"translate(14 %.1f) rotate(-90)\" font-size=\"12\" "
                        "fill=\"#5d6678\" text-anchor=\"middle\">weight bits</text>"
                        "<text transform=\"translate(%.1f %.1f) rotate(90)\" font-size=\"12\" "
                        "fill=\"#8b6bd1\" text-anchor=\"middle\">importance</text>",
                        top + plot_h / 2, width - 8, top + plot_h / 2);

  const int label_every = std::max(1, (n + 79) / 80);
  const double font = std::clamp(step * 0.75, 7.0, 11.0);
  std::vector<std::string> points;
  for (int i = 0; i < n; ++i) {
    const Layer& l = layers[i];
    const double x = left + i * step, bw = std::max(step * 0.72, 1.0);
    const double bx = x + (step - bw) / 2, by = y_bits(l.bits);
    absl::StrAppendFormat(
        &svg,
        "<g><title>%d %s&#10;%d-bit weights%s&#10;importance %.4f&#10;%s params, %s MACs</title>"
        "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" rx=\"%.1f\" fill=\"%s\"%s/>",
        i, Escape(l.name), l.bits, l.pinned ? " (pinned)" : "", l.importance, Si(l.params),
        Si(l.macs), bx, by, bw, top + plot_h - by, std::min(2.0, bw / 4),
        BitsColor(l.bits, min_bits, max_bits),
        l.pinned ? " stroke=\"#1d2433\" stroke-width=\"1.2\" stroke-dasharray=\"3 2\"" : "");
    if (l.pinned) {
      absl::StrAppendFormat(&svg, "<path d=\"M%.2f %.2f l4 -6 l-4 -6 l-4 6 z\" fill=\"#1d2433\"/>",
                            x + step / 2, by - 4);
    }
    if (step >= 14) {
      absl::StrAppendFormat(&svg,
                            "<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" fill=\"#fff\" "
                            "text-anchor=\"middle\" font-weight=\"600\">%d</text>",
                            x + step / 2, top + plot_h - 6, l.bits);
    }
    svg += "</g>";
    points.push_back(absl::StrFormat("%.2f,%.2f", x + step / 2, y_imp(l.importance)));
    if (i % label_every == 0) {
      const double lx = x + step / 2, ly = top + plot_h + 10;
      absl::StrAppendFormat(&svg,
                            "<text transform=\"translate(%.2f %.2f) rotate(-55)\" "
                            "font-size=\"%.1f\" fill=\"#3b4254\" text-anchor=\"end\">"
                            "<title>%s</title>%s</text>",
                            lx + font / 3, ly, font, Escape(l.name), Escape(Truncate(l.name, 26)));
    }
  }
  absl::StrAppendFormat(
      &svg, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#9aa3b5\"/>", left,
      left + plot_w, top + plot_h, top + plot_h);
  if (!points.empty()) {
    absl::StrAppendFormat(&svg,
                          "<polyline points=\"%s\" fill=\"none\" stroke=\"#8b6bd1\" "
                          "stroke-width=\"2\" stroke-linejoin=\"round\"/>",
                          absl::StrJoin(points, " "));
    for (int i = 0; i < n; ++i) {
      absl::StrAppendFormat(&svg,
                            "<circle cx=\"%s\" r=\"%.1f\" fill=\"#fff\" stroke=\"#8b6bd1\" "
                            "stroke-width=\"1.6\"><title>%s: importance %.4f</title></circle>",
                            absl::StrReplaceAll(points[i], {{",", "\" cy=\""}}),
                            std::clamp(step / 5, 1.5, 3.5), Escape(layers[i].name),
                            layers[i].importance);
    }
  }
  // Legend.
  const double lx = left, ly = 12;
  absl::StrAppendFormat(
      &svg,
      "<g font-size=\"12\" fill=\"#3b4254\">"
      "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" rx=\"2\" fill=\"%s\"/>"
      "<text x=\"%.0f\" y=\"%.0f\">weight bits (colour: %d to %d)</text>"
      "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" stroke=\"#8b6bd1\" "
      "stroke-width=\"2\"/>"
      "<circle cx=\"%.0f\" cy=\"%.0f\" r=\"3.5\" fill=\"#fff\" stroke=\"#8b6bd1\" "
      "stroke-width=\"1.6\"/>"
      "<text x=\"%.0f\" y=\"%.0f\">importance (right axis)</text>"
      "<path d=\"M%.0f %.0f l4 -6 l-4 -6 l-4 6 z\" fill=\"#1d2433\"/>"
      "<text x=\"%.0f\" y=\"%.0f\">pinned layer</text></g>",
      lx, ly - 10, BitsColor(max_bits, min_bits, max_bits), lx + 18, ly, min_bits, max_bits,
      lx + 250, lx + 274, ly - 4, ly - 4, lx + 262, ly - 4, lx + 280, ly, lx + 450, ly + 2,
      lx + 460, ly);
  return svg + "</svg>";
}

std::string FrontierChart(const json& report) {
  const json* frontier = Get(report, "frontier");
  if (frontier == nullptr || !frontier->is_array() || frontier->empty()) return "";
  struct Point {
    double size = 0, quality = 0, top1 = -1;
  };
  // Quality: the predicted (unweighted) distortion where the search measured it, on a log
  // axis since it spans decades; else the objective, linear.
  bool distortion = true;
  for (const json& p : *frontier) distortion = distortion && HasNumber(p, "distortion");
  std::vector<Point> points;
  for (const json& p : *frontier) {
    Point point;
    point.size = Num(p, "size_bytes");
    point.quality = distortion ? Num(p, "distortion") : Num(p, "objective");
    if (HasNumber(p, "top1_nearest")) point.top1 = Num(p, "top1_nearest");
    if (distortion && !(point.quality > 0)) continue;  // Not on a log axis.
    points.push_back(point);
  }
  if (points.empty()) return "";
  double x_lo = points.front().size, x_hi = points.front().size;
  double q_lo = std::numeric_limits<double>::max(), q_hi = -q_lo;
  double t_lo = 1, t_hi = 0;
  for (const Point& p : points) {
    x_lo = std::min(x_lo, p.size);
    x_hi = std::max(x_hi, p.size);
    const double q = distortion ? std::log10(p.quality) : p.quality;
    q_lo = std::min(q_lo, q);
    q_hi = std::max(q_hi, q);
    if (p.top1 >= 0) {
      t_lo = std::min(t_lo, p.top1);
      t_hi = std::max(t_hi, p.top1);
    }
  }
  if (x_hi <= x_lo) x_hi = x_lo + 1;
  if (q_hi <= q_lo) q_hi = q_lo + 1;
  const bool measured = t_hi >= t_lo;
  if (measured) {
    t_lo = std::max(0.0, t_lo - 0.02);
    t_hi = std::min(1.0, t_hi + 0.01);
  }
  const double left = 64, right = 64, top = 34, plot_h = 250, bottom = 46, width = 1240;
  const double plot_w = width - left - right, height = top + plot_h + bottom;
  auto x_of = [&](double size) { return left + plot_w * (size - x_lo) / (x_hi - x_lo); };
  // Less distortion, or a larger objective, is higher up.
  auto y_q = [&](double q) {
    const double v = distortion ? std::log10(q) : q;
    const double t = (v - q_lo) / (q_hi - q_lo);
    return distortion ? top + plot_h * t : top + plot_h - plot_h * t;
  };
  auto y_t = [&](double t) { return top + plot_h - plot_h * (t - t_lo) / (t_hi - t_lo); };

  std::string svg = absl::StrFormat(
      "<svg viewBox=\"0 0 %.0f %.0f\" width=\"100%%\" role=\"img\" "
      "aria-label=\"Size against predicted quality\">",
      width, height);
  for (int i = 0; i <= 4; ++i) {
    const double size = x_lo + (x_hi - x_lo) * i / 4;
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
                          "stroke=\"#e3e7ef\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" "
                          "fill=\"#5d6678\" text-anchor=\"middle\">%s</text>",
                          x_of(size), x_of(size), top, top + plot_h, x_of(size),
                          top + plot_h + 16, Bytes(size));
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#5d6678\" "
                        "text-anchor=\"middle\">model size</text>"
                        "<text transform=\"translate(16 %.1f) rotate(-90)\" font-size=\"12\" "
                        "fill=\"#346eb4\" text-anchor=\"middle\">%s</text>",
                        left + plot_w / 2, top + plot_h + 36, top + plot_h / 2,
                        distortion ? "predicted distortion (log, better up)" : "objective");
  // The job's budget and its own allocation.
  const json& budget = Obj(report, "budget");
  if (HasNumber(budget, "size_bytes")) {
    const double x = x_of(std::clamp(Num(budget, "size_bytes"), x_lo, x_hi));
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#d64541\" "
                          "stroke-dasharray=\"5 4\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" "
                          "fill=\"#d64541\" text-anchor=\"middle\">budget</text>",
                          x, x, top, top + plot_h, x, top - 6);
  }
  std::vector<std::string> line, top1_line;
  for (const Point& p : points) {
    line.push_back(absl::StrFormat("%.2f,%.2f", x_of(p.size), y_q(p.quality)));
    if (p.top1 >= 0) top1_line.push_back(absl::StrFormat("%.2f,%.2f", x_of(p.size), y_t(p.top1)));
  }
  absl::StrAppendFormat(&svg,
                        "<polyline points=\"%s\" fill=\"none\" stroke=\"#346eb4\" "
                        "stroke-width=\"2\"/>",
                        absl::StrJoin(line, " "));
  for (const Point& p : points) {
    absl::StrAppendFormat(&svg,
                          "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"#346eb4\"><title>%s: "
                          "%s %.4g</title></circle>",
                          x_of(p.size), y_q(p.quality), Bytes(p.size),
                          distortion ? "distortion" : "objective", p.quality);
  }
  if (measured && !top1_line.empty()) {
    absl::StrAppendFormat(&svg,
                          "<polyline points=\"%s\" fill=\"none\" stroke=\"#2e9d6e\" "
                          "stroke-width=\"2\"/>",
                          absl::StrJoin(top1_line, " "));
    for (const Point& p : points) {
      if (p.top1 < 0) continue;
      absl::StrAppendFormat(&svg,
                            "<rect x=\"%.2f\" y=\"%.2f\" width=\"7\" height=\"7\" "
                            "fill=\"#2e9d6e\"><title>%s: top-1 %.2f%%</title></rect>"
                            "<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" fill=\"#2e9d6e\" "
                            "text-anchor=\"middle\">%.1f</text>",
                            x_of(p.size) - 3.5, y_t(p.top1) - 3.5, Bytes(p.size), 100 * p.top1,
                            x_of(p.size), y_t(p.top1) - 8, 100 * p.top1);
    }
    for (int i = 0; i <= 4; ++i) {
      const double t = t_lo + (t_hi - t_lo) * i / 4;
      absl::StrAppendFormat(&svg,
                            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#2e9d6e\">"
                            "%.1f%%</text>",
                            left + plot_w + 8, y_t(t) + 4, 100 * t);
    }
  }
  const json& result = Obj(report, "result");
  if (HasNumber(result, "size_bytes")) {
    const double x = x_of(std::clamp(Num(result, "size_bytes"), x_lo, x_hi));
    absl::StrAppendFormat(&svg,
                          "<path d=\"M%.1f %.1f l6 -10 l-12 0 z\" fill=\"#1d2433\"><title>this "
                          "job: %s</title></path>",
                          x, top + plot_h, Bytes(Num(result, "size_bytes")));
  }
  absl::StrAppendFormat(
      &svg,
      "<g font-size=\"12\" fill=\"#3b4254\"><line x1=\"%.0f\" x2=\"%.0f\" y1=\"14\" y2=\"14\" "
      "stroke=\"#346eb4\" stroke-width=\"2\"/><text x=\"%.0f\" y=\"18\">%s</text>%s"
      "<path d=\"M%.0f 20 l6 -10 l-12 0 z\" fill=\"#1d2433\"/><text x=\"%.0f\" y=\"18\">"
      "this job</text></g>",
      left, left + 24, left + 30, distortion ? "predicted distortion" : "objective",
      measured ? absl::StrFormat("<rect x=\"%.0f\" y=\"8\" width=\"9\" height=\"9\" "
                                 "fill=\"#2e9d6e\"/><text x=\"%.0f\" y=\"18\">measured top-1, "
                                 "nearest rounding (right axis)</text>",
                                 left + 200, left + 214)
               : std::string(),
      left + 560, left + 572);
  return svg + "</svg>";
}

}  // namespace ompq::engine::html
