// The multiple-choice program: every free layer picks one candidate with its own value,
// under up to two rows (size in bits, BOPs). The scheme of the linear solver in
// bit_allocation.cc: CLP's relaxation (the reported bound, and multipliers for ordering and
// a surrogate row), then the exact optimum by dynamic programming over the layers with
// dominance and bounds, here run from both ends to meet in the middle. The relaxation and
// the bounds are in choice_bounds.cc; the searches are here.
//
// Candidates are pruned first: both rows grow with the bits, so a candidate worth no more
// than a smaller one is never needed (the smaller one is lighter in every row). After that
// the values strictly ascend along each layer's candidates, the lowest candidate is the
// lightest and the least valuable, and a partial allocation that fits with the remaining
// layers at their lowest stays completable, as in the linear case. Nothing assumes values
// monotone or concave in the bits; feasibility is checked in integers throughout.
#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "workers/engine/bit_allocation.h"
#include "workers/engine/choice_bounds.h"

namespace ompq::engine::internal {
namespace {

using Int128 = __int128;

// As in bit_allocation.cc: a state whose bound beats the incumbent by less than this
// (relative) could not improve the answer visibly, and bounds carry floating rounding.
constexpr double kRelativeGap = 1e-12;
constexpr size_t kBeam = 64;       // States per stage in the heuristic pass.
constexpr int kPolishRounds = 64;  // Exchanges tried by the local search, at most.

// Raises each item of `items` (from `first` on) to its best candidate that still fits,
// `pick[k - first]` being item k's candidate and `used` the row use.
void RaiseAll(const std::vector<Choice>& items, int first, const bool active[2],
              const int64_t room[2], int64_t used[2], int* pick) {
  for (int k = first; k < static_cast<int>(items.size()); ++k) {
    const Choice& c = items[k];
    int& at = pick[k - first];
    for (int j = static_cast<int>(c.cands.size()) - 1; j > at; --j) {
      const int64_t d[2] = {c.dw[0][j] - c.dw[0][at], c.dw[1][j] - c.dw[1][at]};
      if ((active[0] && used[0] + d[0] > room[0]) || (active[1] && used[1] + d[1] > room[1])) {
        continue;
      }
      used[0] += d[0];
      used[1] += d[1];
      at = j;
      break;
    }
  }
}

/// The best allocation found so far (candidate index per item, in processing order), shared
/// by the searches; `target` is a value the current pass aims for (see SolveExact).
struct Incumbent {
  std::vector<int> pick;
  double gain = 0;
  double target = -kInf;
  double Threshold() const { return std::max(gain + kRelativeGap * std::fabs(gain), target); }
};

// Dynamic programming over the items (in processing order, or reversed for the search from
// the other end) with dominance and bounds, as ExactSearch in bit_allocation.cc, one stage
// per Step. A state is a partial allocation: row use and gain over the lowest candidates.
// Bounds: the LP of the open items on each active row, and with two rows also on the
// surrogate row y0*size + y1*BOPs (y from the root LP: there it is the two-row LP, and
// deeper down it is at least as tight as the Lagrangian bound with the same y). After each
// stage the most promising state is completed greedily, which may improve the incumbent.
class ChoiceSearch {
 public:
  struct State {
    int64_t w[2] = {0, 0};  // Row use over the lowest candidates.
    double v = 0;           // Gain over the lowest candidates.
    double bound = kInf;    // Bound on the best completion.
    int32_t parent = -1;
    int32_t cand = 0;
  };

