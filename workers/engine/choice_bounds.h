// Internal to choice_allocation.cc: the multiple-choice program's layers after pruning, and
// the bounds its search prunes with (per-row hull LPs with the U2 tightening, and CLP's
// relaxation of the whole program for the reported bound and the rows' multipliers).
#ifndef OMPQ_WORKERS_ENGINE_CHOICE_BOUNDS_H_
#define OMPQ_WORKERS_ENGINE_CHOICE_BOUNDS_H_

#include <cstdint>
#include <limits>
#include <vector>

namespace ompq::engine::internal {

constexpr int kSizeRow = 0;
constexpr int kBopsRow = 1;
constexpr double kInf = std::numeric_limits<double>::infinity();

/// A free layer after pruning (two or more candidates left).
struct Choice {
  int layer = 0;
  std::vector<int> cands;      // Bits, ascending.
  std::vector<double> gain;    // Value over cands[0]'s: gain[0] = 0, strictly ascending.
  std::vector<int64_t> dw[2];  // Row use over cands[0]: w_r * (b - cands[0]), ascending.
};

/// A piece of a layer's upper concave hull on one row: a fractional knapsack item.
struct Segment {
  double w = 0;
  double v = 0;
  double eff = 0;  // v / w; +inf when w == 0.
  int item = 0;    // Position in the processing order.
  int from = 0;    // Candidate indices at its ends.
  int to = 0;
};

/// The LP of the open layers on one row (weights per item and candidate, over the lowest):
/// the greedy over their hull pieces by falling efficiency, exact for a single row.
class RowBound {
 public:
  RowBound(const std::vector<Choice>& items, const std::vector<std::vector<double>>& weights);

  /// Leaves the items up to k out (decided).
  void Drop(int k);

  /// Upper bound on the gain of the open items within `room` of this row.
  double Bound(double room) const;

  /// The open items' hull pieces, by falling efficiency.
  const std::vector<Segment>& segments() const { return segments_; }

 private:
  void Prefix();

  std::vector<Segment> segments_;
  std::vector<double> fill_w_, fill_v_;
};

/// CLP's relaxation of the multiple-choice program: x_kj in [0, 1] for the candidates
/// above the lowest (whose weight is the slack), sum_j x_kj <= 1 per layer, and the active
/// rows over the lowest candidates.
struct Relaxation {
  double gain = 0;       // Optimum, over the all-lowest allocation.
  double y[2] = {0, 0};  // Multipliers of the rows in original units (>= 0).
};

/// Solves the relaxation of `items` under the `active` rows with `room` over the lowest
/// candidates; false when CLP does not prove an optimum.
bool SolveRelaxation(const std::vector<Choice>& items, const bool active[2], const int64_t room[2],
                     Relaxation* out);

}  // namespace ompq::engine::internal

#endif  // OMPQ_WORKERS_ENGINE_CHOICE_BOUNDS_H_
