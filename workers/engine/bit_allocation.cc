// Exact bit allocation: the LP relaxation with CLP, then the integer optimum by a
// dynamic program with dominance and LP bounds, started from the rounded LP point.
//
// Why not plain LP-based branch and bound: with near-equal coefficients (small beta) and
// many small or repeated layers (MobileNetV2), B&B needed millions of nodes to separate
// allocations that differ only in which of several equal-sized layers got a bit; the DP
// merges those into one state and needs a few hundred. Every row has non-negative
// coefficients, so a partial allocation that fits with the remaining layers at their
// lowest bits stays completable. Feasibility is checked in integer arithmetic, so a
// returned allocation never exceeds a budget by even one bit.
//
// Layers with per-candidate values go to the multiple-choice solver (choice_allocation.cc);
// without any, this file's linear path runs unchanged.
#include "workers/engine/bit_allocation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include "ClpSimplex.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/job_error.h"

namespace ompq::engine {
namespace {

using Int128 = __int128;

constexpr int kSizeRow = 0;
constexpr int kBopsRow = 1;
// A state is dropped when its bound exceeds the incumbent by less than this (relative):
// bounds carry floating rounding, and such a state could not improve the answer visibly.
constexpr double kRelativeGap = 1e-12;
// An LP value this close to a candidate counts as that candidate (CLP's tolerances).
constexpr double kIntegralTol = 1e-9;

/// A layer whose bits are still to be chosen (more than one candidate).
struct Item {
  int layer = 0;
  std::vector<int> cands;
  int64_t w[2] = {0, 0};  // Row coefficients per weight bit: params (size), macs*act (BOPs).
  double c = 0;
};

std::string Mib(int64_t bytes) { return absl::StrFormat("%.3f MiB", bytes / 1048576.0); }

// The LP relaxation over the free items, rows scaled by their capacities (CLP prefers
// coefficients near 1; params reach millions and BOPs 1e12).
class ClpRelaxation {
 public:
  ClpRelaxation(const std::vector<Item>& items, const bool active[2], const int64_t cap[2]) {
    const int n = static_cast<int>(items.size());
    std::vector<int> rows;
    for (int r = 0; r < 2; ++r) {
      if (active[r]) rows.push_back(r);
    }
    std::vector<CoinBigIndex> start{0};
    std::vector<int> index;
    std::vector<double> value, lo(n), hi(n), obj(n);
    for (int k = 0; k < n; ++k) {
      for (int j = 0; j < static_cast<int>(rows.size()); ++j) {
        const int r = rows[j];
        if (items[k].w[r] == 0) continue;
        index.push_back(j);
        value.push_back(static_cast<double>(items[k].w[r]) /
                        static_cast<double>(std::max<int64_t>(cap[r], 1)));
      }
      start.push_back(static_cast<CoinBigIndex>(index.size()));
      lo[k] = items[k].cands.front();
      hi[k] = items[k].cands.back();
      obj[k] = items[k].c;
    }
    std::vector<double> row_lo(rows.size(), -COIN_DBL_MAX), row_hi(rows.size());
    for (size_t j = 0; j < rows.size(); ++j) {
      // A zero capacity keeps scale 1 and right-hand side 0.
      row_hi[j] = cap[rows[j]] > 0 ? 1.0 : 0.0;
    }
    model_.setLogLevel(0);
    model_.loadProblem(n, static_cast<int>(rows.size()), start.data(), index.data(), value.data(),
                       lo.data(), hi.data(), obj.data(), row_lo.data(), row_hi.data());
    model_.setOptimizationDirection(-1);  // Maximise.
    rows_ = rows;
    scale_.resize(rows.size());
    for (size_t j = 0; j < rows.size(); ++j) {
      scale_[j] = 1.0 / static_cast<double>(std::max<int64_t>(cap[rows[j]], 1));
    }
  }

