// The bounds of the multiple-choice search (choice_bounds.h): per-row LPs over the layers'
// concave hulls, tightened where one layer straddles the greedy's last piece, and CLP's
// relaxation of the whole program.
#include "workers/engine/choice_bounds.h"

#include <algorithm>
#include <cmath>

#include "ClpSimplex.hpp"

namespace ompq::engine::internal {
namespace {

// The upper concave hull of (row use, gain) from the lowest candidate: the pieces the LP of
// this layer alone takes, in order of falling efficiency.
std::vector<Segment> Hull(const std::vector<double>& w, const std::vector<double>& gain, int item) {
  auto eff = [&](int a, int b) {
    return w[b] == w[a] ? kInf : (gain[b] - gain[a]) / (w[b] - w[a]);
  };
  std::vector<int> pts{0};
  for (int j = 1; j < static_cast<int>(w.size()); ++j) {
    while (pts.size() >= 2 && eff(pts[pts.size() - 2], j) >= eff(pts[pts.size() - 2], pts.back()))
      pts.pop_back();
    pts.push_back(j);
  }
  std::vector<Segment> segments;
  for (size_t s = 1; s < pts.size(); ++s) {
    const int a = pts[s - 1], b = pts[s];
    segments.push_back({w[b] - w[a], gain[b] - gain[a], eff(a, b), item, a, b});
  }
  return segments;
}

}  // namespace

RowBound::RowBound(const std::vector<Choice>& items,
                   const std::vector<std::vector<double>>& weights) {
  for (size_t k = 0; k < items.size(); ++k) {
    for (const Segment& s : Hull(weights[k], items[k].gain, static_cast<int>(k)))
      segments_.push_back(s);
  }
  std::stable_sort(segments_.begin(), segments_.end(),
                   [](const Segment& a, const Segment& b) { return a.eff > b.eff; });
  Prefix();
}

void RowBound::Drop(int k) {
  segments_.erase(std::remove_if(segments_.begin(), segments_.end(),
                                 [k](const Segment& s) { return s.item <= k; }),
                  segments_.end());
  Prefix();
}

double RowBound::Bound(double room) const {
  // Prefix sums restart at every Drop, so rounding stays relative to the open items.
  const size_t j = static_cast<size_t>(std::upper_bound(fill_w_.begin(), fill_w_.end(), room) -
                                       fill_w_.begin()) -
                   1;
  if (j == segments_.size()) return fill_v_[j];
  // The partial piece; its weight is > 0 as fill_w_ grew.
  const Segment& b = segments_[j];
  const double lp = fill_v_[j] + b.v * (room - fill_w_[j]) / b.w;
  if (b.to - b.from > 1) return lp;
  // Its layer takes a candidate at or below the piece's start, or at or above its end
  // (none lies between): the larger of the two LP values, each bounded by the greedy's
  // next rate (Martello and Toth's U2 for the knapsack).
  size_t next = j + 1, prev = j;
  while (next < segments_.size() && segments_[next].item == b.item) ++next;
  while (prev > 0 && segments_[prev - 1].item == b.item) --prev;
  const double low =
      fill_v_[j] + (next < segments_.size() ? (room - fill_w_[j]) * segments_[next].eff : 0.0);
  const double high =
      prev > 0 ? fill_v_[j + 1] - (fill_w_[j + 1] - room) * segments_[prev - 1].eff : -kInf;
  return std::min(lp, std::max(low, high));
}

void RowBound::Prefix() {
  fill_w_.assign(1, 0);
  fill_v_.assign(1, 0);
  for (const Segment& s : segments_) {
    fill_w_.push_back(fill_w_.back() + s.w);
    fill_v_.push_back(fill_v_.back() + s.v);
  }
}

bool SolveRelaxation(const std::vector<Choice>& items, const bool active[2], const int64_t room[2],
                     Relaxation* out) {
  std::vector<int> rows;
  for (int r = 0; r < 2; ++r) {
    if (active[r]) rows.push_back(r);
  }
  const int num_rows = static_cast<int>(rows.size() + items.size());
  // Rows scaled by their capacities and the objective by the largest gain: CLP works with
  // absolute tolerances, and gains may be tiny (distortions) while params reach millions.
  double scale[2] = {1, 1}, obj_scale = 0;
  for (int r : rows) scale[r] = 1.0 / static_cast<double>(std::max<int64_t>(room[r], 1));
  for (const Choice& c : items) obj_scale = std::max(obj_scale, c.gain.back());
  std::vector<CoinBigIndex> start{0};
  std::vector<int> index;
  std::vector<double> value, lo, hi, obj;
  for (size_t k = 0; k < items.size(); ++k) {
    for (size_t j = 1; j < items[k].cands.size(); ++j) {
      for (size_t i = 0; i < rows.size(); ++i) {
        const int64_t dw = items[k].dw[rows[i]][j];
        if (dw == 0) continue;
        index.push_back(static_cast<int>(i));
        value.push_back(static_cast<double>(dw) * scale[rows[i]]);
      }
      index.push_back(static_cast<int>(rows.size() + k));
      value.push_back(1.0);
      start.push_back(static_cast<CoinBigIndex>(index.size()));
      lo.push_back(0);
      hi.push_back(1);
      obj.push_back(items[k].gain[j] / obj_scale);
    }
  }
  std::vector<double> row_lo(num_rows, -COIN_DBL_MAX), row_hi(num_rows, 1.0);
  for (size_t i = 0; i < rows.size(); ++i) row_hi[i] = room[rows[i]] > 0 ? 1.0 : 0.0;
  ClpSimplex model;
  model.setLogLevel(0);
  model.loadProblem(static_cast<int>(obj.size()), num_rows, start.data(), index.data(),
                    value.data(), lo.data(), hi.data(), obj.data(), row_lo.data(), row_hi.data());
  model.setOptimizationDirection(-1);  // Maximise.
  model.dual(0);
  if (!model.isProvenOptimal()) return false;
  const double* x = model.primalColumnSolution();
  out->gain = 0;
  for (size_t k = 0, col = 0; k < items.size(); ++k) {
    for (size_t j = 1; j < items[k].cands.size(); ++j, ++col) {
      out->gain += items[k].gain[j] * std::clamp(x[col], 0.0, 1.0);
    }
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    // The sign convention depends on the direction; the magnitude is the multiplier.
    out->y[rows[i]] = std::fabs(model.dualRowSolution()[i]) * obj_scale * scale[rows[i]];
  }
  return true;
}

}  // namespace ompq::engine::internal