  ChoiceSearch(const std::vector<Choice>& items, bool reversed, const bool active[2],
               const int64_t room[2], const double y[2], Incumbent* incumbent)
      : items_(items), n_(static_cast<int>(items.size())), reversed_(reversed), inc_(incumbent) {
    if (reversed_) std::reverse(items_.begin(), items_.end());
    std::vector<std::array<double, 2>> rows;  // Per bound: its row, y0 * size + y1 * BOPs.
    for (int r = 0; r < 2; ++r) {
      active_[r] = active[r];
      room_[r] = room[r];
      if (active_[r]) rows.push_back({r == kSizeRow ? 1.0 : 0.0, r == kBopsRow ? 1.0 : 0.0});
      // Below this use of row r all open items fit at their highest (see Filter).
      slack_[r].assign(n_ + 1, room_[r]);
      for (int k = n_ - 1; k >= 0; --k) slack_[r][k] = slack_[r][k + 1] - items_[k].dw[r].back();
    }
    if (rows.size() == 2 && y[0] > 0 && y[1] > 0) rows.push_back({y[0], y[1]});
    for (const auto& row : rows) {
      std::vector<std::vector<double>> w(n_);
      for (int k = 0; k < n_; ++k) {
        for (size_t j = 0; j < items_[k].cands.size(); ++j) {
          w[k].push_back(row[0] * static_cast<double>(items_[k].dw[0][j]) +
                         row[1] * static_cast<double>(items_[k].dw[1][j]));
        }
      }
      rows_.push_back(row);
      root_bounds_.emplace_back(items_, w);
    }
  }

  /// Starts a pass from the root.
  void Begin() {
    bounds_ = root_bounds_;
    stages_.assign(1, {State{}});
    Complete(0, 0);
  }

  /// Decides the next item; `beam` > 0 keeps only that many states (a heuristic pass).
  absl::Status Step(size_t beam) {
    const int k = stage();
    for (RowBound& b : bounds_) b.Drop(k);
    std::vector<State> next = Expand(k);
    const bool overflow = next.size() > kMaxExpanded;
    if (!overflow) Filter(k + 1, &next);
    if (beam > 0 && next.size() > beam) {
      std::nth_element(next.begin(), next.begin() + beam, next.end(),
                       [](const State& a, const State& b) { return a.bound > b.bound; });
      next.resize(beam);
    }
    states_ += static_cast<int64_t>(next.size());
    if (overflow || states_ > kMaxStates) return TooManyStates();
    stages_.push_back(std::move(next));
    int top = 0;
    for (int s = 1; s < static_cast<int>(last().size()); ++s) {
      if (last()[s].bound > last()[top].bound) top = s;
    }
    if (!last().empty()) Complete(k + 1, top);
    return absl::OkStatus();
  }

  int stage() const { return static_cast<int>(stages_.size()) - 1; }
  const std::vector<State>& last() const { return stages_.back(); }
  int64_t states() const { return states_; }
  double RootBound() const { return Bound(State{}, root_bounds_); }

  /// Writes the choices along the parents of stages_[k][s] into the incumbent's pick.
  void Trace(int k, int s) {
    for (; k > 0; --k) {
      inc_->pick[Fwd(k - 1)] = stages_[k][s].cand;
      s = stages_[k][s].parent;
    }
  }

 private:
  int Fwd(int k) const { return reversed_ ? n_ - 1 - k : k; }

  // Completes stages_[k][s] greedily (hull pieces of the open items by efficiency on the
  // last bound's row, then each item raised as far as it fits); a better result becomes the
  // incumbent.
  void Complete(int k, int s) {
    const State& st = stages_[k][s];
    std::vector<int> pick(n_ - k, 0);
    int64_t used[2] = {st.w[0], st.w[1]};
    double v = st.v;
    auto raise = [&](int item, int to) {
      int& from = pick[item - k];
      int64_t next[2];
      for (int r = 0; r < 2; ++r) {
        next[r] = used[r] + items_[item].dw[r][to] - items_[item].dw[r][from];
        if (active_[r] && next[r] > room_[r]) return;
      }
      used[0] = next[0];
      used[1] = next[1];
      from = to;
    };
    for (const Segment& seg : bounds_.back().segments()) {
      if (pick[seg.item - k] == seg.from) raise(seg.item, seg.to);
    }
    RaiseAll(items_, k, active_, room_, used, pick.data());
    for (int item = k; item < n_; ++item) v += items_[item].gain[pick[item - k]];
    if (v <= inc_->gain) return;
    inc_->gain = v;
    Trace(k, s);
    for (int item = k; item < n_; ++item) inc_->pick[Fwd(item)] = pick[item - k];
  }

  // Bound on the best completion of a state (its open items are those left in `bounds`).
  double Bound(const State& s, const std::vector<RowBound>& bounds) const {
    double bound = kInf;
    for (size_t b = 0; b < bounds.size(); ++b) {
      double room = 0;
      for (int r = 0; r < 2; ++r) {
        if (rows_[b][r] != 0) room += rows_[b][r] * static_cast<double>(room_[r] - s.w[r]);
      }
      bound = std::min(bound, s.v + bounds[b].Bound(room));
    }
    return bound;
  }