  /// Solves with column bounds [lo, hi]; false when CLP did not prove an optimum.
  bool Solve(const std::vector<double>& lo, const std::vector<double>& hi) {
    for (int k = 0; k < model_.numberColumns(); ++k) model_.setColumnBounds(k, lo[k], hi[k]);
    // Dual simplex keeps the previous basis: only bounds change between nodes.
    model_.dual(0);
    return model_.isProvenOptimal();
  }

  const double* x() const { return model_.primalColumnSolution(); }
  /// Multiplier of `row` (0 size, 1 BOPs) in original units (>= 0 for the maximisation).
  double Multiplier(int row) const {
    for (size_t j = 0; j < rows_.size(); ++j) {
      // CLP's sign convention depends on the direction; the magnitude is what we need.
      if (rows_[j] == row) return std::fabs(model_.dualRowSolution()[j]) * scale_[j];
    }
    return 0;
  }

 private:
  ClpSimplex model_;
  std::vector<int> rows_;
  std::vector<double> scale_;
};

// The integer optimum by dynamic programming over the layers with dominance and bounds
// (a DP-based branch and bound). Layers are taken in order of value per unit of the main
// row; a state is one partial allocation of the layers taken so far, (row use, value).
// A state is dropped when another is no heavier in every row and worth at least as much
// (dominance), or when its LP bound cannot beat the incumbent (bounding). Merging equal
// states is what plain branch and bound lacks: with near-equal coefficients, repeated
// blocks and many small layers, B&B revisits the same (size, value) through countless
// permutations, while here each survives once.
class ExactSearch {
 public:
  /// `y`: multipliers of the two rows from the root LP (for a Lagrangian bound), or null.
  ExactSearch(const std::vector<Item>& items, const bool active[2], const int64_t cap[2],
              const double* y)
      : items_(items) {
    n_ = static_cast<int>(items_.size());
    for (int r = 0; r < 2; ++r) {
      active_[r] = active[r];
      cap_[r] = cap[r];
    }
    main_ = active_[kSizeRow] ? kSizeRow : kBopsRow;
    order_.resize(n_);
    std::iota(order_.begin(), order_.end(), 0);
    // Best value per unit of the main row first; ties by layer order (deterministic).
    std::stable_sort(order_.begin(), order_.end(), [&](int a, int b) {
      return items_[a].c * static_cast<double>(items_[b].w[main_]) >
             items_[b].c * static_cast<double>(items_[a].w[main_]);
    });
    // Suffix tables over the processing order (entry k covers stages k..n-1).
    fill_w_.assign(n_ + 1, 0);
    fill_v_.assign(n_ + 1, 0);
    for (int k = 0; k < n_; ++k) {
      const Item& it = items_[order_[k]];
      const int span = it.cands.back() - it.cands.front();
      fill_w_[k + 1] = fill_w_[k] + static_cast<Int128>(it.w[main_]) * span;
      fill_v_[k + 1] = fill_v_[k] + it.c * span;
    }
    use_lagrangian_ = y != nullptr && active_[kSizeRow] && active_[kBopsRow];
    lag_tail_.assign(n_ + 1, 0);
    low_v_.assign(n_ + 1, 0);
    for (int r = 0; r < 2; ++r) low_w_[r].assign(n_ + 1, 0);
    for (int k = n_ - 1; k >= 0; --k) {
      const Item& it = items_[order_[k]];
      const int lo = it.cands.front(), hi = it.cands.back();
      low_v_[k] = low_v_[k + 1] + it.c * lo;
      for (int r = 0; r < 2; ++r)
        low_w_[r][k] = low_w_[r][k + 1] + static_cast<Int128>(it.w[r]) * lo;
      if (use_lagrangian_) {
        const double reduced =
            it.c - y[0] * static_cast<double>(it.w[0]) - y[1] * static_cast<double>(it.w[1]);
        lag_tail_[k] = lag_tail_[k + 1] + reduced * (reduced > 0 ? hi : lo);
      }
    }
    if (use_lagrangian_) {
      y_[0] = y[0];
      y_[1] = y[1];
    }
  }

