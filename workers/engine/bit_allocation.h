// Exact per-layer weight bit allocation: LP relaxation with COIN-OR CLP (an upper bound),
// then the integer optimum over each layer's candidate set by an exact search (dynamic
// programming over the layers with dominance and LP bounds: a DP-based branch and bound).
//
// Per-candidate values turn it into a multiple-choice knapsack with up to two rows, solved
// in choice_allocation.cc by the same scheme (CLP relaxation, DP with dominance and bounds).
//
// Pure C++ (no LibTorch): the inputs are numbers the engine measured.
#ifndef OMPQ_WORKERS_ENGINE_BIT_ALLOCATION_H_
#define OMPQ_WORKERS_ENGINE_BIT_ALLOCATION_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace ompq::engine {

/// One quantizable layer as the program sees it.
struct AllocationLayer {
  int64_t params = 0;           // Weight elements.
  int64_t macs = 0;             // Multiply-accumulates for one input sample.
  int act_bits = 8;             // Activation bits feeding the layer (for BOPs).
  std::vector<int> candidates;  // Allowed weight bits, ascending; one value when pinned.
  double coefficient = 0;       // Objective coefficient c_i (> 0).
  // Objective value of each candidate (same length as `candidates`, finite, any sign), e.g.
  // -w_i * D_i(b). Empty: the linear value coefficient * b.
  std::vector<double> values;
};

/// maximise sum value_i(b_i)  s.t.  sum params_i b_i / 8 + other_bytes <= size budget,
///                                   sum macs_i b_i act_bits_i <= bops budget,
/// value_i(b) = c_i b unless the layer has `values`.
struct AllocationProblem {
  std::vector<AllocationLayer> layers;  // Execution order.
  int64_t other_bytes = 0;              // 4 bytes per non-quantized parameter element.
  std::optional<int64_t> size_budget_bytes;
  std::optional<int64_t> bops_budget;
};

/// The integer optimum.
struct Allocation {
  std::vector<int> bits;   // Per layer, same order as the problem.
  int64_t size_bytes = 0;  // ceil(sum params_i b_i / 8) + other_bytes; never over budget.
  int64_t bops = 0;        // sum macs_i b_i act_bits_i; never over budget.
  double objective = 0;    // sum value_i(b_i) at `bits` (the integer optimum).
  double lp_bound = 0;     // Optimum of the continuous relaxation (>= objective).
  int64_t nodes = 0;       // Search states kept by the exact search (diagnostics).
};

/// Size in bytes of an allocation (see Allocation::size_bytes).
int64_t AllocationSizeBytes(const AllocationProblem& problem, const std::vector<int>& bits);
/// BOPs of an allocation.
int64_t AllocationBops(const AllocationProblem& problem, const std::vector<int>& bits);

/// Solves the program exactly. INVALID_ARGUMENT for a malformed problem (no budget, empty
/// candidates); FAILED_PRECONDITION with reason INFEASIBLE_BUDGET when even the smallest
/// candidates exceed a budget, stating the smallest reachable size and BOPs.
/// A `values` vector of the wrong length or with a non-finite entry is INVALID_ARGUMENT.
absl::StatusOr<Allocation> SolveAllocation(const AllocationProblem& problem);

/// One budget of a size/objective frontier and its optimum.
struct FrontierPoint {
  int64_t size_budget_bytes = 0;
  Allocation allocation;
};

/// The optimal allocation at `points` (>= 2) size budgets spread evenly from the smallest
/// reachable size (every layer at its lowest candidate) to the size with every layer at its
/// highest candidate, both included (integer steps, rounded down). The problem's BOPs budget
/// (if any) still applies and its size budget is ignored. One point per budget, also when
/// the optimum repeats the previous point's bits, so the caller sees the grid. Budgets that
/// are INFEASIBLE_BUDGET are left out; that error is returned only when none is feasible.
absl::StatusOr<std::vector<FrontierPoint>> SolveFrontier(const AllocationProblem& problem,
                                                         int points);

namespace internal {
/// Both exact searches keep at most kMaxStates states over all stages (32 bytes each;
/// realistic models need well under a million) and make at most kMaxExpanded in one
/// stage; beyond that they give up with TooManyStates() rather than return an
/// allocation not proven optimal.
inline constexpr int64_t kMaxStates = 4'000'000;
inline constexpr size_t kMaxExpanded = 8'000'000;
absl::Status TooManyStates();

/// The multiple-choice solver (choice_allocation.cc) for a validated problem with at least
/// one `values` vector whose smallest allocation meets the budgets. Fills bits, objective,
/// lp_bound and nodes; the caller checks the budgets.
absl::StatusOr<Allocation> SolveChoiceAllocation(const AllocationProblem& problem);
}  // namespace internal

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_BIT_ALLOCATION_H_