  std::vector<State> Expand(int k) const {
    const std::vector<State>& prev = stages_[k];
    const Choice& it = items_[k];
    const double threshold = inc_->Threshold();
    std::vector<State> next;
    for (int32_t s = 0; s < static_cast<int32_t>(prev.size()); ++s) {
      for (int ci = 0; ci < static_cast<int>(it.cands.size()); ++ci) {
        State t;
        bool fits = true;
        for (int r = 0; r < 2; ++r) {
          t.w[r] = prev[s].w[r] + it.dw[r][ci];
          if (active_[r] && t.w[r] > room_[r]) fits = false;
        }
        if (!fits) break;  // Row use ascends with the candidate: the rest are heavier still.
        t.v = prev[s].v + it.gain[ci];
        t.parent = s;
        t.cand = ci;
        t.bound = Bound(t, bounds_);
        if (t.bound <= threshold) continue;
        next.push_back(t);
        if (next.size() > kMaxExpanded) return next;  // The caller reports the overflow.
      }
    }
    return next;
  }

  // Drops dominated states (as ExactSearch::Filter): a state goes when another is worth at
  // least as much and no heavier in either row, where a row use below slack_[r][k] (room
  // for the open items at their highest) compares as equal to it: such a row cannot bind
  // any completion, so using still less of it is worth nothing. Sorted by one row, a state
  // survives only if no earlier one is as good in the other row and in value (prefix
  // maximum in a Fenwick tree). The row use of an inactive row is zero throughout.
  void Filter(int k, std::vector<State>* states) const {
    const int main = active_[kSizeRow] ? kSizeRow : kBopsRow, other = 1 - main;
    auto key = [&](const State& s, int r) { return std::max(s.w[r], slack_[r][k]); };
    std::stable_sort(states->begin(), states->end(), [&](const State& a, const State& b) {
      if (key(a, main) != key(b, main)) return key(a, main) < key(b, main);
      if (key(a, other) != key(b, other)) return key(a, other) < key(b, other);
      return a.v > b.v;
    });
    std::vector<int64_t> keys;
    for (const State& s : *states) keys.push_back(key(s, other));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    std::vector<double> tree(keys.size() + 1, -kInf);
    size_t kept = 0;
    for (const State& s : *states) {
      const size_t pos =
          std::lower_bound(keys.begin(), keys.end(), key(s, other)) - keys.begin() + 1;
      double best = -kInf;
      for (size_t i = pos; i > 0; i -= i & (~i + 1)) best = std::max(best, tree[i]);
      if (best >= s.v) continue;
      for (size_t i = pos; i < tree.size(); i += i & (~i + 1)) tree[i] = std::max(tree[i], s.v);
      (*states)[kept++] = s;
    }
    states->resize(kept);
  }

