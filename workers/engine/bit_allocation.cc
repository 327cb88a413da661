// Exact bit allocation: the LP relaxation with CLP, then depth-first branch and bound.
//
// Structure of the program: every constraint row has non-negative coefficients, so a node's
// relaxation is feasible exactly when all layers at their lowest allowed bits fit, and with
// one active row it is a fractional knapsack solved greedily in O(L). With both rows the
// node relaxation is solved by CLP (warm-started dual simplex) after cheaper bounds fail to
// prune. Feasibility of every integer solution is checked in integer arithmetic, so a
// returned allocation never exceeds a budget by even one bit.
#include "workers/engine/bit_allocation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <tuple>
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
// Nodes explored before giving up with an error (never a possibly worse answer).
constexpr int64_t kMaxNodes = 2'000'000;
// A node is closed when its bound exceeds the incumbent by less than this (relative):
// bounds carry floating rounding, and such a node could not improve the answer visibly.
constexpr double kRelativeGap = 1e-12;
// An LP value this close to a candidate counts as that candidate (CLP's tolerances).
constexpr double kIntegralTol = 1e-9;

/// A layer whose bits are still to be chosen.
struct Item {
  int layer = 0;
  std::vector<int> cands;
  int64_t w[2] = {0, 0};  // Row coefficients per weight bit: params (size), macs*act (BOPs).
  double c = 0;
};

/// Per-item candidate index range [lo, hi] of a branch-and-bound node.
struct Box {
  std::vector<int> lo, hi;
};

struct NodeLp {
  bool feasible = false;
  double bound = 0;        // Valid upper bound on the node's integer optimum.
  std::vector<double> x;   // A relaxed solution to branch on.
  bool x_optimal = false;  // Whether x attains `bound` (then it may be rounded and kept).
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
    model_.loadProblem(n, static_cast<int>(rows.size()), start.data(), index.data(),
                       value.data(), lo.data(), hi.data(), obj.data(), row_lo.data(),
                       row_hi.data());
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

class BranchAndBound {
 public:
  BranchAndBound(std::vector<Item> items, const bool active[2], const int64_t cap[2])
      : items_(std::move(items)), clp_(items_, active, cap) {
    n_ = static_cast<int>(items_.size());
    for (int r = 0; r < 2; ++r) {
      active_[r] = active[r];
      cap_[r] = cap[r];
      order_[r] = EfficiencyOrder([&](const Item& it) { return static_cast<double>(it.w[r]); });
    }
    // Fill order for the rounding heuristic: efficiency against both rows' capacities.
    fill_order_ = EfficiencyOrder([&](const Item& it) {
      double use = 0;
      for (int r = 0; r < 2; ++r) {
        if (active_[r]) use += static_cast<double>(it.w[r]) / std::max<int64_t>(cap_[r], 1);
      }
      return use;
    });
    BuildSymmetryGroups();
  }

  /// The LP optimum at the root (CLP), for the report.
  double RootLpBound() {
    Box box = RootBox();
    std::vector<double> lo(n_), hi(n_);
    for (int k = 0; k < n_; ++k) {
      lo[k] = items_[k].cands[box.lo[k]];
      hi[k] = items_[k].cands[box.hi[k]];
    }
    double value = 0;
    if (clp_.Solve(lo, hi)) {
      for (int k = 0; k < n_; ++k) value += items_[k].c * clp_.x()[k];
      for (int r = 0; r < 2; ++r) root_multiplier_[r] = clp_.Multiplier(r);
      have_root_multipliers_ = true;
    } else {
      // Not expected for a problem this small; fall back to the greedy bound.
      value = Evaluate(box).bound;
    }
    return value;
  }

