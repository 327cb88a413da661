#include "common/units.h"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ompq {
namespace {

// Splits "1.5MiB" into the number 1.5 and the suffix "MiB".
absl::StatusOr<std::pair<double, std::string>> SplitNumber(absl::string_view text,
                                                           absl::string_view what) {
  std::string s(absl::StripAsciiWhitespace(text));
  size_t end = 0;
  while (end < s.size() && (absl::ascii_isdigit(s[end]) || s[end] == '.')) ++end;
  double value = 0;
  if (end == 0 || !absl::SimpleAtod(s.substr(0, end), &value) || !std::isfinite(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid ", what, " '", text, "': expected a number such as ",
                     what == "size" ? "'1.5MiB' or '2000000'" : "'75G' or '1000'"));
  }
  std::string suffix(absl::StripAsciiWhitespace(s.substr(end)));
  return std::make_pair(value, suffix);
}

absl::StatusOr<int64_t> Scale(double value, double factor, absl::string_view text,
                              absl::string_view what) {
  double scaled = std::floor(value * factor);
  if (scaled < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", text, "' must be positive"));
  }
  if (scaled > static_cast<double>(std::numeric_limits<int64_t>::max() / 2)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", text, "' is too large"));
  }
  return static_cast<int64_t>(scaled);
}

}  // namespace

absl::StatusOr<int64_t> ParseSize(absl::string_view text) {
  auto split = SplitNumber(text, "size");
  if (!split.ok()) return split.status();
  const auto& [value, suffix] = *split;
  static const std::vector<std::pair<std::string, double>> kUnits = {
      {"", 1},          {"b", 1},
      {"k", 1e3},       {"kb", 1e3},          {"kib", 1024.0},   {"ki", 1024.0},
      {"m", 1e6},       {"mb", 1e6},          {"mib", 1048576.0}, {"mi", 1048576.0},
      {"g", 1e9},       {"gb", 1e9},          {"gib", 1073741824.0}, {"gi", 1073741824.0},
  };
  std::string lower = absl::AsciiStrToLower(suffix);
  for (const auto& [unit, factor] : kUnits) {
    if (lower == unit) return Scale(value, factor, text, "size");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid size unit '", suffix, "' in '", text, "': use B, KB, MB, GB, KiB, MiB or GiB"));
}

absl::StatusOr<int64_t> ParseCount(absl::string_view text) {
  auto split = SplitNumber(text, "count");
  if (!split.ok()) return split.status();
  const auto& [value, suffix] = *split;
  static const std::vector<std::pair<std::string, double>> kUnits = {
      {"", 1}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12}, {"p", 1e15}};
  std::string lower = absl::AsciiStrToLower(suffix);
  for (const auto& [unit, factor] : kUnits) {
    if (lower == unit) return Scale(value, factor, text, "count");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid count suffix '", suffix, "' in '", text, "': use K, M, G, T or P"));
}

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  std::string s(absl::StripAsciiWhitespace(text));
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(s, &seconds) && std::isfinite(seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(s, &d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid duration '", text, "': use e.g. '30m', '90s', '1h30m' or plain seconds"));
  }
  if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("duration '", text, "' must be positive"));
  }
  return d;
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  if (bytes < 1024 * 1024) return absl::StrFormat("%.2f KiB", bytes / 1024.0);
  if (bytes < int64_t{1024} * 1024 * 1024) {
    return absl::StrFormat("%.2f MiB", bytes / 1048576.0);
  }
  return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
}

std::string FormatCount(int64_t count) {
  if (count < 1000) return absl::StrCat(count);
  if (count < 1000000) return absl::StrFormat("%.2f K", count / 1e3);
  if (count < 1000000000) return absl::StrFormat("%.2f M", count / 1e6);
  if (count < 1000000000000) return absl::StrFormat("%.2f G", count / 1e9);
  return absl::StrFormat("%.2f T", count / 1e12);
}

}  // namespace ompq
