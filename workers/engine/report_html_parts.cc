#include "workers/engine/report_html_parts.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace ompq::engine::html {

using nlohmann::json;

std::string Escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Field access that tolerates absence, null and wrong types.
const json* Get(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}
bool HasNumber(const json& j, const char* key) {
  const json* v = Get(j, key);
  return v != nullptr && v->is_number();
}
double Num(const json& j, const char* key, double fallback) {
  const json* v = Get(j, key);
  return v != nullptr && v->is_number() ? v->get<double>() : fallback;
}
std::string Str(const json& j, const char* key, const std::string& fallback) {
  const json* v = Get(j, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : fallback;
}
const json& Obj(const json& j, const char* key) {
  static const json kEmpty = json::object();
  const json* v = Get(j, key);
  return v != nullptr && v->is_object() ? *v : kEmpty;
}

std::string Thousands(double value) {
  std::string digits = absl::StrFormat("%.0f", std::fabs(value));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

std::string Bytes(double bytes) {
  if (bytes >= 1024.0 * 1024.0) return absl::StrFormat("%.2f MiB", bytes / (1024.0 * 1024.0));
  if (bytes >= 1024.0) return absl::StrFormat("%.1f KiB", bytes / 1024.0);
  return absl::StrFormat("%.0f B", bytes);
}

// 1234567 -> "1.23 M" (MACs, BOPs, parameters).
std::string Si(double value) {
  const char* units[] = {"", " k", " M", " G", " T", " P"};
  int u = 0;
  while (std::fabs(value) >= 1000.0 && u < 5) {
    value /= 1000.0;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f", value) : absl::StrFormat("%.3g%s", value, units[u]);
}

std::string Seconds(double s) {
  if (s < 1) return absl::StrFormat("%.0f ms", s * 1000);
  if (s < 120) return absl::StrFormat("%.2f s", s);
  return absl::StrFormat("%.0f min %.0f s", std::floor(s / 60), std::fmod(s, 60));
}

std::string Hex(Rgb c) {
  auto clamp = [](double v) { return static_cast<int>(std::lround(std::clamp(v, 0.0, 255.0))); };
  return absl::StrFormat("#%02x%02x%02x", clamp(c.r), clamp(c.g), clamp(c.b));
}
// Piecewise-linear colour scale through `stops`, t in [0, 1].
std::string Scale(const std::vector<Rgb>& stops, double t) {
  if (!std::isfinite(t)) t = 0;
  t = std::clamp(t, 0.0, 1.0) * (stops.size() - 1);
  const size_t i = std::min(static_cast<size_t>(t), stops.size() - 2);
  const double f = t - i;
  const Rgb& a = stops[i];
  const Rgb& b = stops[i + 1];
  return Hex({a.r + (b.r - a.r) * f, a.g + (b.g - a.g) * f, a.b + (b.b - a.b) * f});
}
// Heatmap scale (viridis-like): dark blue for orthogonal pairs, yellow for redundant ones.
const std::vector<Rgb> kHeat = {
    {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
// Bits scale: few bits warm, many bits cool.
const std::vector<Rgb> kBits = {
    {214, 69, 65}, {240, 150, 55}, {236, 201, 75}, {72, 170, 150}, {52, 110, 180}};

std::string BitsColor(int bits, int lo, int hi) {
  return Scale(kBits, hi > lo ? static_cast<double>(bits - lo) / (hi - lo) : 1.0);
}

std::string Truncate(const std::string& s, size_t n) {
  return s.size() <= n ? s : "\u2026" + s.substr(s.size() - (n - 1));
}


std::vector<Layer> ReadLayers(const json& report) {
  std::vector<Layer> layers;
  const json* list = Get(report, "layers");
  if (list == nullptr || !list->is_array()) return layers;
  for (const json& j : *list) {
    Layer l;
    l.name = Str(j, "name", "?");
    l.kind = Str(j, "kind");
    if (const json* shape = Get(j, "weight_shape"); shape != nullptr && shape->is_array()) {
      std::vector<std::string> dims;
      for (const json& d : *shape) dims.push_back(d.is_number() ? Thousands(d.get<double>()) : "?");
      l.shape = absl::StrJoin(dims, "\u00d7");
    }
    l.params = Num(j, "params");
    l.macs = Num(j, "macs");
    l.gamma = Num(j, "gamma");
    l.importance = Num(j, "importance");
    l.bits = static_cast<int>(Num(j, "bits"));
    l.act_bits = static_cast<int>(Num(j, "act_bits"));
    const json* pinned = Get(j, "pinned");
    l.pinned = pinned != nullptr && pinned->is_boolean() && pinned->get<bool>();
    layers.push_back(std::move(l));
  }
  return layers;
}

}  // namespace ompq::engine::html
