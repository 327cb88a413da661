// The human summary `ompqctl quantize` prints for a finished job: a per-layer table and
// the totals against the budgets.
#ifndef OMPQ_CLIENT_SUMMARY_TABLE_H_
#define OMPQ_CLIENT_SUMMARY_TABLE_H_

#include <string>
#include <vector>

#include "ompq/v1/job.pb.h"

namespace ompq::client {

/// Per-layer table (name, kind, params, bits, importance) followed by size vs budget,
/// BOPs vs budget, objective vs LP bound, accuracy when present, and where `files` were
/// written (`out_dir` empty: that line is left out).
std::string FormatSummary(const v1::Job& job, const std::string& out_dir,
                          const std::vector<std::string>& files);

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_SUMMARY_TABLE_H_
