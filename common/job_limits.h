// The limits and defaults of a job's options, in one place: ompqctl checks them before
// uploading anything, job validation enforces them and fills the defaults in, and the
// engine starts from the same defaults.
#ifndef OMPQ_COMMON_JOB_LIMITS_H_
#define OMPQ_COMMON_JOB_LIMITS_H_

#include <cstdint>

namespace ompq::limits {

/// Weight bit-widths (candidates and pins) lie in kMinWeightBits..kMaxBits.
inline constexpr int kMinWeightBits = 1;
inline constexpr int kMaxBits = 16;
/// Activation bit-widths lie in kMinActBits..kMaxBits: the activation grid keeps a step
/// on either side of its zero point (the quantizer refuses fewer).
inline constexpr int kMinActBits = 2;

/// Default weight candidates kDefaultMinWeightBits..kDefaultMaxWeightBits.
inline constexpr int kDefaultMinWeightBits = 2;
inline constexpr int kDefaultMaxWeightBits = 8;
inline constexpr int kDefaultActBits = 8;
inline constexpr int kDefaultPinFirstLastBits = 8;

/// The search needs two samples for a centred Gram matrix.
inline constexpr int kMinSearchSamples = 2;
inline constexpr int kDefaultSearchSamples = 32;
inline constexpr int kDefaultCalibSamples = 1024;

/// The size-quality frontier: size budgets it spans, and the points whose top-1 a job with
/// eval data measures by default (at most kFrontierPoints).
inline constexpr int kFrontierPoints = 24;
inline constexpr int kDefaultFrontierEvals = 8;

/// PTQ steps per reconstruction unit; QAT's epochs, learning rate and batch.
inline constexpr int64_t kDefaultPtqIters = 1000;
inline constexpr int64_t kDefaultQatEpochs = 1;
inline constexpr double kDefaultQatLr = 1e-4;
inline constexpr int64_t kQatBatchSize = 64;

}  // namespace ompq::limits

#endif  // OMPQ_COMMON_JOB_LIMITS_H_
