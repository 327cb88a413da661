// Histogram bucket boundaries (seconds) shared by the server's and the workers' metrics,
// so a dashboard can put their stage and job histograms side by side.
#ifndef OMPQ_COMMON_METRIC_BUCKETS_H_
#define OMPQ_COMMON_METRIC_BUCKETS_H_

#include <vector>

namespace ompq {

/// From sub-second stages and queue waits of small models to four-hour ones.
inline const std::vector<double>& StageSecondsBuckets() {
  static const auto* buckets =
      new std::vector<double>{0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400};
  return *buckets;
}

/// Whole jobs: from a second to a day.
inline const std::vector<double>& JobSecondsBuckets() {
  static const auto* buckets = new std::vector<double>{
      1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400};
  return *buckets;
}

}  // namespace ompq

#endif  // OMPQ_COMMON_METRIC_BUCKETS_H_