  /// Finds the optimum; `seed_bits` is a feasible allocation to beat (the incumbent).
  absl::Status Run(const std::vector<int>& seed_bits) {
    best_bits_ = seed_bits;
    best_value_ = 0;
    for (int k = 0; k < n_; ++k) best_value_ += items_[k].c * seed_bits[k];
    threshold_ = best_value_ + kRelativeGap * std::fabs(best_value_);

    State root;
    for (int r = 0; r < 2; ++r) root.w[r] = static_cast<int64_t>(low_w_[r][0]);
    root.v = low_v_[0];
    stages_.assign(1, {root});
    for (int k = 0; k < n_; ++k) {
      std::vector<State> next = Expand(k);
      const bool overflow = next.size() > internal::kMaxExpanded;
      if (!overflow) Filter(&next);
      states_ += static_cast<int64_t>(next.size());
      if (overflow || states_ > internal::kMaxStates) return internal::TooManyStates();
      stages_.push_back(std::move(next));
      if (stages_.back().empty()) break;  // Nothing can beat the incumbent.
    }
    if (static_cast<int>(stages_.size()) == n_ + 1 && !stages_.back().empty()) {
      // Every surviving state is complete; the first of the best is the deterministic pick.
      const std::vector<State>& last = stages_.back();
      int best = 0;
      for (int s = 1; s < static_cast<int>(last.size()); ++s) {
        if (last[s].v > last[best].v) best = s;
      }
      if (last[best].v > best_value_) {
        best_value_ = last[best].v;
        for (int k = n_, s = best; k > 0; --k) {
          const State& st = stages_[k][s];
          best_bits_[order_[k - 1]] = items_[order_[k - 1]].cands[st.cand];
          s = st.parent;
        }
      }
    }
    return absl::OkStatus();
  }

  const std::vector<int>& best_bits() const { return best_bits_; }
  int64_t states() const { return states_; }

 private:
  struct State {
    int64_t w[2] = {0, 0};  // Row use, with the layers not yet taken at their lowest bits.
    double v = 0;           // Objective, likewise.
    int32_t parent = -1;    // Index in the previous stage.
    int32_t cand = 0;       // Candidate index chosen for this stage's layer.
  };

  // Bound on the best completion of a state whose layers from stage k on are undecided.
  double Bound(int k, const State& s) const {
    // Fractional knapsack on the main row: fill the suffix in efficiency order.
    const Int128 room = static_cast<Int128>(cap_[main_]) - s.w[main_];
    const Int128 target = fill_w_[k] + room;
    const int j = static_cast<int>(std::upper_bound(fill_w_.begin() + k, fill_w_.end(), target) -
                                   fill_w_.begin()) -
                  1;
    double bound = s.v + (fill_v_[j] - fill_v_[k]);
    if (j < n_) {
      const Item& it = items_[order_[j]];
      bound += it.c * static_cast<double>(target - fill_w_[j]) / static_cast<double>(it.w[main_]);
    }
    if (use_lagrangian_) {
      // Weak duality with the root LP's multipliers, valid for any y >= 0.
      double lag = s.v - low_v_[k] + lag_tail_[k];
      for (int r = 0; r < 2; ++r) {
        lag += y_[r] * static_cast<double>(static_cast<Int128>(cap_[r]) - s.w[r] + low_w_[r][k]);
      }
      bound = std::min(bound, lag);
    }
    return bound;
  }