  std::vector<Choice> items_;
  int n_ = 0;
  bool reversed_ = false;
  Incumbent* inc_;
  bool active_[2] = {false, false};
  int64_t room_[2] = {0, 0};
  std::vector<int64_t> slack_[2];  // Per stage.
  std::vector<std::array<double, 2>> rows_;
  std::vector<RowBound> root_bounds_, bounds_;
  std::vector<std::vector<State>> stages_;
  int64_t states_ = 0;
};

// Joins the last stages of a forward and a backward search that together decide every item:
// for each forward state the best backward state that fits beside it (sweep over size
// use, prefix maximum over BOPs use in a Fenwick tree).
void Meet(ChoiceSearch& fwd, ChoiceSearch& bwd, const bool active[2], const int64_t room[2],
          Incumbent* inc) {
  using State = ChoiceSearch::State;
  const std::vector<State>& f = fwd.last();
  const std::vector<State>& b = bwd.last();
  int64_t cap[2];
  for (int r = 0; r < 2; ++r) cap[r] = active[r] ? room[r] : std::numeric_limits<int64_t>::max();
  std::vector<int> fo(f.size()), bo(b.size());
  std::iota(fo.begin(), fo.end(), 0);
  std::iota(bo.begin(), bo.end(), 0);
  std::sort(fo.begin(), fo.end(), [&](int x, int y) { return f[x].w[0] > f[y].w[0]; });
  std::sort(bo.begin(), bo.end(), [&](int x, int y) { return b[x].w[0] < b[y].w[0]; });
  std::vector<int64_t> keys;
  for (const State& s : b) keys.push_back(s.w[1]);
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::vector<std::pair<double, int>> tree(keys.size() + 1, {-kInf, -1});
  double best = inc->gain;
  int best_f = -1, best_b = -1;
  size_t next = 0;
  for (int x : fo) {
    for (; next < bo.size() && b[bo[next]].w[0] <= cap[0] - f[x].w[0]; ++next) {
      const size_t pos =
          std::lower_bound(keys.begin(), keys.end(), b[bo[next]].w[1]) - keys.begin() + 1;
      for (size_t i = pos; i < tree.size(); i += i & (~i + 1)) {
        tree[i] = std::max(tree[i], {b[bo[next]].v, bo[next]});
      }
    }
    const size_t pos =
        std::upper_bound(keys.begin(), keys.end(), cap[1] - f[x].w[1]) - keys.begin();
    std::pair<double, int> top{-kInf, -1};
    for (size_t i = pos; i > 0; i -= i & (~i + 1)) top = std::max(top, tree[i]);
    if (top.second >= 0 && f[x].v + top.first > best) {
      best = f[x].v + top.first;
      best_f = x;
      best_b = top.second;
    }
  }
  if (best_f < 0) return;
  fwd.Trace(fwd.stage(), best_f);
  bwd.Trace(bwd.stage(), best_b);
  inc->gain = best;
}

// Improves the incumbent by local search: raise one item's candidate and make room by
// lowering others, cheapest value per freed room first (an ejection chain), where that
// gains. The LP-guided completions miss such trades when a heavy layer's step is a close
// call (one heavy layer up, dozens of light ones down); each miss costs the exact search
// many states, since it keeps every state whose bound beats the incumbent.
void Polish(const std::vector<Choice>& items, const bool active[2], const int64_t room[2],
            Incumbent* inc) {
  struct Move {
    int item, to;
    int64_t dw[2];
    double dv;
    double ratio;  // Value lost per unit of (scaled) room freed, for moves down.
  };
  const int n = static_cast<int>(items.size());
  std::vector<int>& pick = inc->pick;
  int64_t used[2] = {0, 0};
  for (int k = 0; k < n; ++k) {
    for (int r = 0; r < 2; ++r) used[r] += items[k].dw[r][pick[k]];
  }
  double scale[2];
  for (int r = 0; r < 2; ++r) {
    scale[r] = active[r] ? 1.0 / static_cast<double>(std::max<int64_t>(room[r], 1)) : 0.0;
  }
  auto fits = [&](int r, int64_t extra) { return !active[r] || used[r] + extra <= room[r]; };
  std::vector<int> mark(n, -1);
  for (int round = 0; round < kPolishRounds; ++round) {
    std::vector<Move> up, down;
    for (int k = 0; k < n; ++k) {
      const Choice& c = items[k];
      for (int j = 0; j < static_cast<int>(c.cands.size()); ++j) {
        const int at = pick[k];
        if (j == at) continue;
        Move m{
            k, j, {c.dw[0][j] - c.dw[0][at], c.dw[1][j] - c.dw[1][at]}, c.gain[j] - c.gain[at], 0};
        m.ratio = -m.dv / (-scale[0] * m.dw[0] - scale[1] * m.dw[1] + 1e-300);
        (j > at ? up : down).push_back(m);
      }
    }
    std::stable_sort(up.begin(), up.end(),
                     [](const Move& a, const Move& b) { return a.dv > b.dv; });
    std::stable_sort(down.begin(), down.end(),
                     [](const Move& a, const Move& b) { return a.ratio < b.ratio; });
    const double tol = kRelativeGap * std::fabs(inc->gain);
    std::vector<const Move*> chain;
    bool improved = false;
    for (size_t u = 0; u < up.size() && !improved; ++u) {
      int64_t extra[2] = {up[u].dw[0], up[u].dw[1]};
      double dv = up[u].dv;
      chain.assign(1, &up[u]);
      mark[up[u].item] = static_cast<int>(u);
      for (size_t d = 0; d < down.size() && dv > tol && !(fits(0, extra[0]) && fits(1, extra[1]));
           ++d) {
        const Move& e = down[d];
        if (mark[e.item] == static_cast<int>(u)) continue;
        if (!((!fits(0, extra[0]) && e.dw[0] < 0) || (!fits(1, extra[1]) && e.dw[1] < 0))) continue;
        mark[e.item] = static_cast<int>(u);
        chain.push_back(&e);
        dv += e.dv;
        for (int r = 0; r < 2; ++r) extra[r] += e.dw[r];
      }
      if (dv <= tol || !fits(0, extra[0]) || !fits(1, extra[1])) continue;
      improved = true;
      for (const Move* m : chain) pick[m->item] = m->to;
      for (int r = 0; r < 2; ++r) used[r] += extra[r];
    }
    std::fill(mark.begin(), mark.end(), -1);
    if (!improved) break;
    // The last item lowered may have freed more than needed.
    RaiseAll(items, 0, active, room, used, pick.data());
  }
  inc->gain = 0;
  for (int k = 0; k < n; ++k) inc->gain += items[k].gain[pick[k]];
}

// The optimum over `items` (processing order) under the rows `on`, into `inc`. A heuristic
// pass first: a beam with the close calls first (the beam settles them while the bounds
// still see every item), then local search. Then exact passes, each a forward search (the
// clear items first) and a backward search (the close calls first, bounded by the LP of
// the clear ones, which is tight), advancing whichever has fewer states until they meet.
// A pass aims at a target between the incumbent and the root bound; one that finds a
// solution at or above its target has proved it optimal (only states that could not reach
// it were dropped), and a high target keeps few states; otherwise the target drops.
absl::Status SolveExact(const std::vector<Choice>& items, const bool on[2], const int64_t room[2],
                        const double y[2], Incumbent* inc, int64_t* nodes) {
  const int n = static_cast<int>(items.size());
  inc->pick.assign(n, 0);
  inc->gain = 0;
  inc->target = -kInf;
  // (Each Step completes its best state: at the last stage that is the beam's best.)
  ChoiceSearch beam(items, true, on, room, y, inc);
  beam.Begin();
  while (beam.stage() < n && !beam.last().empty()) {
    if (absl::Status status = beam.Step(kBeam); !status.ok()) return status;
  }
  Polish(items, on, room, inc);
  *nodes += beam.states();

  ChoiceSearch fwd(items, false, on, room, y, inc), bwd(items, true, on, room, y, inc);
  const double ub = fwd.RootBound();
  for (double delta = (ub - inc->gain) / 64;; delta *= 4) {
    const bool plain = !(delta > 0) || ub - delta <= inc->gain;  // Also ends the loop.
    inc->target = plain ? -kInf : ub - delta;
    fwd.Begin();
    bwd.Begin();
    bool empty = false;
    while (!empty && fwd.stage() + bwd.stage() < n) {
      ChoiceSearch& side = fwd.last().size() <= bwd.last().size() ? fwd : bwd;
      if (absl::Status status = side.Step(0); !status.ok()) return status;
      empty = side.last().empty();  // Nothing can reach the threshold.
    }
    if (!empty) Meet(fwd, bwd, on, room, inc);
    if (plain || inc->gain >= inc->target) break;
  }
  *nodes += fwd.states() + bwd.states();
  return absl::OkStatus();
}

double ValueOf(const AllocationLayer& layer, size_t j) {
  return layer.values.empty() ? layer.coefficient * layer.candidates[j] : layer.values[j];
}

}  // namespace

absl::StatusOr<Allocation> SolveChoiceAllocation(const AllocationProblem& problem) {
  const size_t num_layers = problem.layers.size();
  const bool active[2] = {problem.size_budget_bytes.has_value(), problem.bops_budget.has_value()};
  // Room over the all-lowest allocation, in the rows' own units (the size row in bits, as in
  // SolveAllocation); the caller has checked that it is not negative.
  int64_t room[2] = {active[0] ? 8 * (*problem.size_budget_bytes - problem.other_bytes) : 0,
                     active[1] ? *problem.bops_budget : 0};
  Allocation result;
  double lowest_value = 0;  // Objective of the all-lowest allocation.
  std::vector<Choice> items;
  for (size_t i = 0; i < num_layers; ++i) {
    const AllocationLayer& layer = problem.layers[i];
    const int64_t w[2] = {layer.params, layer.macs * layer.act_bits};
    const int lo = layer.candidates.front();
    result.bits.push_back(lo);
    lowest_value += ValueOf(layer, 0);
    for (int r = 0; r < 2; ++r) room[r] -= w[r] * lo;
    Choice c;
    c.layer = static_cast<int>(i);
    double best = -kInf;
    for (size_t j = 0; j < layer.candidates.size(); ++j) {
      const double v = ValueOf(layer, j);
      if (v <= best) continue;  // A smaller candidate is worth as much and lighter.
      best = v;
      c.cands.push_back(layer.candidates[j]);
      c.gain.push_back(v - ValueOf(layer, 0));
      // An inactive row counts as zero, so that dominance compares the active rows only.
      for (int r = 0; r < 2; ++r) {
        c.dw[r].push_back(active[r] ? w[r] * (layer.candidates[j] - lo) : 0);
      }
    }
    if (c.cands.size() > 1) items.push_back(std::move(c));  // Else it stays at the lowest.
  }
  if (items.empty()) {
    result.objective = result.lp_bound = lowest_value;
    return result;
  }
  Relaxation lp;
  if (!SolveRelaxation(items, active, room, &lp)) {
    return absl::InternalError("bit allocation: CLP did not solve the LP relaxation");
  }
  // Processing order: items whose LP choice is clear (a large loss, at the root LP's
  // multipliers, for any other candidate) first, the close calls last. Ties by layer order.
  std::vector<double> margin;
  for (const Choice& c : items) {
    std::vector<double> reduced;
    for (size_t j = 0; j < c.cands.size(); ++j) {
      reduced.push_back(c.gain[j] - lp.y[0] * static_cast<double>(c.dw[0][j]) -
                        lp.y[1] * static_cast<double>(c.dw[1][j]));
    }
    std::partial_sort(reduced.begin(), reduced.begin() + 2, reduced.end(), std::greater<>());
    margin.push_back(reduced[0] - reduced[1]);
  }
  std::vector<int> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return margin[a] > margin[b]; });
  std::vector<Choice> sorted;
  for (int k : order) sorted.push_back(std::move(items[k]));

  Incumbent inc;
  bool solved = false;
  // With one row slack at the root LP (multiplier 0), the optimum under the other row alone
  // usually meets it too, and is then the optimum (a relaxation's optimum that is feasible).
  // One row is much cheaper to search: dominance compares one row use instead of two.
  if (active[0] && active[1] && (lp.y[0] == 0) != (lp.y[1] == 0)) {
    const int drop = lp.y[0] == 0 ? kSizeRow : kBopsRow;
    const bool one_row[2] = {drop != kSizeRow, drop != kBopsRow};
    std::vector<Choice> relaxed = sorted;
    for (Choice& c : relaxed) std::fill(c.dw[drop].begin(), c.dw[drop].end(), 0);
    if (absl::Status status = SolveExact(relaxed, one_row, room, lp.y, &inc, &result.nodes);
        !status.ok()) {
      return status;
    }
    Int128 use = 0;
    for (size_t k = 0; k < sorted.size(); ++k) use += sorted[k].dw[drop][inc.pick[k]];
    solved = use <= room[drop];
  }
  if (!solved) {
    if (absl::Status status = SolveExact(sorted, active, room, lp.y, &inc, &result.nodes);
        !status.ok()) {
      return status;
    }
  }
  double objective = 0;
  for (size_t k = 0; k < sorted.size(); ++k) {
    result.bits[sorted[k].layer] = sorted[k].cands[inc.pick[k]];
  }
  for (size_t i = 0; i < num_layers; ++i) {
    const AllocationLayer& layer = problem.layers[i];
    const size_t j =
        std::lower_bound(layer.candidates.begin(), layer.candidates.end(), result.bits[i]) -
        layer.candidates.begin();
    objective += ValueOf(layer, j);
  }
  result.objective = objective;
  // The relaxation is never below the integer optimum; CLP's tolerances can leave it a
  // hair under, which would read as a contradiction in the report.
  result.lp_bound = std::max(lowest_value + lp.gain, objective);
  return result;
}

}  // namespace ompq::engine::internal
