// Tests of the exact bit allocation with linear values (coefficient * bits) against
// independent exact methods: exhaustive enumeration on small problems, and a dynamic program
// over size on ResNet-18 and MobileNetV2 shaped problems. choice_allocation_test.cc covers
// per-candidate values and the size frontier; allocation_milp_check.py adds scipy's MILP.
#include "workers/engine/bit_allocation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "common/job_error.h"
#include "tests/allocation/allocation_checks.h"
#include "tests/allocation/allocation_problems.h"

namespace ompq::engine::allocation_test {
namespace {

TEST(BitAllocation, SizeFormulaRoundsUpToWholeBytes) {
  AllocationProblem p;
  p.layers = {Layer(3, 10, {2, 4}, 1.0), Layer(5, 7, {2, 4}, 1.0, 4)};
  p.other_bytes = 100;
  EXPECT_EQ(AllocationSizeBytes(p, {2, 2}), 100 + 2);  // 16 bits.
  EXPECT_EQ(AllocationSizeBytes(p, {4, 2}), 100 + 3);  // 22 bits -> 3 bytes.
  EXPECT_EQ(AllocationBops(p, {4, 2}), 10 * 8 * 4 + 7 * 4 * 2);
}

TEST(BitAllocation, RandomSmallProblemsMatchExhaustiveSearch) {
  std::mt19937_64 rng(20230901);
  int solved = 0;
  for (int trial = 0; trial < 600; ++trial) {
    AllocationProblem p;
    const int n = UniformInt(rng, 2, 8);
    // Tie-heavy objectives: all equal, or equal up to 1e-9 (a tiny beta).
    const bool equal_c = trial % 5 == 0, near_equal_c = trial % 5 == 1;
    int64_t combos = 1;
    for (int i = 0; i < n; ++i) {
      std::vector<int> cands;
      for (int b = 2; b <= 8; ++b) {
        if (Uniform(rng) < 0.5) cands.push_back(b);
      }
      if (cands.empty()) cands.push_back(UniformInt(rng, 2, 8));
      if (Uniform(rng) < 0.1) cands = {cands.back()};  // A pinned layer.
      while (combos * static_cast<int64_t>(cands.size()) > 200000) cands.pop_back();
      combos *= cands.size();
      // Some layers share params so that exact ties in size occur.
      const int64_t params = Uniform(rng) < 0.3 ? 64 : UniformInt(rng, 1, 5000);
      const int64_t macs = params * UniformInt(rng, 1, 50);
      const double c = equal_c        ? 1.0
                       : near_equal_c ? 1.0 + 1e-9 * Uniform(rng)
                                      : 0.05 + Uniform(rng);
      p.layers.push_back(Layer(params, macs, cands, c, Uniform(rng) < 0.5 ? 8 : 4));
    }
    p.other_bytes = UniformInt(rng, 0, 300);
    std::vector<int> lo(n), hi(n);
    for (int i = 0; i < n; ++i) {
      lo[i] = p.layers[i].candidates.front();
      hi[i] = p.layers[i].candidates.back();
    }
    const int mode = trial % 3;  // 0 size, 1 BOPs, 2 both.
    const double t = Uniform(rng);
    if (mode != 1) {
      const int64_t a = AllocationSizeBytes(p, lo), b = AllocationSizeBytes(p, hi);
      p.size_budget_bytes = a + static_cast<int64_t>(t * (b - a));
    }
    if (mode != 0) {
      const int64_t a = AllocationBops(p, lo), b = AllocationBops(p, hi);
      p.bops_budget = a + static_cast<int64_t>((mode == 2 ? Uniform(rng) : t) * (b - a));
    }
    const double optimum = Exhaustive(p);
    ASSERT_TRUE(std::isfinite(optimum));
    absl::StatusOr<Allocation> a = SolveAllocation(p);
    ASSERT_TRUE(a.ok()) << "trial " << trial << ": " << a.status();
    CheckSolution(p, *a, optimum);
    if (::testing::Test::HasFailure()) FAIL() << "trial " << trial;
    ++solved;
  }
  EXPECT_EQ(solved, 600);
}

TEST(BitAllocation, NonContiguousCandidatesOnlyUseThem) {
  // {4, 8} only: the LP wants 6 bits on the first layer; the optimum must pick 4 or 8.
  AllocationProblem p;
  p.layers = {Layer(1000, 0, {4, 8}, 1.0), Layer(1000, 0, {4, 8}, 0.5)};
  p.size_budget_bytes = (1000 * 6 + 1000 * 4) / 8;
  absl::StatusOr<Allocation> a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits, (std::vector<int>{4, 4}));
  EXPECT_DOUBLE_EQ(a->objective, 6.0);
  EXPECT_NEAR(a->lp_bound, 8.0, 1e-9);  // 6 * 1.0 + 4 * 0.5
  p.size_budget_bytes = (1000 * 8 + 1000 * 4) / 8;
  a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits, (std::vector<int>{8, 4}));
}

