// The OMPQ search as one call: load and check a TorchScript model, discover its layers,
// compute layer orthogonality from one forward pass, and allocate bits exactly.
//
// This is the engine's public face for the worker pipeline. It knows nothing of gRPC or
// protobuf: inputs are file paths and plain options, outputs a plain report.
#ifndef OMPQ_WORKERS_ENGINE_SEARCH_H_
#define OMPQ_WORKERS_ENGINE_SEARCH_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/job_limits.h"
#include "nlohmann/json.hpp"
#include "workers/engine/quantizer.h"

namespace ompq::engine {

/// Pipeline stages the engine reports (mirrors ompq.v1.Stage).
enum class Stage { kAnalyzing, kOrthogonality, kSolving, kCalibrating, kFinetuning,
                   kEvaluating, kExporting };

/// Progress callback: `fraction` of the current stage in [0,1]. Return false to stop; the
/// engine then returns a CANCELLED status as soon as it can.
using ProgressFn =
    std::function<bool(Stage stage, double fraction, const std::string& message)>;

/// limits::kDefaultMinWeightBits .. kDefaultMaxWeightBits.
inline std::vector<int> DefaultWeightBits() {
  std::vector<int> bits;
  for (int b = limits::kDefaultMinWeightBits; b <= limits::kDefaultMaxWeightBits; ++b) {
    bits.push_back(b);
  }
  return bits;
}

/// What the exact program optimises (docs/algorithm.md):
///   kOrthogonality  the paper's program: maximise sum_i c_i b_i (c_i from the ORM);
///   kDistortion     minimise sum_i theta_i(beta) D_i(b_i), each layer's measured weight
///                   distortion at its bits (layer_distortion.h) weighted by its
///                   orthogonality importance; beta = 0 weighs every layer alike.
enum class Objective { kOrthogonality, kDistortion };

/// "orthogonality" / "distortion", as in --objective and report.json search.objective.
const char* ObjectiveName(Objective objective);

/// What to search for. Mirrors ompq.v1.JobSpec with defaults resolved.
struct SearchOptions {
  std::string model_path;                   // TorchScript archive.
  std::string calib_path;                   // .pt / .npy / .npz calibration inputs.
  std::optional<int64_t> size_budget_bytes;  // At least one budget is required.
  std::optional<int64_t> bops_budget;
  std::vector<int> weight_bits = DefaultWeightBits();  // Candidate weight bit-widths.
  int act_bits = limits::kDefaultActBits;    // Activation bits feeding every layer.
  int pin_first_last_bits = limits::kDefaultPinFirstLastBits;  // 0: no first/last pin.
  std::vector<std::pair<std::string, int>> pins;  // (RE2 full-match regex, bits).
  Objective objective = Objective::kDistortion;  // The service default (job_validation.h).
  // The grid the distortion objective measures on: the one the job quantizes on.
  ExportProfile export_profile = ExportProfile::kDefault;
  std::optional<double> beta;  // Importance temperature; nullopt: the objective's default.
  int search_samples = limits::kDefaultSearchSamples;  // First N calibration inputs used.
  int64_t seed = 0;
  std::string device = "cpu";                // "cpu", "cuda", "cuda:N" or "auto".
};

/// Result of a search: the report.json document (PRODUCT.md schema) without the
/// finetune/evaluate/export timings, which later stages add. `report["job"]` is left
/// empty for the caller to fill.
struct SearchResult {
  nlohmann::json report;
};

/// Runs the whole search. Job-level failures carry a reason (common/job_error.h):
/// INVALID_MODEL, UNSUPPORTED_OP, NO_QUANTIZABLE_LAYERS, INPUT_MISMATCH, NON_FINITE_INPUT,
/// INVALID_INPUT, INFEASIBLE_BUDGET, CANCELLED.
absl::StatusOr<SearchResult> RunSearch(const SearchOptions& options,
                                       const ProgressFn& progress);

struct JobInputs;  // job_inputs.h

/// The same search on inputs already loaded (options.model_path and calib_path unused).
absl::StatusOr<SearchResult> RunSearch(const SearchOptions& options, const JobInputs& inputs,
                                       const ProgressFn& progress);

/// Writes report.json, bit_config.json and report.html for `report` into `out_dir`
/// (created if missing). Returns the file names written, in that order.
absl::StatusOr<std::vector<std::string>> WriteArtifacts(const nlohmann::json& report,
                                                        const std::string& out_dir);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_SEARCH_H_