  std::vector<State> Expand(int k) const {
    const std::vector<State>& prev = stages_[k];
    const Item& it = items_[order_[k]];
    const int lo = it.cands.front();
    std::vector<State> next;
    for (int32_t s = 0; s < static_cast<int32_t>(prev.size()); ++s) {
      for (int ci = 0; ci < static_cast<int>(it.cands.size()); ++ci) {
        const int delta = it.cands[ci] - lo;
        State t;
        bool fits = true;
        for (int r = 0; r < 2; ++r) {
          t.w[r] = prev[s].w[r] + it.w[r] * delta;
          if (active_[r] && t.w[r] > cap_[r]) fits = false;
        }
        if (!fits) break;  // Candidates ascend: the rest are heavier still.
        t.v = prev[s].v + it.c * delta;
        t.parent = s;
        t.cand = ci;
        if (Bound(k + 1, t) <= threshold_) continue;
        next.push_back(t);
        if (next.size() > internal::kMaxExpanded) return next;  // The caller reports the overflow.
      }
    }
    return next;
  }

  // Drops dominated states: sorted by the main row, a state survives only if no earlier
  // state uses no more of the other row and is worth at least as much (prefix maximum
  // over the other row's use, in a Fenwick tree).
  void Filter(std::vector<State>* states) const {
    const int other = 1 - main_;
    std::stable_sort(states->begin(), states->end(), [&](const State& a, const State& b) {
      if (a.w[main_] != b.w[main_]) return a.w[main_] < b.w[main_];
      if (a.w[other] != b.w[other]) return a.w[other] < b.w[other];
      return a.v > b.v;
    });
    std::vector<int64_t> keys;
    for (const State& s : *states) keys.push_back(s.w[other]);
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    std::vector<double> tree(keys.size() + 1, -std::numeric_limits<double>::infinity());
    size_t kept = 0;
    for (const State& s : *states) {
      const size_t pos = std::lower_bound(keys.begin(), keys.end(), s.w[other]) - keys.begin() + 1;
      double best = -std::numeric_limits<double>::infinity();
      for (size_t i = pos; i > 0; i -= i & (~i + 1)) best = std::max(best, tree[i]);
      if (best >= s.v) continue;
      for (size_t i = pos; i < tree.size(); i += i & (~i + 1)) tree[i] = std::max(tree[i], s.v);
      (*states)[kept++] = s;
    }
    states->resize(kept);
  }

  const std::vector<Item>& items_;
  int n_ = 0;
  bool active_[2] = {false, false};
  int64_t cap_[2] = {0, 0};
  int main_ = kSizeRow;
  std::vector<int> order_;
  std::vector<Int128> fill_w_;
  std::vector<double> fill_v_;
  bool use_lagrangian_ = false;
  double y_[2] = {0, 0};
  std::vector<double> lag_tail_, low_v_;
  std::vector<Int128> low_w_[2];
  std::vector<std::vector<State>> stages_;
  std::vector<int> best_bits_;
  double best_value_ = 0;
  double threshold_ = 0;
  int64_t states_ = 0;
};

// Rounds a relaxed point down to candidates, then raises layers (best value per unit of
// the main row first) while everything fits: a feasible start, checked exactly.
std::vector<int> RoundAndFill(const std::vector<Item>& items, const bool active[2],
                              const int64_t cap[2], const std::vector<double>& x) {
  const int n = static_cast<int>(items.size());
  const int main = active[kSizeRow] ? kSizeRow : kBopsRow;
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return items[a].c * static_cast<double>(items[b].w[main]) >
           items[b].c * static_cast<double>(items[a].w[main]);
  });
  std::vector<int> bits(n);
  Int128 used[2] = {0, 0};
  for (int k = 0; k < n; ++k) {
    bits[k] = items[k].cands.front();
    for (int r = 0; r < 2; ++r) used[r] += static_cast<Int128>(items[k].w[r]) * bits[k];
  }
  auto raise = [&](int k, double limit) {
    for (auto c = items[k].cands.rbegin(); c != items[k].cands.rend() && *c > bits[k]; ++c) {
      if (*c > limit + kIntegralTol) continue;
      Int128 next[2];
      bool fits = true;
      for (int r = 0; r < 2; ++r) {
        next[r] = used[r] + static_cast<Int128>(items[k].w[r]) * (*c - bits[k]);
        if (active[r] && next[r] > cap[r]) fits = false;
      }
      if (!fits) continue;
      used[0] = next[0];
      used[1] = next[1];
      bits[k] = *c;
      return;
    }
  };
  for (int k : order) raise(k, x[k]);
  for (int k : order) raise(k, std::numeric_limits<double>::infinity());
  return bits;
}

