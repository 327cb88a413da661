// Tests of the exact bit allocation against independent exact methods: exhaustive
// enumeration on small problems, and a dynamic program over size on ResNet-18 and
// MobileNetV2 shaped problems.
#include "workers/engine/bit_allocation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/job_error.h"

namespace ompq::engine {
namespace {

// {params, MACs per sample} of torchvision resnet18 / mobilenet_v2 at 224x224, in execution
// order (computed from the architectures; the totals match torchvision's parameter counts).
const std::vector<std::pair<int64_t, int64_t>> kResNet18 = {
    {9408, 118013952},    {36864, 115605504},  {36864, 115605504},   {36864, 115605504},
    {36864, 115605504},   {73728, 57802752},   {147456, 115605504},  {8192, 6422528},
    {147456, 115605504},  {147456, 115605504}, {294912, 57802752},   {589824, 115605504},
    {32768, 6422528},     {589824, 115605504}, {589824, 115605504},  {1179648, 57802752},
    {2359296, 115605504}, {131072, 6422528},   {2359296, 115605504}, {2359296, 115605504},
    {512000, 512000}};
constexpr int64_t kResNet18OtherBytes = 4 * 10600;

const std::vector<std::pair<int64_t, int64_t>> kMobileNetV2 = {
    {864, 10838016},    {288, 3612672},     {512, 6422528},    {1536, 19267584},  {864, 2709504},
    {2304, 7225344},    {3456, 10838016},   {1296, 4064256},   {3456, 10838016},  {3456, 10838016},
    {1296, 1016064},    {4608, 3612672},    {6144, 4816896},   {1728, 1354752},   {6144, 4816896},
    {6144, 4816896},    {1728, 1354752},    {6144, 4816896},   {6144, 4816896},   {1728, 338688},
    {12288, 2408448},   {24576, 4816896},   {3456, 677376},    {24576, 4816896},  {24576, 4816896},
    {3456, 677376},     {24576, 4816896},   {24576, 4816896},  {3456, 677376},    {24576, 4816896},
    {24576, 4816896},   {3456, 677376},     {36864, 7225344},  {55296, 10838016}, {5184, 1016064},
    {55296, 10838016},  {55296, 10838016},  {5184, 1016064},   {55296, 10838016}, {55296, 10838016},
    {5184, 254016},     {92160, 4515840},   {153600, 7526400}, {8640, 423360},    {153600, 7526400},
    {153600, 7526400},  {8640, 423360},     {153600, 7526400}, {153600, 7526400}, {8640, 423360},
    {307200, 15052800}, {409600, 20070400}, {1280000, 1280000}};
constexpr int64_t kMobileNetV2OtherBytes = 4 * 35112;

// Deterministic uniform double in [0, 1) (std distributions differ between libraries).
double Uniform(std::mt19937_64& rng) { return (rng() >> 11) * 0x1.0p-53; }
int UniformInt(std::mt19937_64& rng, int lo, int hi) {
  return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

double Objective(const AllocationProblem& problem, const std::vector<int>& bits) {
  double value = 0;
  for (size_t i = 0; i < bits.size(); ++i) value += problem.layers[i].coefficient * bits[i];
  return value;
}

bool Feasible(const AllocationProblem& problem, const std::vector<int>& bits) {
  // Independent of AllocationSizeBytes: compare in bits against 8 * (budget - other).
  int64_t weight_bits = 0, bops = 0;
  for (size_t i = 0; i < bits.size(); ++i) {
    const AllocationLayer& layer = problem.layers[i];
    if (std::find(layer.candidates.begin(), layer.candidates.end(), bits[i]) ==
        layer.candidates.end()) {
      return false;
    }
    weight_bits += layer.params * bits[i];
    bops += layer.macs * layer.act_bits * bits[i];
  }
  if (problem.size_budget_bytes &&
      weight_bits > 8 * (*problem.size_budget_bytes - problem.other_bytes)) {
    return false;
  }
  return !(problem.bops_budget && bops > *problem.bops_budget);
}

// Best objective by trying every combination; -inf when none is feasible.
double Exhaustive(const AllocationProblem& problem) {
  const size_t n = problem.layers.size();
  std::vector<size_t> idx(n, 0);
  std::vector<int> bits(n);
  double best = -std::numeric_limits<double>::infinity();
  while (true) {
    for (size_t i = 0; i < n; ++i) bits[i] = problem.layers[i].candidates[idx[i]];
    if (Feasible(problem, bits)) best = std::max(best, Objective(problem, bits));
    size_t i = 0;
    while (i < n && ++idx[i] == problem.layers[i].candidates.size()) idx[i++] = 0;
    if (i == n) break;
  }
  return best;
}

// Best objective under the size budget alone by a dynamic program over size in units of
// the gcd of the layers' params (independent of branch and bound).
double SizeDp(const AllocationProblem& problem) {
  int64_t unit = 0, min_bits = 0;
  for (const AllocationLayer& layer : problem.layers) {
    unit = std::gcd(unit, layer.params);
    min_bits += layer.params * layer.candidates.front();
  }
  const int64_t cap = 8 * (*problem.size_budget_bytes - problem.other_bytes) - min_bits;
  if (cap < 0) return -std::numeric_limits<double>::infinity();
  const int64_t units = cap / unit;
  // best[u]: best gain over the smallest candidates using at most u units.
  std::vector<double> best(units + 1, 0.0), next(units + 1);
  double base = 0;
  for (const AllocationLayer& layer : problem.layers) {
    const int lo = layer.candidates.front();
    base += layer.coefficient * lo;
    next = best;
    for (int b : layer.candidates) {
      const int64_t d = layer.params / unit * (b - lo);
      const double gain = layer.coefficient * (b - lo);
      for (int64_t u = d; u <= units; ++u) next[u] = std::max(next[u], best[u - d] + gain);
    }
    best.swap(next);
  }
  return base + best[units];
}

void ExpectSameOptimum(double expected, double got) {
  EXPECT_NEAR(got, expected, 1e-9 * std::max(1.0, std::fabs(expected)));
}

// Checks a solution against the problem and an optimum found independently.
void CheckSolution(const AllocationProblem& problem, const Allocation& a, double optimum) {
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

AllocationLayer Layer(int64_t params, int64_t macs, std::vector<int> candidates, double c,
                      int act_bits = 8) {
  AllocationLayer layer;
  layer.params = params;
  layer.macs = macs;
  layer.act_bits = act_bits;
  layer.candidates = std::move(candidates);
  layer.coefficient = c;
  return layer;
}

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

// Coefficients as ALGORITHM.md defines them from random gammas: theta = exp(-beta *
// (gamma - min gamma)), c_i = mean of theta_j over j >= i. beta < 0 means all equal.
std::vector<double> Coefficients(size_t n, double beta, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> gamma(n), theta(n), c(n);
  for (double& g : gamma) g = (0.2 + 0.4 * Uniform(rng)) * static_cast<double>(n);
  const double g0 = *std::min_element(gamma.begin(), gamma.end());
  for (size_t i = 0; i < n; ++i) theta[i] = beta < 0 ? 1.0 : std::exp(-beta * (gamma[i] - g0));
  double tail = 0;
  for (size_t i = n; i-- > 0;) {
    tail += theta[i];
    c[i] = tail / static_cast<double>(n - i);
  }
  return c;
}

AllocationProblem Realistic(const std::vector<std::pair<int64_t, int64_t>>& shapes,
                            int64_t other_bytes, double beta, bool pin_first_last) {
  AllocationProblem p;
  p.other_bytes = other_bytes;
  const std::vector<double> c = Coefficients(shapes.size(), beta, 7);
  for (size_t i = 0; i < shapes.size(); ++i) {
    const bool pinned = pin_first_last && (i == 0 || i + 1 == shapes.size());
    p.layers.push_back(Layer(shapes[i].first, shapes[i].second,
                             pinned ? std::vector<int>{8} : std::vector<int>{2, 3, 4, 5, 6, 7, 8},
                             c[i]));
  }
  return p;
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
}  // namespace ompq::engine
