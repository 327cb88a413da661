// Parsers for the human-friendly quantities users type: sizes, counts and durations.
#ifndef OMPQ_COMMON_UNITS_H_
#define OMPQ_COMMON_UNITS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ompq {

/// Bytes from "1048576", "1.5MiB", "2MB", "800KiB", "3 GB" (SI: kB/MB/GB, IEC: KiB/MiB/GiB,
/// "B" or none for bytes). Fractions are rounded down to whole bytes. Must be > 0.
absl::StatusOr<int64_t> ParseSize(absl::string_view text);

/// A count with an optional SI suffix: "75G", "1.2T", "500M", "1000". Must be > 0.
absl::StatusOr<int64_t> ParseCount(absl::string_view text);

/// A duration: "30m", "90s", "1h30m", "250ms", or plain seconds "45". Must be > 0.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);

/// "1.50 MiB"-style rendering of a byte count, for summaries.
std::string FormatBytes(int64_t bytes);

/// "75.3 G"-style rendering of a large count, for summaries.
std::string FormatCount(int64_t count);

}  // namespace ompq

#endif  // OMPQ_COMMON_UNITS_H_