absl::Status Validate(const AllocationProblem& problem) {
  if (problem.layers.empty()) return absl::InvalidArgumentError("bit allocation: no layers");
  if (!problem.size_budget_bytes && !problem.bops_budget) {
    return absl::InvalidArgumentError("bit allocation: give a size budget, a BOPs budget or both");
  }
  if (problem.size_budget_bytes && *problem.size_budget_bytes < 0) {
    return absl::InvalidArgumentError("bit allocation: the size budget is negative");
  }
  if (problem.bops_budget && *problem.bops_budget < 0) {
    return absl::InvalidArgumentError("bit allocation: the BOPs budget is negative");
  }
  if (problem.other_bytes < 0) {
    return absl::InvalidArgumentError("bit allocation: other_bytes is negative");
  }
  Int128 max_bits = 0, max_bops = 0;
  for (size_t i = 0; i < problem.layers.size(); ++i) {
    const AllocationLayer& layer = problem.layers[i];
    if (layer.candidates.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bit allocation: layer %d has no candidate bit-widths", i));
    }
    for (size_t j = 0; j < layer.candidates.size(); ++j) {
      const int b = layer.candidates[j];
      if (b < 1 || b > 16 || (j > 0 && b <= layer.candidates[j - 1])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "bit allocation: layer %d candidates must be strictly ascending within 1..16", i));
      }
    }
    if (layer.params < 0 || layer.macs < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bit allocation: layer %d has negative params or MACs", i));
    }
    if (layer.act_bits < 1 || layer.act_bits > 32) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bit allocation: layer %d activation bits must be in 1..32", i));
    }
    if (!std::isfinite(layer.coefficient)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bit allocation: layer %d coefficient is not finite", i));
    }
    if (!layer.values.empty() && layer.values.size() != layer.candidates.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bit allocation: layer %d has %d values for %d candidates", i,
                          layer.values.size(), layer.candidates.size()));
    }
    for (double v : layer.values) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("bit allocation: layer %d has a value that is not finite", i));
      }
    }
    max_bits += static_cast<Int128>(layer.params) * 16;
    max_bops += static_cast<Int128>(layer.macs) * layer.act_bits * 16;
  }
  // Sums below are in int64; refuse models whose totals could not be represented.
  constexpr Int128 kLimit = std::numeric_limits<int64_t>::max() / 16;
  if (max_bits > kLimit || max_bops > kLimit || problem.other_bytes > kLimit ||
      problem.size_budget_bytes.value_or(0) > kLimit) {
    return absl::InvalidArgumentError("bit allocation: params, MACs or budget too large");
  }
  return absl::OkStatus();
}

// Fills size and BOPs, and refuses (as a bug) a result over a budget.
absl::StatusOr<Allocation> Checked(const AllocationProblem& problem, Allocation result) {
  result.size_bytes = AllocationSizeBytes(problem, result.bits);
  result.bops = AllocationBops(problem, result.bits);
  if ((problem.size_budget_bytes && result.size_bytes > *problem.size_budget_bytes) ||
      (problem.bops_budget && result.bops > *problem.bops_budget)) {
    return absl::InternalError("bit allocation: result over budget (a bug)");
  }
  return result;
}

int64_t WeightBits(const AllocationProblem& problem, const std::vector<int>& bits) {
  int64_t total = 0;
  for (size_t i = 0; i < problem.layers.size(); ++i) total += problem.layers[i].params * bits[i];
  return total;
}

}  // namespace

