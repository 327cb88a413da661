// Problems shared by the allocation tests and allocation_milp_export: real layer shapes,
// deterministic random generators, and independent exact methods (exhaustive enumeration,
// a dynamic program over size) to check the solver against.
#ifndef OMPQ_TESTS_ALLOCATION_ALLOCATION_PROBLEMS_H_
#define OMPQ_TESTS_ALLOCATION_ALLOCATION_PROBLEMS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "workers/engine/bit_allocation.h"

namespace ompq::engine::allocation_test {

// {params, MACs per sample} of torchvision resnet18 / mobilenet_v2 at 224x224, in execution
// order (computed from the architectures; the totals match torchvision's parameter counts).
inline const std::vector<std::pair<int64_t, int64_t>> kResNet18 = {
    {9408, 118013952},    {36864, 115605504},  {36864, 115605504},   {36864, 115605504},
    {36864, 115605504},   {73728, 57802752},   {147456, 115605504},  {8192, 6422528},
    {147456, 115605504},  {147456, 115605504}, {294912, 57802752},   {589824, 115605504},
    {32768, 6422528},     {589824, 115605504}, {589824, 115605504},  {1179648, 57802752},
    {2359296, 115605504}, {131072, 6422528},   {2359296, 115605504}, {2359296, 115605504},
    {512000, 512000}};
inline constexpr int64_t kResNet18OtherBytes = 4 * 10600;

inline const std::vector<std::pair<int64_t, int64_t>> kMobileNetV2 = {
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
inline constexpr int64_t kMobileNetV2OtherBytes = 4 * 35112;

// Deterministic uniform double in [0, 1) (std distributions differ between libraries).
inline double Uniform(std::mt19937_64& rng) { return (rng() >> 11) * 0x1.0p-53; }
inline int UniformInt(std::mt19937_64& rng, int lo, int hi) {
  return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

// A layer of linear value c * bits; `values` may be set afterwards.
inline AllocationLayer Layer(int64_t params, int64_t macs, std::vector<int> candidates, double c,
                             int act_bits = 8) {
  AllocationLayer layer;
  layer.params = params;
  layer.macs = macs;
  layer.act_bits = act_bits;
  layer.candidates = std::move(candidates);
  layer.coefficient = c;
  return layer;
}

// Value of a layer's candidate index j: its `values` entry, or coefficient * bits.
inline double ValueAt(const AllocationLayer& layer, size_t j) {
  return layer.values.empty() ? layer.coefficient * layer.candidates[j] : layer.values[j];
}

inline double Objective(const AllocationProblem& problem, const std::vector<int>& bits) {
  double value = 0;
  for (size_t i = 0; i < bits.size(); ++i) {
    const AllocationLayer& layer = problem.layers[i];
    if (layer.values.empty()) {
      value += layer.coefficient * bits[i];
      continue;
    }
    const size_t j = std::find(layer.candidates.begin(), layer.candidates.end(), bits[i]) -
                     layer.candidates.begin();
    value += j < layer.values.size() ? layer.values[j] : std::nan("");
  }
  return value;
}

inline bool Feasible(const AllocationProblem& problem, const std::vector<int>& bits) {
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
inline double Exhaustive(const AllocationProblem& problem) {
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
inline double SizeDp(const AllocationProblem& problem) {
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
    base += ValueAt(layer, 0);
    next = best;
    for (size_t j = 0; j < layer.candidates.size(); ++j) {
      const int b = layer.candidates[j];
      const int64_t d = layer.params / unit * (b - lo);
      const double gain =
          layer.values.empty() ? layer.coefficient * (b - lo) : layer.values[j] - layer.values[0];
      for (int64_t u = d; u <= units; ++u) next[u] = std::max(next[u], best[u - d] + gain);
    }
    best.swap(next);
  }
  return base + best[units];
}

// Coefficients as ALGORITHM.md defines them from random gammas: theta = exp(-beta *
// (gamma - min gamma)), c_i = mean of theta_j over j >= i. beta < 0 means all equal.
inline std::vector<double> Coefficients(size_t n, double beta, uint64_t seed) {
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

inline AllocationProblem Realistic(const std::vector<std::pair<int64_t, int64_t>>& shapes,
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

// Candidate values of one kind: 0 distortion-like (-w 4^-b with noise: negative, rising
// with the bits), 1 arbitrary signs (non-monotone), 2 small integers (exact ties), 3 positive
// increasing (not necessarily concave), or else none (the linear value c * b).
inline std::vector<double> RandomValues(std::mt19937_64& rng, const AllocationLayer& layer,
                                        int kind) {
  std::vector<double> v;
  double acc = 0;
  for (int b : layer.candidates) {
    switch (kind) {
      case 0:
        v.push_back(-(0.1 + Uniform(rng)) * std::pow(4.0, -b) * (0.7 + 0.6 * Uniform(rng)));
        break;
      case 1:
        v.push_back(2 * Uniform(rng) - 1);
        break;
      case 2:
        v.push_back(UniformInt(rng, -2, 2));
        break;
      case 3:
        acc += Uniform(rng);
        v.push_back(acc);
        break;
      default:
        return {};
    }
  }
  return v;
}

// Distortion-like values -w_i * 4^-b * noise on real layer shapes (pins as the engine sets
// them).
inline AllocationProblem Distortion(const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                    int64_t other_bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  AllocationProblem p;
  p.other_bytes = other_bytes;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const bool pinned = i == 0 || i + 1 == shapes.size();
    AllocationLayer layer =
        Layer(shapes[i].first, shapes[i].second,
              pinned ? std::vector<int>{8} : std::vector<int>{2, 3, 4, 5, 6, 7, 8}, 0);
    const double w = std::exp(4 * (Uniform(rng) - 0.5)) * static_cast<double>(shapes[i].first);
    for (int b : layer.candidates) {
      layer.values.push_back(-w * std::pow(4.0, -b) * (0.8 + 0.4 * Uniform(rng)));
    }
    p.layers.push_back(std::move(layer));
  }
  return p;
}

}  // namespace ompq::engine::allocation_test

#endif  // OMPQ_TESTS_ALLOCATION_ALLOCATION_PROBLEMS_H_
