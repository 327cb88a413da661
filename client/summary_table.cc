#include "client/summary_table.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/units.h"

namespace ompq::client {
namespace {

constexpr size_t kMaxNameWidth = 40;

std::string Percent(double fraction) { return absl::StrFormat("%.2f%%", 100.0 * fraction); }

std::string LayerTable(const v1::JobResult& result) {
  size_t name_width = 5;  // "LAYER"
  for (const auto& layer : result.layers()) {
    name_width = std::max(name_width, std::min(layer.name().size(), kMaxNameWidth));
  }
  const int width = static_cast<int>(name_width);
  std::string text = absl::StrFormat("  %-*s  %-7s %12s  %5s  %10s\n", width, "LAYER", "KIND",
                                     "PARAMS", "BITS", "IMPORTANCE");
  bool any_pinned = false;
  for (const auto& layer : result.layers()) {
    any_pinned |= layer.pinned();
    std::string bits = absl::StrCat(layer.bits(), layer.pinned() ? "*" : " ");
    absl::StrAppend(&text, absl::StrFormat("  %-*s  %-7s %12d  %5s  %10.4f\n", width, layer.name(),
                                           layer.kind(), layer.params(), bits, layer.importance()));
  }
  if (any_pinned) absl::StrAppend(&text, "  (* bits fixed by a pin)\n");
  return text;
}

}  // namespace

std::string FormatSummary(const v1::Job& job, const std::string& out_dir,
                          const std::vector<std::string>& files) {
  const v1::JobResult& result = job.result();
  const v1::JobSpec& spec = job.spec();
  std::string text = absl::StrCat(job.name(), " ", v1::JobState_Name(job.state()));
  if (!spec.display_name().empty()) absl::StrAppend(&text, " (", spec.display_name(), ")");
  absl::StrAppend(&text, "\n\n", LayerTable(result), "\n");

  std::string size_line = absl::StrCat("Size:       ", FormatBytes(result.size_bytes()));
  if (spec.has_size_budget_bytes()) {
    absl::StrAppend(&size_line, " of ", FormatBytes(spec.size_budget_bytes()), " budget (",
                    Percent(static_cast<double>(result.size_bytes()) /
                            static_cast<double>(spec.size_budget_bytes())),
                    ")");
  }
  if (result.fp32_size_bytes() > 0 && result.size_bytes() > 0) {
    absl::StrAppend(&size_line, absl::StrFormat("; FP32 %s, %.1fx smaller",
                                                FormatBytes(result.fp32_size_bytes()),
                                                static_cast<double>(result.fp32_size_bytes()) /
                                                    static_cast<double>(result.size_bytes())));
  }
  absl::StrAppend(&text, size_line, "\n");

  absl::StrAppend(&text, "BOPs:       ", FormatCount(result.bops()));
  if (spec.has_bops_budget()) {
    absl::StrAppend(
        &text, " of ", FormatCount(spec.bops_budget()), " budget (",
        Percent(static_cast<double>(result.bops()) / static_cast<double>(spec.bops_budget())), ")");
  }
  absl::StrAppend(&text, "\n");

  // The distortion objective is minimised (the LP bound is below it), the paper's program
  // maximised (the bound is above it).
  const bool minimised = spec.objective() == v1::OBJECTIVE_DISTORTION;
  absl::StrAppend(&text, absl::StrFormat("Objective:  %.6g (%s, LP bound %.6g",
                                         result.objective(),
                                         minimised ? "weighted distortion" : "sum c_i b_i",
                                         result.lp_bound()));
  const double reference = minimised ? result.objective() : result.lp_bound();
  if (reference > 0) {
    absl::StrAppend(&text, absl::StrFormat(", within %.3f%%",
                                           100.0 * std::fabs(result.lp_bound() - result.objective()) /
                                               reference));
  }
  absl::StrAppend(&text, ")\n");

  if (result.has_accuracy()) {
    const v1::Accuracy& accuracy = result.accuracy();
    absl::StrAppend(&text, "Accuracy:   FP32 ", Percent(accuracy.fp32()),
                    ", quantized before finetuning ", Percent(accuracy.quantized_before_finetune()),
                    ", quantized ", Percent(accuracy.quantized()), "\n");
  }
  if (!out_dir.empty()) {
    absl::StrAppend(&text, "Files:      ", out_dir, "/ ", absl::StrJoin(files, ", "), "\n");
  }
  return text;
}

}  // namespace ompq::client
