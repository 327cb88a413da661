// Tests of the exact bit allocation with per-candidate values (the multiple-choice
// program) and of the size frontier, against exhaustive enumeration, the dynamic program
// over size, and the linear path; allocation_milp_check.py adds scipy's MILP.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/job_error.h"
#include "tests/allocation/allocation_checks.h"
#include "tests/allocation/allocation_problems.h"
#include "workers/engine/bit_allocation.h"

namespace ompq::engine::allocation_test {
namespace {

// A small random problem with values on most layers; mode 0 size, 1 BOPs, 2 both.
AllocationProblem RandomChoiceProblem(std::mt19937_64& rng, int mode, int64_t max_combos) {
  AllocationProblem p;
  const int n = UniformInt(rng, 1, 7);
  const int kind = UniformInt(rng, 0, 3);
  int64_t combos = 1;
  for (int i = 0; i < n; ++i) {
    std::vector<int> cands;
    for (int b = 2; b <= 8; ++b) {
      if (Uniform(rng) < 0.6) cands.push_back(b);
    }
    if (cands.empty()) cands.push_back(UniformInt(rng, 2, 8));
    if (Uniform(rng) < 0.15) cands = {cands.front()};  // A pinned layer.
    while (combos * static_cast<int64_t>(cands.size()) > max_combos) cands.pop_back();
    combos *= static_cast<int64_t>(cands.size());
    const int64_t params = Uniform(rng) < 0.3 ? 64 : UniformInt(rng, 0, 3000);
    const int64_t macs = Uniform(rng) < 0.1 ? 0 : params * UniformInt(rng, 1, 40);
    AllocationLayer layer =
        Layer(params, macs, cands, 0.05 + Uniform(rng), Uniform(rng) < 0.5 ? 8 : 4);
    // Layer 0 always has values so the multiple-choice path runs; others mix kinds.
    layer.values = RandomValues(rng, layer, i > 0 && Uniform(rng) < 0.2 ? 4 : kind);
    p.layers.push_back(std::move(layer));
  }
  p.other_bytes = UniformInt(rng, 0, 300);
  std::vector<int> lo, hi;
  for (const AllocationLayer& l : p.layers) {
    lo.push_back(l.candidates.front());
    hi.push_back(l.candidates.back());
  }
  // Budgets anywhere between all-lowest and all-highest, the ends included.
  auto pick = [&](int64_t a, int64_t b) {
    const double t = Uniform(rng) < 0.1 ? 0.0 : Uniform(rng) < 0.1 ? 1.0 : Uniform(rng);
    return a + static_cast<int64_t>(t * static_cast<double>(b - a));
  };
  if (mode != 1) p.size_budget_bytes = pick(AllocationSizeBytes(p, lo), AllocationSizeBytes(p, hi));
  if (mode != 0) p.bops_budget = pick(AllocationBops(p, lo), AllocationBops(p, hi));
  return p;
}

TEST(ChoiceAllocation, RandomSmallProblemsMatchExhaustiveSearch) {
  std::mt19937_64 rng(20240611);
  for (int trial = 0; trial < 3000; ++trial) {
    const AllocationProblem p = RandomChoiceProblem(rng, trial % 3, 20000);
    const double optimum = Exhaustive(p);
    ASSERT_TRUE(std::isfinite(optimum));
    absl::StatusOr<Allocation> a = SolveAllocation(p);
    ASSERT_TRUE(a.ok()) << "trial " << trial << ": " << a.status();
    CheckSolution(p, *a, optimum);
    if (::testing::Test::HasFailure()) FAIL() << "trial " << trial;
  }
}

TEST(ChoiceAllocation, NonMonotoneNegativeAndPinnedValues) {
  AllocationProblem p;
  p.layers = {Layer(100, 100, {2, 4, 8}, 1.0), Layer(100, 100, {8}, 1.0),
              Layer(100, 100, {2, 3, 4}, 1.0)};
  p.layers[0].values = {0.0, 5.0, 3.0};     // 4 bits is best even with room for 8.
  p.layers[1].values = {-7.0};              // Pinned: its value still counts.
  p.layers[2].values = {-1.0, -1.0, -3.0};  // A tie: the lighter candidate.
  p.size_budget_bytes = 100 * 24 / 8;
  absl::StatusOr<Allocation> a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits, (std::vector<int>{4, 8, 2}));
  EXPECT_DOUBLE_EQ(a->objective, 5.0 - 7.0 - 1.0);
  EXPECT_NEAR(a->lp_bound, a->objective, 1e-9);
  // Room for 3 bits on layer 0 only: the LP mixes 2 and 4 bits; the optimum cannot.
  p.size_budget_bytes = 100 * (3 + 8 + 2) / 8;  // 162 bytes: 96 bits over the lowest.
  a = SolveAllocation(p);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bits, (std::vector<int>{2, 8, 2}));
  EXPECT_DOUBLE_EQ(a->objective, 0.0 - 7.0 - 1.0);
  EXPECT_NEAR(a->lp_bound, 5.0 * 96 / 200 - 7.0 - 1.0, 1e-9);
}