int64_t AllocationSizeBytes(const AllocationProblem& problem, const std::vector<int>& bits) {
  return (WeightBits(problem, bits) + 7) / 8 + problem.other_bytes;
}

int64_t AllocationBops(const AllocationProblem& problem, const std::vector<int>& bits) {
  int64_t total = 0;
  for (size_t i = 0; i < problem.layers.size(); ++i) {
    const AllocationLayer& layer = problem.layers[i];
    total += layer.macs * layer.act_bits * bits[i];
  }
  return total;
}

absl::Status internal::TooManyStates() {
  return absl::ResourceExhaustedError(absl::StrFormat(
      "bit allocation: the exact search exceeded %d states without proving the optimum; no "
      "allocation is returned rather than a possibly non-optimal one",
      internal::kMaxStates));
}

absl::StatusOr<Allocation> SolveAllocation(const AllocationProblem& problem) {
  if (absl::Status status = Validate(problem); !status.ok()) return status;
  const size_t num_layers = problem.layers.size();

  std::vector<int> smallest(num_layers);
  for (size_t i = 0; i < num_layers; ++i) smallest[i] = problem.layers[i].candidates.front();
  const int64_t min_size = AllocationSizeBytes(problem, smallest);
  const int64_t min_bops = AllocationBops(problem, smallest);
  const bool size_short = problem.size_budget_bytes && min_size > *problem.size_budget_bytes;
  const bool bops_short = problem.bops_budget && min_bops > *problem.bops_budget;
  if (size_short || bops_short) {
    std::string msg = absl::StrFormat(
        "the budget cannot be met: with the given candidate bit-widths and pins the smallest "
        "reachable size is %d bytes (%s) and the smallest reachable BOPs is %d (%.4g G)",
        min_size, Mib(min_size), min_bops, min_bops / 1e9);
    if (problem.size_budget_bytes) {
      absl::StrAppendFormat(&msg, "; size budget asked: %d bytes (%s)", *problem.size_budget_bytes,
                            Mib(*problem.size_budget_bytes));
    }
    if (problem.bops_budget) {
      absl::StrAppendFormat(&msg, "; BOPs budget asked: %d (%.4g G)", *problem.bops_budget,
                            *problem.bops_budget / 1e9);
    }
    return JobFailure(absl::StatusCode::kFailedPrecondition, reason::kInfeasibleBudget, msg);
  }
  if (std::any_of(problem.layers.begin(), problem.layers.end(),
                  [](const AllocationLayer& layer) { return !layer.values.empty(); })) {
    absl::StatusOr<Allocation> result = internal::SolveChoiceAllocation(problem);
    if (!result.ok()) return result.status();
    return Checked(problem, *std::move(result));
  }

  // Capacities in the rows' own units: the size row in bits, so that
  // sum params*b <= 8*(budget - other) is exactly ceil(sum/8) + other <= budget.
  const bool active[2] = {problem.size_budget_bytes.has_value(), problem.bops_budget.has_value()};
  int64_t cap[2] = {active[0] ? 8 * (*problem.size_budget_bytes - problem.other_bytes) : 0,
                    active[1] ? *problem.bops_budget : 0};

  // Layers with one candidate are constants; a layer with a coefficient <= 0 never gains
  // from more bits, so its smallest candidate is optimal (and the deterministic choice).
  Allocation result;
  result.bits = smallest;
  std::vector<Item> items;
  double constant = 0;
  for (size_t i = 0; i < num_layers; ++i) {
    const AllocationLayer& layer = problem.layers[i];
    const int64_t w[2] = {layer.params, layer.macs * layer.act_bits};
    if (layer.candidates.size() == 1 || layer.coefficient <= 0) {
      constant += layer.coefficient * smallest[i];
      for (int r = 0; r < 2; ++r) cap[r] -= w[r] * smallest[i];
      continue;
    }
    Item item;
    item.layer = static_cast<int>(i);
    item.cands = layer.candidates;
    item.w[0] = w[0];
    item.w[1] = w[1];
    item.c = layer.coefficient;
    items.push_back(std::move(item));
  }

  if (items.empty()) {
    result.objective = result.lp_bound = constant;
  } else {
    std::vector<int> layer_of;
    for (const Item& item : items) layer_of.push_back(item.layer);
    ClpRelaxation clp(items, active, cap);
    std::vector<double> lo, hi, x;
    for (const Item& item : items) {
      lo.push_back(item.cands.front());
      hi.push_back(item.cands.back());
    }
    if (!clp.Solve(lo, hi)) {
      return absl::InternalError("bit allocation: CLP did not solve the LP relaxation");
    }
    double lp = 0;
    for (size_t k = 0; k < items.size(); ++k) {
      x.push_back(std::clamp(clp.x()[k], lo[k], hi[k]));
      lp += items[k].c * x.back();
    }
    const double y[2] = {clp.Multiplier(kSizeRow), clp.Multiplier(kBopsRow)};
    ExactSearch search(items, active, cap, y);
    if (absl::Status status = search.Run(RoundAndFill(items, active, cap, x)); !status.ok()) {
      return status;
    }
    const std::vector<int> bits = search.best_bits();
    for (size_t k = 0; k < bits.size(); ++k) result.bits[layer_of[k]] = bits[k];
    result.nodes = search.states();
    double objective = 0;
    for (size_t i = 0; i < num_layers; ++i)
      objective += problem.layers[i].coefficient * result.bits[i];
    result.objective = objective;
    // Mathematically the relaxation is never below the integer optimum; CLP's tolerances
    // can leave it a hair under, which would read as a contradiction in the report.
    result.lp_bound = std::max(constant + lp, objective);
  }
  return Checked(problem, std::move(result));
}