TEST(BitAllocation, PinsAreHeld) {
  AllocationProblem p;
  p.layers = {Layer(100, 100, {8}, 0.01), Layer(100, 100, {2, 3, 4, 5, 6, 7, 8}, 1.0),
              Layer(100, 100, {2, 3, 4, 5, 6, 7, 8}, 0.9), Layer(100, 100, {8}, 0.01)};
  p.size_budget_bytes = (100 * 8 * 2 + 100 * 8 + 100 * 2) / 8;
  absl::StatusOr<Allocation> a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits, (std::vector<int>{8, 8, 2, 8}));
}

TEST(BitAllocation, NeverOverBudgetByOneBit) {
  // Weight bits 7 * b: a budget of exactly 7 bytes (56 bits) allows b = 8; one byte less
  // (48 bits) must drop to 6 since 7 * 7 = 49 bits would round up to 7 bytes.
  AllocationProblem p;
  p.layers = {Layer(7, 1, {2, 3, 4, 5, 6, 7, 8}, 1.0)};
  p.other_bytes = 10;
  p.size_budget_bytes = 10 + 7;
  absl::StatusOr<Allocation> a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits[0], 8);
  EXPECT_EQ(a->size_bytes, 17);
  p.size_budget_bytes = 10 + 6;
  a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits[0], 6);  // 42 bits; 7 bits would be 49 bits = 6.125 bytes.
  EXPECT_EQ(a->size_bytes, 16);
  EXPECT_NEAR(a->lp_bound, 48.0 / 7.0, 1e-9);

  // BOPs: exactly at the budget is allowed, one over is not.
  p.size_budget_bytes.reset();
  p.bops_budget = 1 * 8 * 5;
  a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits[0], 5);
  p.bops_budget = 1 * 8 * 5 - 1;
  a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits[0], 4);
}

TEST(BitAllocation, InfeasibleBudgetStatesSmallestReachable) {
  AllocationProblem p;
  p.layers = {Layer(1 << 20, 1000, {8}, 1.0), Layer(1 << 20, 1000, {2, 4, 8}, 1.0)};
  p.other_bytes = 4096;
  // Smallest: (8 + 2) * 2^20 bits = 1310720 bytes, + 4096 = 1314816 bytes = 1.254 MiB.
  p.size_budget_bytes = 1000000;
  absl::StatusOr<Allocation> a = SolveAllocation(p);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(a.status()), reason::kInfeasibleBudget);
  const std::string msg(a.status().message());
  EXPECT_NE(msg.find("1314816 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1.254 MiB"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1000000 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("80000"), std::string::npos) << msg;  // BOPs: 1000 * 8 * (8 + 2).

  p.size_budget_bytes.reset();
  p.bops_budget = 79999;
  a = SolveAllocation(p);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(ReasonOf(a.status()), reason::kInfeasibleBudget);
  EXPECT_NE(std::string(a.status().message()).find("80000"), std::string::npos);
  p.bops_budget = 80000;
  EXPECT_TRUE(SolveAllocation(p).ok());
}

