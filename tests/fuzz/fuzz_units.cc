// Fuzzes the size, count and duration parsers (common/units.h) that read what users type
// (--size, --bops, --timeout, --max-blob-bytes, --memory-limit, ...).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/units.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  // Accepted values are positive, as documented; errors are INVALID_ARGUMENT.
  auto check = [](const absl::StatusOr<int64_t>& value) {
    if (value.ok() ? *value <= 0 : value.status().code() != absl::StatusCode::kInvalidArgument) {
      std::abort();
    }
    if (value.ok()) (void)ompq::FormatBytes(*value), (void)ompq::FormatCount(*value);
  };
  check(ompq::ParseSize(text));
  check(ompq::ParseCount(text));
  absl::StatusOr<absl::Duration> duration = ompq::ParseDuration(text);
  if (duration.ok() ? (*duration <= absl::ZeroDuration() || *duration == absl::InfiniteDuration())
                    : duration.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  return 0;
}
