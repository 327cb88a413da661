// The time source of job logic (leases, timeouts, timestamps), injectable so tests can
// move time forward without sleeping.
#ifndef OMPQ_SERVER_CLOCK_H_
#define OMPQ_SERVER_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ompq {

/// Tells the current time.
class Clock {
 public:
  virtual ~Clock() = default;
  /// The current time.
  virtual absl::Time Now() const = 0;
};

/// The wall clock.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace ompq

#endif  // OMPQ_SERVER_CLOCK_H_