TEST(BitAllocation, MalformedProblemsAreRefused) {
  AllocationProblem p;
  p.layers = {Layer(10, 10, {2, 4}, 1.0)};
  EXPECT_EQ(SolveAllocation(p).status().code(), absl::StatusCode::kInvalidArgument);  // No budget.
  p.size_budget_bytes = 100;
  for (std::vector<int> bad : {std::vector<int>{}, {4, 2}, {2, 2}, {0, 4}, {4, 17}}) {
    p.layers[0].candidates = bad;
    EXPECT_EQ(SolveAllocation(p).status().code(), absl::StatusCode::kInvalidArgument);
  }
  p.layers[0].candidates = {2, 4};
  p.layers[0].coefficient = std::nan("");
  EXPECT_EQ(SolveAllocation(p).status().code(), absl::StatusCode::kInvalidArgument);
  p.layers[0].coefficient = 1.0;
  p.layers[0].params = -1;
  EXPECT_EQ(SolveAllocation(p).status().code(), absl::StatusCode::kInvalidArgument);
  p.layers[0].params = 10;
  EXPECT_TRUE(SolveAllocation(p).ok());
}

struct RealisticCase {
  const char* model;
  double beta;
  bool pin;
};

// Sizes between uniform 2-bit (plus the pins) and uniform 8-bit; size budget alone, checked
// against the dynamic program.
TEST(BitAllocation, RealisticSizeBudgetsMatchDynamicProgram) {
  const RealisticCase cases[] = {
      {"resnet18", -1, true},       {"resnet18", 1e-9, true},   {"resnet18", 100, true},
      {"resnet18", 1, false},       {"mobilenetv2", -1, true},  {"mobilenetv2", 1e-9, true},
      {"mobilenetv2", 1e-9, false}, {"mobilenetv2", 100, true}, {"mobilenetv2", 3, false},
  };
  for (const RealisticCase& rc : cases) {
    const bool resnet = std::string(rc.model) == "resnet18";
    AllocationProblem p =
        Realistic(resnet ? kResNet18 : kMobileNetV2,
                  resnet ? kResNet18OtherBytes : kMobileNetV2OtherBytes, rc.beta, rc.pin);
    std::vector<int> lo, hi;
    for (const AllocationLayer& l : p.layers) {
      lo.push_back(l.candidates.front());
      hi.push_back(l.candidates.back());
    }
    const int64_t min_size = AllocationSizeBytes(p, lo), max_size = AllocationSizeBytes(p, hi);
    for (double t : {0.03, 0.31, 0.5, 0.96}) {
      p.size_budget_bytes = min_size + static_cast<int64_t>(t * (max_size - min_size)) + 1;
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<Allocation> a = SolveAllocation(p);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ASSERT_TRUE(a.ok()) << rc.model << " beta " << rc.beta << ": " << a.status();
      std::cout << rc.model << " beta=" << rc.beta << " pin=" << rc.pin
                << " budget=" << *p.size_budget_bytes << " nodes=" << a->nodes
                << " time=" << seconds << "s"
                << " gap=" << (a->lp_bound - a->objective) << "\n";
      EXPECT_LT(seconds, 2.0);
      CheckSolution(p, *a, SizeDp(p));
      if (::testing::Test::HasFailure()) FAIL() << rc.model << " beta " << rc.beta << " t " << t;
    }
  }
}