  /// Runs the search; the optimum is then in best_bits().
  absl::Status Run() {
    Box root = RootBox();
    Dfs(root);
    if (nodes_ > kMaxNodes) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "bit allocation: branch and bound stopped after %d nodes without proving the "
          "optimum; no allocation is returned rather than a possibly non-optimal one",
          kMaxNodes));
    }
    if (best_.empty()) return absl::InternalError("bit allocation: no feasible allocation found");
    return absl::OkStatus();
  }

  std::vector<int> best_bits() const {
    std::vector<int> bits(n_);
    for (int k = 0; k < n_; ++k) bits[k] = items_[k].cands[best_[k]];
    return bits;
  }
  int64_t nodes() const { return nodes_; }

 private:
  template <typename WeightFn>
  std::vector<int> EfficiencyOrder(WeightFn weight) const {
    std::vector<int> order(n_);
    std::iota(order.begin(), order.end(), 0);
    // Best value per unit of resource first; ties by layer order (keeps it deterministic
    // and agrees with the symmetry breaking below).
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return items_[a].c * weight(items_[b]) > items_[b].c * weight(items_[a]);
    });
    return order;
  }

  // Layers identical in every respect are interchangeable; requiring non-increasing bits
  // along each such group removes equivalent branches (repeated blocks with equal
  // coefficients would otherwise multiply the tree).
  void BuildSymmetryGroups() {
    std::map<std::tuple<int64_t, int64_t, std::vector<int>, double>, std::vector<int>> groups;
    for (int k = 0; k < n_; ++k) {
      const Item& it = items_[k];
      groups[{it.w[0], it.w[1], it.cands, it.c}].push_back(k);
    }
    for (auto& [key, members] : groups) {
      if (members.size() > 1) groups_.push_back(members);
    }
  }

  // Propagates the group ordering into the box; false when the box became empty.
  bool Propagate(Box& box) const {
    for (const std::vector<int>& g : groups_) {
      for (size_t j = 1; j < g.size(); ++j) box.hi[g[j]] = std::min(box.hi[g[j]], box.hi[g[j - 1]]);
      for (size_t j = g.size() - 1; j > 0; --j) {
        box.lo[g[j - 1]] = std::max(box.lo[g[j - 1]], box.lo[g[j]]);
      }
      for (int k : g) {
        if (box.lo[k] > box.hi[k]) return false;
      }
    }
    return true;
  }

  Box RootBox() const {
    Box box;
    box.lo.assign(n_, 0);
    box.hi.resize(n_);
    for (int k = 0; k < n_; ++k) box.hi[k] = static_cast<int>(items_[k].cands.size()) - 1;
    return box;
  }

  int Bits(int k, int idx) const { return items_[k].cands[idx]; }

  bool Fits(const Int128 used[2]) const {
    for (int r = 0; r < 2; ++r) {
      if (active_[r] && used[r] > cap_[r]) return false;
    }
    return true;
  }

  // Fractional knapsack on row r alone: the exact LP optimum when r is the only row.
  double Greedy(int r, const Box& box, std::vector<double>* x) const {
    Int128 used = 0;
    double value = 0;
    for (int k = 0; k < n_; ++k) {
      const int b = Bits(k, box.lo[k]);
      used += static_cast<Int128>(items_[k].w[r]) * b;
      value += items_[k].c * b;
      (*x)[k] = b;
    }
    Int128 rem = cap_[r] - used;  // >= 0: the caller checked feasibility.
    for (int k : order_[r]) {
      const int span = Bits(k, box.hi[k]) - Bits(k, box.lo[k]);
      if (span == 0) continue;
      const Int128 need = static_cast<Int128>(items_[k].w[r]) * span;
      if (need <= rem) {
        rem -= need;
        value += items_[k].c * span;
        (*x)[k] = Bits(k, box.hi[k]);
      } else {
        const double part = static_cast<double>(rem) / static_cast<double>(items_[k].w[r]);
        value += items_[k].c * part;
        (*x)[k] += part;
        break;
      }
    }
    return value;
  }

  // Weak duality: for multipliers y >= 0, sum_r y_r cap_r + sum_k max_b (c_k - y.w_k) b
  // bounds the node's LP from above whatever y is, so it is safe with CLP's tolerances.
  double Lagrangian(const Box& box, const double y[2]) const {
    double value = 0;
    for (int r = 0; r < 2; ++r) {
      if (active_[r]) value += y[r] * static_cast<double>(cap_[r]);
    }
    for (int k = 0; k < n_; ++k) {
      double reduced = items_[k].c;
      for (int r = 0; r < 2; ++r) {
        if (active_[r]) reduced -= y[r] * static_cast<double>(items_[k].w[r]);
      }
      value += reduced * (reduced > 0 ? Bits(k, box.hi[k]) : Bits(k, box.lo[k]));
    }
    return value;
  }

  // Row usage of a fractional solution, to see whether one row's greedy optimum already
  // satisfies the other row.
  bool FitsRow(int r, const std::vector<double>& x) const {
    long double used = 0;
    for (int k = 0; k < n_; ++k) used += static_cast<long double>(items_[k].w[r]) * x[k];
    return used <= static_cast<long double>(cap_[r]);
  }

  NodeLp Evaluate(const Box& box) {
    NodeLp lp;
    Int128 used[2] = {0, 0};
    for (int k = 0; k < n_; ++k) {
      for (int r = 0; r < 2; ++r) used[r] += static_cast<Int128>(items_[k].w[r]) * Bits(k, box.lo[k]);
    }
    // Rows have non-negative coefficients: the lowest bits everywhere are the cheapest point.
    if (!Fits(used)) return lp;
    lp.feasible = true;
    lp.x.assign(n_, 0);
    if (!(active_[kSizeRow] && active_[kBopsRow])) {
      lp.bound = Greedy(active_[kSizeRow] ? kSizeRow : kBopsRow, box, &lp.x);
      lp.x_optimal = true;
      return lp;
    }
    std::vector<double> x_bops(n_);
    const double g_size = Greedy(kSizeRow, box, &lp.x);
    const double g_bops = Greedy(kBopsRow, box, &x_bops);
    lp.bound = std::min(g_size, g_bops);
    if (have_root_multipliers_) lp.bound = std::min(lp.bound, Lagrangian(box, root_multiplier_));
    // One row's relaxed optimum satisfying the other row is the two-row optimum.
    if (g_size <= g_bops && FitsRow(kBopsRow, lp.x)) {
      lp.x_optimal = true;
      return lp;
    }
    if (g_bops <= g_size && FitsRow(kSizeRow, x_bops)) {
      lp.x = x_bops;
      lp.x_optimal = true;
      return lp;
    }
    if (Pruned(lp.bound)) return lp;
    std::vector<double> lo(n_), hi(n_);
    for (int k = 0; k < n_; ++k) {
      lo[k] = Bits(k, box.lo[k]);
      hi[k] = Bits(k, box.hi[k]);
    }
    ++clp_solves_;
    if (clp_.Solve(lo, hi)) {
      const double y[2] = {clp_.Multiplier(kSizeRow), clp_.Multiplier(kBopsRow)};
      lp.bound = std::min(lp.bound, Lagrangian(box, y));
      for (int k = 0; k < n_; ++k) lp.x[k] = std::clamp(clp_.x()[k], lo[k], hi[k]);
      lp.x_optimal = true;
    }
    // Otherwise branch on the size row's greedy point under the weaker valid bound.
    return lp;
  }

  bool Pruned(double bound) const {
    if (best_.empty()) return false;
    return bound <= best_value_ + kRelativeGap * std::max(std::fabs(best_value_), 1e-300);
  }

  // Rounds the relaxed point down to candidates, then raises layers while everything
  // fits: a feasible allocation in the node, checked exactly.
  void Heuristic(const Box& box, const std::vector<double>& x) {
    std::vector<int> idx(box.lo);
    Int128 used[2] = {0, 0};
    for (int k = 0; k < n_; ++k) {
      for (int r = 0; r < 2; ++r) used[r] += static_cast<Int128>(items_[k].w[r]) * Bits(k, idx[k]);
    }
    auto raise = [&](int k, double limit) {
      for (int j = box.hi[k]; j > idx[k]; --j) {
        if (Bits(k, j) > limit + kIntegralTol) continue;
        const int delta = Bits(k, j) - Bits(k, idx[k]);
        Int128 next[2];
        for (int r = 0; r < 2; ++r) next[r] = used[r] + static_cast<Int128>(items_[k].w[r]) * delta;
        if (!Fits(next)) continue;
        used[0] = next[0];
        used[1] = next[1];
        idx[k] = j;
        return;
      }
    };
    for (int k : fill_order_) raise(k, x[k]);
    for (int k : fill_order_) raise(k, std::numeric_limits<double>::infinity());
    double value = 0;
    for (int k = 0; k < n_; ++k) value += items_[k].c * Bits(k, idx[k]);
    if (best_.empty() || value > best_value_) {
      best_ = idx;
      best_value_ = value;
    }
  }

  void Dfs(const Box& box) {
    if (++nodes_ > kMaxNodes) return;
    NodeLp lp = Evaluate(box);
    if (!lp.feasible || Pruned(lp.bound)) return;
    Heuristic(box, lp.x);
    if (Pruned(lp.bound)) return;

    // Branch on the layer whose relaxed bits are farthest from a candidate.
    int branch = -1;
    double farthest = -1;
    for (int k = 0; k < n_; ++k) {
      if (box.lo[k] == box.hi[k]) continue;
      double dist = std::numeric_limits<double>::infinity();
      for (int j = box.lo[k]; j <= box.hi[k]; ++j) dist = std::min(dist, std::fabs(lp.x[k] - Bits(k, j)));
      if (dist > farthest) {
        farthest = dist;
        branch = k;
      }
    }
    if (branch < 0) return;  // Every layer fixed: the heuristic has evaluated the point.
    Box down = box, up = box;
    const double v = lp.x[branch];
    if (farthest > kIntegralTol) {
      // [lo, largest candidate below v] and [smallest candidate above v, hi].
      int j = box.lo[branch];
      while (j + 1 <= box.hi[branch] && Bits(branch, j + 1) < v) ++j;
      down.hi[branch] = j;
      up.lo[branch] = j + 1;
    } else {
      // The point is (numerically) integral yet not closed: split its domain around it.
      int j = box.lo[branch];
      while (j < box.hi[branch] && std::fabs(Bits(branch, j) - v) > kIntegralTol) ++j;
      if (j < box.hi[branch]) {
        down.hi[branch] = j;
        up.lo[branch] = j + 1;
      } else {
        down.hi[branch] = j - 1;
        up.lo[branch] = j;
      }
    }
    // More bits first: it follows the greedy and finds strong incumbents early.
    if (Propagate(up)) Dfs(up);
    if (nodes_ > kMaxNodes) return;
    if (Propagate(down)) Dfs(down);
  }

  std::vector<Item> items_;
  int n_ = 0;
  bool active_[2] = {false, false};
  int64_t cap_[2] = {0, 0};
  std::vector<int> order_[2];
  std::vector<int> fill_order_;
  std::vector<std::vector<int>> groups_;
  ClpRelaxation clp_;
  bool have_root_multipliers_ = false;
  double root_multiplier_[2] = {0, 0};
  std::vector<int> best_;  // Candidate indices of the incumbent.
  double best_value_ = 0;
  int64_t nodes_ = 0;
  int64_t clp_solves_ = 0;
};

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
    max_bits += static_cast<Int128>(layer.params) * 16;
    max_bops += static_cast<Int128>(layer.macs) * layer.act_bits * 16;
  }
  // Sums below are in int64; refuse models whose totals could not be represented.
  constexpr Int128 kLimit = std::numeric_limits<int64_t>::max() / 16;
  if (max_bits > kLimit || max_bops > kLimit || problem.other_bytes > kLimit) {
    return absl::InvalidArgumentError("bit allocation: params or MACs too large");
  }
  return absl::OkStatus();
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
    BranchAndBound search(std::move(items), active, cap);
    const double lp = search.RootLpBound();
    if (absl::Status status = search.Run(); !status.ok()) return status;
    const std::vector<int> bits = search.best_bits();
    for (size_t k = 0; k < bits.size(); ++k) result.bits[layer_of[k]] = bits[k];
    result.nodes = search.nodes();
    double objective = 0;
    for (size_t i = 0; i < num_layers; ++i) objective += problem.layers[i].coefficient * result.bits[i];
    result.objective = objective;
    // Mathematically the relaxation is never below the integer optimum; CLP's tolerances
    // can leave it a hair under, which would read as a contradiction in the report.
    result.lp_bound = std::max(constant + lp, objective);
  }
  result.size_bytes = AllocationSizeBytes(problem, result.bits);
  result.bops = AllocationBops(problem, result.bits);
  if ((problem.size_budget_bytes && result.size_bytes > *problem.size_budget_bytes) ||
      (problem.bops_budget && result.bops > *problem.bops_budget)) {
    return absl::InternalError("bit allocation: result over budget (a bug)");
  }
  return result;
}

}  // namespace ompq::engine