// values = c * b given explicitly: the same optimum and LP bound as the coefficient path.
TEST(ChoiceAllocation, LinearValuesMatchCoefficientPath) {
  std::mt19937_64 rng(99);
  auto with_values = [](AllocationProblem p) {
    for (AllocationLayer& l : p.layers) {
      l.values.clear();
      for (int b : l.candidates) l.values.push_back(l.coefficient * b);
    }
    return p;
  };
  for (int trial = 0; trial < 300; ++trial) {
    AllocationProblem p = RandomChoiceProblem(rng, trial % 3, 1 << 30);
    for (AllocationLayer& l : p.layers) l.values.clear();
    absl::StatusOr<Allocation> linear = SolveAllocation(p);
    absl::StatusOr<Allocation> choice = SolveAllocation(with_values(p));
    ASSERT_TRUE(linear.ok() && choice.ok()) << linear.status() << choice.status();
    ExpectSameOptimum(linear->objective, choice->objective);
    EXPECT_NEAR(choice->lp_bound, linear->lp_bound, 1e-7 * std::max(1.0, linear->lp_bound));
    if (::testing::Test::HasFailure()) FAIL() << "trial " << trial;
  }
  for (const auto* shapes : {&kResNet18, &kMobileNetV2}) {
    AllocationProblem p = Realistic(*shapes, 4000, 1.0, true);
    std::vector<int> lo, hi;
    for (const AllocationLayer& l : p.layers) {
      lo.push_back(l.candidates.front());
      hi.push_back(l.candidates.back());
    }
    for (double t : {0.1, 0.5, 0.9}) {
      const int64_t smin = AllocationSizeBytes(p, lo), smax = AllocationSizeBytes(p, hi);
      const int64_t bmin = AllocationBops(p, lo), bmax = AllocationBops(p, hi);
      p.size_budget_bytes = smin + static_cast<int64_t>(t * static_cast<double>(smax - smin));
      p.bops_budget = bmin + static_cast<int64_t>((1 - t / 2) * static_cast<double>(bmax - bmin));
      absl::StatusOr<Allocation> linear = SolveAllocation(p);
      absl::StatusOr<Allocation> choice = SolveAllocation(with_values(p));
      ASSERT_TRUE(linear.ok() && choice.ok()) << linear.status() << choice.status();
      ExpectSameOptimum(linear->objective, choice->objective);
      EXPECT_TRUE(Feasible(p, choice->bits));
    }
  }
}