// Size and BOPs together: feasible, bounded by the LP, and at least as good as the best
// allocation of the size-only optimum family that also meets the BOPs budget.
TEST(BitAllocation, RealisticSizeAndBopsBudgets) {
  for (const char* model : {"resnet18", "mobilenetv2"}) {
    for (double beta : {-1.0, 1e-9, 100.0}) {
      const bool resnet = std::string(model) == "resnet18";
      AllocationProblem p =
          Realistic(resnet ? kResNet18 : kMobileNetV2,
                    resnet ? kResNet18OtherBytes : kMobileNetV2OtherBytes, beta, true);
      std::vector<int> lo, hi;
      for (const AllocationLayer& l : p.layers) {
        lo.push_back(l.candidates.front());
        hi.push_back(l.candidates.back());
      }
      for (double t : {0.2, 0.5, 0.8}) {
        const int64_t smin = AllocationSizeBytes(p, lo), smax = AllocationSizeBytes(p, hi);
        const int64_t bmin = AllocationBops(p, lo), bmax = AllocationBops(p, hi);
        p.size_budget_bytes = smin + static_cast<int64_t>(t * (smax - smin));
        p.bops_budget = bmin + static_cast<int64_t>((1.1 - t) * 0.8 * (bmax - bmin));
        const auto start = std::chrono::steady_clock::now();
        absl::StatusOr<Allocation> a = SolveAllocation(p);
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        ASSERT_TRUE(a.ok()) << model << ": " << a.status();
        std::cout << model << " beta=" << beta << " size+bops t=" << t << " nodes=" << a->nodes
                  << " time=" << seconds << "s\n";
        EXPECT_LT(seconds, 2.0);
        EXPECT_TRUE(Feasible(p, a->bits));
        EXPECT_GE(a->lp_bound, a->objective);
        // The size-only optimum is an upper bound; the BOPs-only optimum too.
        AllocationProblem size_only = p;
        size_only.bops_budget.reset();
        absl::StatusOr<Allocation> s = SolveAllocation(size_only);
        ASSERT_TRUE(s.ok());
        EXPECT_LE(a->objective, s->objective * (1 + 1e-12));
        // When the size-only optimum happens to meet the BOPs budget, it is the optimum.
        if (s->bops <= *p.bops_budget) ExpectSameOptimum(s->objective, a->objective);
      }
    }
  }
}

// Both budgets on real layer shapes, small enough to enumerate: the first 8 layers of each
// model (first layer pinned), with equal, near-equal and spread coefficients.
TEST(BitAllocation, RealisticPrefixWithBothBudgetsMatchesExhaustiveSearch) {
  for (const char* model : {"resnet18", "mobilenetv2"}) {
    for (double beta : {-1.0, 1e-9, 1.0}) {
      const bool resnet = std::string(model) == "resnet18";
      std::vector<std::pair<int64_t, int64_t>> shapes(resnet ? kResNet18 : kMobileNetV2);
      shapes.resize(8);
      AllocationProblem p = Realistic(shapes, 4000, beta, false);
      p.layers[0].candidates = {8};
      std::vector<int> lo, hi;
      for (const AllocationLayer& l : p.layers) {
        lo.push_back(l.candidates.front());
        hi.push_back(l.candidates.back());
      }
      for (double t : {0.15, 0.4, 0.6, 0.85}) {
        const int64_t smin = AllocationSizeBytes(p, lo), smax = AllocationSizeBytes(p, hi);
        const int64_t bmin = AllocationBops(p, lo), bmax = AllocationBops(p, hi);
        p.size_budget_bytes = smin + static_cast<int64_t>(t * (smax - smin));
        p.bops_budget = bmin + static_cast<int64_t>((1 - t) * (bmax - bmin));
        absl::StatusOr<Allocation> a = SolveAllocation(p);
        ASSERT_TRUE(a.ok()) << a.status();
        CheckSolution(p, *a, Exhaustive(p));
        if (::testing::Test::HasFailure()) FAIL() << model << " beta " << beta << " t " << t;
      }
    }
  }
}

TEST(BitAllocation, DeterministicAcrossRuns) {
  AllocationProblem p = Realistic(kMobileNetV2, kMobileNetV2OtherBytes, -1, true);
  p.size_budget_bytes = 2000000;
  absl::StatusOr<Allocation> a = SolveAllocation(p), b = SolveAllocation(p);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->bits, b->bits);
}

}  // namespace
}  // namespace ompq::engine::allocation_test
