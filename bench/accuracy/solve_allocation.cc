// solve_allocation: the engine's exact solver (bit_allocation.h) on a problem given as JSON,
// for the accuracy study's baselines that measure their own per-layer costs (a peer-style
// sensitivity, sensitivity.py) and need the same solver the service uses.
//
//   solve_allocation < problem.json > allocation.json
//   problem:    {"layers": [{"params": int, "macs": int, "candidates": [int],
//                            "values": [float]}], "act_bits": int, "other_bytes": int,
//                "size_budget_bytes": int}
//   allocation: {"bits": [int], "size_bytes": int, "objective": float, "seconds": float}
#include <chrono>
#include <iostream>
#include <iterator>
#include <string>

#include "nlohmann/json.hpp"
#include "workers/engine/bit_allocation.h"

int main() {
  using ompq::engine::AllocationLayer;
  using ompq::engine::AllocationProblem;
  try {
    const nlohmann::json in = nlohmann::json::parse(std::cin);
    AllocationProblem problem;
    for (const nlohmann::json& layer : in.at("layers")) {
      AllocationLayer l;
      l.params = layer.at("params");
      l.macs = layer.value("macs", int64_t{0});
      l.act_bits = in.value("act_bits", 8);
      l.candidates = layer.at("candidates").get<std::vector<int>>();
      l.values = layer.at("values").get<std::vector<double>>();
      l.coefficient = 1.0;
      problem.layers.push_back(std::move(l));
    }
    problem.other_bytes = in.value("other_bytes", int64_t{0});
    problem.size_budget_bytes = in.at("size_budget_bytes").get<int64_t>();
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<ompq::engine::Allocation> allocation = SolveAllocation(problem);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!allocation.ok()) {
      std::cerr << "solve_allocation: " << allocation.status() << "\n";
      return 1;
    }
    std::cout << nlohmann::json{{"bits", allocation->bits},
                                {"size_bytes", allocation->size_bytes},
                                {"objective", allocation->objective},
                                {"seconds", seconds}}
                     .dump()
              << "\n";
    return 0;
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "solve_allocation: bad problem JSON: " << e.what() << "\n";
    return 2;
  }
}
