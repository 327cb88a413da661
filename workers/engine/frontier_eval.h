// The measured side of the size-quality frontier: the top-1 of nearest rounding at some of
// the frontier's points (report.json `frontier[k].top1_nearest`), so that a person sees where the
// curve bends before choosing a budget.
#ifndef OMPQ_WORKERS_ENGINE_FRONTIER_EVAL_H_
#define OMPQ_WORKERS_ENGINE_FRONTIER_EVAL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "workers/engine/job_inputs.h"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// Which of `points` frontier points to measure when `evals` may be: evenly spread from
/// the first to the last, both included, no index twice; all of them when evals >= points;
/// the last one alone when evals is 1.
std::vector<size_t> FrontierEvalPoints(size_t points, int evals);

/// For each point FrontierEvalPoints picks from report["frontier"]: a fresh copy of the
/// model with the point's weight bits at nearest rounding, activations at `act_bits`, on
/// the grid of `profile` (as the job's own model),
/// calibrated in one pass over `calib`, then top-1 on the eval data, added as "top1_nearest".
/// `progress(done, total)` returning false cancels (CANCELLED). A report without a frontier
/// or inputs without eval data are left as they are.
absl::Status EvaluateFrontier(const JobInputs& inputs, const torch::Tensor& calib, int act_bits,
                              ExportProfile profile, int64_t max_capture_bytes, int evals,
                              nlohmann::json& report,
                              const std::function<bool(int, int)>& progress);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_FRONTIER_EVAL_H_