TEST(ChoiceAllocation, MalformedValuesAreRefused) {
  AllocationProblem p;
  p.layers = {Layer(10, 10, {2, 4}, 1.0), Layer(10, 10, {4}, 1.0)};
  p.size_budget_bytes = 100;
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  for (std::vector<double> bad :
       {std::vector<double>{1.0}, {1.0, 2.0, 3.0}, {nan, 1.0}, {1.0, inf}, {-inf, 1.0}}) {
    p.layers[0].values = bad;
    EXPECT_EQ(SolveAllocation(p).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(SolveFrontier(p, 3).status().code(), absl::StatusCode::kInvalidArgument);
  }
  p.layers[0].values = {1.0, 2.0};
  p.layers[1].values = {1.0, 2.0};  // One candidate, two values.
  EXPECT_EQ(SolveAllocation(p).status().code(), absl::StatusCode::kInvalidArgument);
  p.layers[1].values = {1.0};
  EXPECT_TRUE(SolveAllocation(p).ok());
  EXPECT_EQ(SolveFrontier(p, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

// MobileNetV2's layers six times: a 318-layer model.
std::vector<std::pair<int64_t, int64_t>> BigModel() {
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int r = 0; r < 6; ++r) shapes.insert(shapes.end(), kMobileNetV2.begin(), kMobileNetV2.end());
  return shapes;
}

TEST(ChoiceAllocation, RealisticDistortionValues) {
  const std::vector<std::pair<int64_t, int64_t>> big = BigModel();
  struct Model {
    const char* name;
    const std::vector<std::pair<int64_t, int64_t>>* shapes;
    int64_t other;
  } models[] = {{"resnet18", &kResNet18, kResNet18OtherBytes},
                {"mobilenetv2", &kMobileNetV2, kMobileNetV2OtherBytes},
                {"mobilenetv2x6", &big, 6 * kMobileNetV2OtherBytes}};
  double worst = 0;
  for (const Model& m : models) {
    for (uint64_t seed : {1, 2}) {
      AllocationProblem p = Distortion(*m.shapes, m.other, seed);
      std::vector<int> lo, hi;
      for (const AllocationLayer& l : p.layers) {
        lo.push_back(l.candidates.front());
        hi.push_back(l.candidates.back());
      }
      const int64_t smin = AllocationSizeBytes(p, lo), smax = AllocationSizeBytes(p, hi);
      const int64_t bmin = AllocationBops(p, lo), bmax = AllocationBops(p, hi);
      for (int mode = 0; mode < 3; ++mode) {
        for (double t : {0.03, 0.31, 0.5, 0.96}) {
          p.size_budget_bytes.reset();
          p.bops_budget.reset();
          if (mode != 1) {
            p.size_budget_bytes = smin + static_cast<int64_t>(t * static_cast<double>(smax - smin));
          }
          if (mode != 0) {
            const double u = mode == 2 ? 1.05 - t : t;
            p.bops_budget = bmin + static_cast<int64_t>(u * static_cast<double>(bmax - bmin));
          }
          const auto start = std::chrono::steady_clock::now();
          absl::StatusOr<Allocation> a = SolveAllocation(p);
          const double ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count();
          ASSERT_TRUE(a.ok()) << m.name << ": " << a.status();
          worst = std::max(worst, ms);
          std::cout << m.name << " seed=" << seed << " mode="
                    << (mode == 0   ? "size"
                        : mode == 1 ? "bops"
                                    : "size+bops")
                    << " t=" << t << " nodes=" << a->nodes << " time=" << ms << "ms"
                    << " gap=" << (a->lp_bound - a->objective) / std::fabs(a->objective) << "\n";
          EXPECT_TRUE(Feasible(p, a->bits));
          EXPECT_NEAR(a->objective, Objective(p, a->bits), 1e-12 * std::fabs(a->objective));
          EXPECT_GE(a->lp_bound, a->objective);
          if (t == 0.5) {
            absl::StatusOr<Allocation> again = SolveAllocation(p);  // Deterministic.
            ASSERT_TRUE(again.ok());
            EXPECT_EQ(again->bits, a->bits);
          }
          // The dynamic program over size is independent; it is too slow for the big model.
          if (mode == 0 && p.layers.size() < 100) ExpectSameOptimum(SizeDp(p), a->objective);
          if (::testing::Test::HasFailure()) FAIL() << m.name << " mode " << mode << " t " << t;
        }
      }
    }
  }
  std::cout << "worst solve with distortion values: " << worst << " ms\n";
}

// Solve times over random budgets (one third each size, BOPs, both) and random values:
// the distribution, printed. Every answer is checked for feasibility and its bound.
TEST(ChoiceAllocation, TimingOverRandomBudgets) {
  const std::vector<std::pair<int64_t, int64_t>> big = BigModel();
  struct Model {
    const char* name;
    const std::vector<std::pair<int64_t, int64_t>>* shapes;
    int64_t other;
    int count;
  } models[] = {{"resnet18", &kResNet18, kResNet18OtherBytes, 300},
                {"mobilenetv2", &kMobileNetV2, kMobileNetV2OtherBytes, 300},
                {"mobilenetv2x6", &big, 6 * kMobileNetV2OtherBytes, 30}};
  for (const Model& m : models) {
    std::mt19937_64 rng(5);
    std::vector<double> ms;
    for (int i = 0; i < m.count; ++i) {
      AllocationProblem p = Distortion(*m.shapes, m.other, 1000 + i);
      std::vector<int> lo, hi;
      for (const AllocationLayer& l : p.layers) {
        lo.push_back(l.candidates.front());
        hi.push_back(l.candidates.back());
      }
      const int64_t smin = AllocationSizeBytes(p, lo), smax = AllocationSizeBytes(p, hi);
      const int64_t bmin = AllocationBops(p, lo), bmax = AllocationBops(p, hi);
      const double t_size = Uniform(rng), t_bops = Uniform(rng);
      if (i % 3 != 1) {
        p.size_budget_bytes =
            smin + static_cast<int64_t>(t_size * static_cast<double>(smax - smin));
      }
      if (i % 3 != 0) {
        p.bops_budget = bmin + static_cast<int64_t>(t_bops * static_cast<double>(bmax - bmin));
      }
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<Allocation> a = SolveAllocation(p);
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
      ASSERT_TRUE(a.ok()) << m.name << " " << i << ": " << a.status();
      EXPECT_TRUE(Feasible(p, a->bits));
      EXPECT_GE(a->lp_bound, a->objective);
    }
    std::sort(ms.begin(), ms.end());
    std::cout << m.name << " (" << m.shapes->size() << " layers), " << m.count
              << " random budgets: median " << ms[ms.size() / 2] << " ms, p90 "
              << ms[ms.size() * 9 / 10] << " ms, max " << ms.back() << " ms\n";
  }
}

// The grid a frontier must have: evenly spaced integer budgets, the ends included.
std::vector<int64_t> FrontierGrid(const AllocationProblem& p, int points) {
  std::vector<int> lo, hi;
  for (const AllocationLayer& l : p.layers) {
    lo.push_back(l.candidates.front());
    hi.push_back(l.candidates.back());
  }
  const int64_t smin = AllocationSizeBytes(p, lo), smax = AllocationSizeBytes(p, hi);
  std::vector<int64_t> grid;
  for (int i = 0; i < points; ++i) grid.push_back(smin + (smax - smin) * i / (points - 1));
  return grid;
}

void CheckFrontier(const AllocationProblem& p, const std::vector<FrontierPoint>& frontier,
                   int points, bool exhaustive) {
  const std::vector<int64_t> grid = FrontierGrid(p, points);
  ASSERT_EQ(frontier.size(), grid.size());
  for (size_t i = 0; i < frontier.size(); ++i) {
    const FrontierPoint& f = frontier[i];
    EXPECT_EQ(f.size_budget_bytes, grid[i]);
    AllocationProblem at = p;
    at.size_budget_bytes = f.size_budget_bytes;
    absl::StatusOr<Allocation> solo = SolveAllocation(at);
    ASSERT_TRUE(solo.ok()) << solo.status();
    CheckSolution(at, f.allocation, exhaustive ? Exhaustive(at) : solo->objective);
    ExpectSameOptimum(solo->objective, f.allocation.objective);
    if (i > 0) {
      EXPECT_GE(f.allocation.objective, frontier[i - 1].allocation.objective);
    }
  }
}

TEST(SizeFrontier, SmallProblemsMatchExhaustiveSearch) {
  std::mt19937_64 rng(4242);
  for (int trial = 0; trial < 300; ++trial) {
    // Mode 0 (size only, ignored) or 2 (a BOPs budget that still applies).
    AllocationProblem p = RandomChoiceProblem(rng, trial % 2 == 0 ? 0 : 2, 5000);
    if (trial % 5 == 0) {
      for (AllocationLayer& l : p.layers) l.values.clear();  // The linear path too.
    }
    const int points = UniformInt(rng, 2, 9);
    absl::StatusOr<std::vector<FrontierPoint>> frontier = SolveFrontier(p, points);
    ASSERT_TRUE(frontier.ok()) << "trial " << trial << ": " << frontier.status();
    CheckFrontier(p, *frontier, points, true);
    if (!p.bops_budget) {
      // The last budget admits everything: the all-lowest point and the free optimum.
      double free_best = 0;
      for (const AllocationLayer& l : p.layers) {
        double b = -std::numeric_limits<double>::infinity();
        for (size_t j = 0; j < l.candidates.size(); ++j) b = std::max(b, ValueAt(l, j));
        free_best += b;
      }
      ExpectSameOptimum(free_best, frontier->back().allocation.objective);
    }
    std::vector<int> lo;
    for (const AllocationLayer& l : p.layers) lo.push_back(l.candidates.front());
    EXPECT_EQ(frontier->front().allocation.size_bytes, AllocationSizeBytes(p, lo));
    if (::testing::Test::HasFailure()) FAIL() << "trial " << trial;
  }
}

TEST(SizeFrontier, RealisticModels) {
  for (const char* model : {"resnet18", "mobilenetv2"}) {
    const bool resnet = std::string(model) == "resnet18";
    AllocationProblem p = Distortion(resnet ? kResNet18 : kMobileNetV2,
                                     resnet ? kResNet18OtherBytes : kMobileNetV2OtherBytes, 3);
    p.size_budget_bytes = 1;  // Ignored.
    for (bool bops : {false, true}) {
      if (bops) {
        std::vector<int> lo, hi;
        for (const AllocationLayer& l : p.layers) {
          lo.push_back(l.candidates.front());
          hi.push_back(l.candidates.back());
        }
        p.bops_budget = (AllocationBops(p, lo) + AllocationBops(p, hi)) / 2;
      }
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<std::vector<FrontierPoint>> frontier = SolveFrontier(p, 21);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      ASSERT_TRUE(frontier.ok()) << frontier.status();
      std::cout << model << " frontier of 21 points" << (bops ? " under a BOPs budget" : "") << ": "
                << ms << " ms\n";
      CheckFrontier(p, *frontier, 21, false);
    }
  }
}

TEST(SizeFrontier, InfeasibleBopsBudgetIsReported) {
  AllocationProblem p;
  p.layers = {Layer(100, 1000, {2, 4, 8}, 1.0), Layer(100, 1000, {4, 8}, 1.0)};
  p.layers[0].values = {-3.0, -1.0, 0.0};
  p.bops_budget = 1000 * 8 * 6 - 1;  // All-lowest needs 1000 * 8 * (2 + 4).
  absl::StatusOr<std::vector<FrontierPoint>> frontier = SolveFrontier(p, 4);
  ASSERT_FALSE(frontier.ok());
  EXPECT_EQ(ReasonOf(frontier.status()), reason::kInfeasibleBudget);
  p.bops_budget = 1000 * 8 * 6;
  frontier = SolveFrontier(p, 4);
  ASSERT_TRUE(frontier.ok()) << frontier.status();
  ASSERT_EQ(frontier->size(), 4u);
  for (const FrontierPoint& f : *frontier) EXPECT_EQ(f.allocation.bits, (std::vector<int>{2, 4}));
}

}  // namespace
}  // namespace ompq::engine::allocation_test
