// Exact per-layer weight bit allocation: LP relaxation with COIN-OR CLP (an upper bound),
// then the integer optimum over each layer's candidate set by an exact search (dynamic
// programming over the layers with dominance and LP bounds: a DP-based branch and bound).
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
};

/// maximise sum c_i b_i  s.t.  sum params_i b_i / 8 + other_bytes <= size budget,
///                              sum macs_i b_i act_bits_i <= bops budget.
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
  double objective = 0;    // sum c_i b_i at `bits` (the integer optimum).
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
absl::StatusOr<Allocation> SolveAllocation(const AllocationProblem& problem);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_BIT_ALLOCATION_H_