absl::StatusOr<std::vector<FrontierPoint>> SolveFrontier(const AllocationProblem& problem,
                                                         int points) {
  if (points < 2) return absl::InvalidArgumentError("bit allocation: a frontier needs >= 2 points");
  AllocationProblem p = problem;
  p.size_budget_bytes = 0;  // Replaced per point; set so that a BOPs-less problem validates.
  if (absl::Status status = Validate(p); !status.ok()) return status;
  std::vector<int> lo, hi;
  for (const AllocationLayer& layer : p.layers) {
    lo.push_back(layer.candidates.front());
    hi.push_back(layer.candidates.back());
  }
  const int64_t min_size = AllocationSizeBytes(p, lo), max_size = AllocationSizeBytes(p, hi);
  // (Both rows grow with the bits, so all-lowest also has the least BOPs: in fact either
  // every point meets the BOPs budget or none does.)
  std::vector<FrontierPoint> frontier;
  absl::Status infeasible;
  for (int i = 0; i < points; ++i) {
    const int64_t budget =
        min_size +
        static_cast<int64_t>(static_cast<Int128>(max_size - min_size) * i / (points - 1));
    p.size_budget_bytes = budget;
    absl::StatusOr<Allocation> a = SolveAllocation(p);
    if (!a.ok()) {
      if (ReasonOf(a.status()) != reason::kInfeasibleBudget) return a.status();
      infeasible = a.status();
      continue;
    }
    // A larger budget admits the previous optimum; should rounding inside the search leave
    // this one a hair below it, keep the previous allocation so the frontier is monotone.
    if (!frontier.empty() && a->objective < frontier.back().allocation.objective) {
      const double lp_bound = std::max(a->lp_bound, frontier.back().allocation.objective);
      *a = frontier.back().allocation;
      a->lp_bound = lp_bound;
    }
    frontier.push_back({budget, *std::move(a)});
  }
  if (frontier.empty()) return infeasible;
  return frontier;
}

}  // namespace ompq::engine
