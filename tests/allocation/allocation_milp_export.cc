// Writes random mid-sized problems (beyond exhaustive search) and the optimum found here as
// JSON, for allocation_milp_check.py to re-solve with scipy's MILP. A plain executable rather
// than a gtest case, so that ordinary test runs have nothing to skip.
//
// Usage: allocation_milp_export OUT.json
#include <cstdint>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/allocation/allocation_problems.h"
#include "workers/engine/bit_allocation.h"

namespace ompq::engine::allocation_test {
namespace {

int Export(const char* path) {
  std::mt19937_64 rng(777);
  std::ofstream out(path);
  out.precision(17);
  out << "[\n";
  for (int trial = 0; trial < 200; ++trial) {
    // Random layers, and every fifth problem MobileNetV2 with distortion-like values.
    AllocationProblem p = Distortion(kMobileNetV2, kMobileNetV2OtherBytes, trial);
    if (trial % 5 != 0) {
      p.layers.clear();
      p.other_bytes = UniformInt(rng, 0, 1000);
      const int n = UniformInt(rng, 8, 40);
      for (int i = 0; i < n; ++i) {
        std::vector<int> cands = {2, 3, 4, 5, 6, 7, 8};
        if (Uniform(rng) < 0.1) cands = {8};
        if (Uniform(rng) < 0.2) cands = {2, 4, 8};
        const int64_t params = UniformInt(rng, 1, 4000);
        AllocationLayer layer = Layer(params, params * UniformInt(rng, 1, 30), cands,
                                      0.1 + Uniform(rng), Uniform(rng) < 0.5 ? 8 : 4);
        layer.values = RandomValues(rng, layer, trial % 4);
        p.layers.push_back(std::move(layer));
      }
    }
    std::vector<int> lo, hi;
    for (const AllocationLayer& l : p.layers) {
      lo.push_back(l.candidates.front());
      hi.push_back(l.candidates.back());
    }
    const int mode = trial % 3;
    const int64_t smin = AllocationSizeBytes(p, lo), smax = AllocationSizeBytes(p, hi);
    const int64_t bmin = AllocationBops(p, lo), bmax = AllocationBops(p, hi);
    if (mode != 1) {
      p.size_budget_bytes =
          smin + static_cast<int64_t>(Uniform(rng) * static_cast<double>(smax - smin));
    }
    if (mode != 0) {
      p.bops_budget = bmin + static_cast<int64_t>(Uniform(rng) * static_cast<double>(bmax - bmin));
    }
    absl::StatusOr<Allocation> a = SolveAllocation(p);
    if (!a.ok()) {
      std::cerr << "problem " << trial << ": " << a.status() << "\n";
      return 1;
    }
    out << (trial ? ",\n" : "") << "{\"other_bytes\": " << p.other_bytes << ", \"size_budget\": "
        << (p.size_budget_bytes ? std::to_string(*p.size_budget_bytes) : "null")
        << ", \"bops_budget\": " << (p.bops_budget ? std::to_string(*p.bops_budget) : "null")
        << ", \"objective\": " << a->objective << ", \"lp_bound\": " << a->lp_bound
        << ", \"layers\": [";
    for (size_t i = 0; i < p.layers.size(); ++i) {
      const AllocationLayer& l = p.layers[i];
      out << (i ? ", " : "") << "{\"params\": " << l.params << ", \"macs\": " << l.macs
          << ", \"act_bits\": " << l.act_bits << ", \"bits\": " << a->bits[i]
          << ", \"candidates\": [";
      for (size_t j = 0; j < l.candidates.size(); ++j) out << (j ? ", " : "") << l.candidates[j];
      out << "], \"values\": [";
      for (size_t j = 0; j < l.values.size(); ++j) out << (j ? ", " : "") << l.values[j];
      out << "]}";
    }
    out << "]}";
  }
  out << "\n]\n";
  out.close();
  if (!out) {
    std::cerr << "could not write " << path << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace ompq::engine::allocation_test

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " OUT.json\n";
    return 2;
  }
  return ompq::engine::allocation_test::Export(argv[1]);
}
