// The size-quality frontier of a finished job (report.json `frontier`) as `ompqctl
// frontier` prints it: one row per size budget, the job's own budget marked.
#ifndef OMPQ_CLIENT_FRONTIER_TABLE_H_
#define OMPQ_CLIENT_FRONTIER_TABLE_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ompq::client {

/// Columns: size, average weight bits of the searched layers, BOPs, the objective, the
/// predicted distortion and the measured top-1 where the report has them; the job's own
/// allocation is a row of its own, marked "<- this job". INVALID_ARGUMENT when the report has
/// no frontier (a report from before frontiers, or a problem it could not span).
absl::StatusOr<std::string> FormatFrontier(const nlohmann::json& report);

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_FRONTIER_TABLE_H_
