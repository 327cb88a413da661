// gtest checks shared by the allocation tests (allocation_problems.h has the problems).
#ifndef OMPQ_TESTS_ALLOCATION_ALLOCATION_CHECKS_H_
#define OMPQ_TESTS_ALLOCATION_ALLOCATION_CHECKS_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "tests/allocation/allocation_problems.h"
#include "workers/engine/bit_allocation.h"

namespace ompq::engine::allocation_test {

// Optima found by different methods agree up to the rounding of their sums.
inline void ExpectSameOptimum(double expected, double got) {
  EXPECT_NEAR(got, expected, 1e-9 * std::max(1.0, std::fabs(expected)));
}

// Checks a solution against the problem and an optimum found independently.
inline void CheckSolution(const AllocationProblem& problem, const Allocation& a, double optimum) {
  ASSERT_EQ(a.bits.size(), problem.layers.size());
  EXPECT_TRUE(Feasible(problem, a.bits));
  EXPECT_EQ(a.size_bytes, AllocationSizeBytes(problem, a.bits));
  EXPECT_EQ(a.bops, AllocationBops(problem, a.bits));
  if (problem.size_budget_bytes) {
    EXPECT_LE(a.size_bytes, *problem.size_budget_bytes);
  }
  if (problem.bops_budget) {
    EXPECT_LE(a.bops, *problem.bops_budget);
  }
  EXPECT_NEAR(a.objective, Objective(problem, a.bits), 1e-12 * std::fabs(a.objective));
  ExpectSameOptimum(optimum, a.objective);
  EXPECT_GE(a.lp_bound, a.objective);
}

}  // namespace ompq::engine::allocation_test

#endif  // OMPQ_TESTS_ALLOCATION_ALLOCATION_CHECKS_H_
