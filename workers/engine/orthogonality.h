// Layer orthogonality (ALGORITHM.md "The proxy"): the ORM matrix from each layer's centred
// Gram matrix, the importance of each layer and the objective coefficients of the program.
//
// Pure C++ on float64: the Gram matrices are small (N x N) once the forward pass is done.
#ifndef OMPQ_WORKERS_ENGINE_ORTHOGONALITY_H_
#define OMPQ_WORKERS_ENGINE_ORTHOGONALITY_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace ompq::engine {

/// Importance temperature used when a job gives none: the best of 0.5, 1, 2 and 5 in the
/// accuracy study with PTQ (docs/results.md, "beta with PTQ").
inline constexpr double kDefaultBeta = 1.0;
/// The same for the distortion objective: 0, every layer weighed alike, which beat beta 1
/// at every size and activation width of the accuracy study (docs/results.md).
inline constexpr double kDefaultDistortionBeta = 0.0;

/// Everything the program needs from the proxy, per layer in execution order.
struct Orthogonality {
  std::vector<std::vector<double>> orm;  // L x L, ORM_ii = 1, symmetric.
  std::vector<double> gamma;             // sum_{j != i} ORM_ij.
  std::vector<double> importance;        // theta_i, normalised so the largest is 1.
  std::vector<double> coefficient;       // c_i = mean of theta_j for j >= i.
  std::vector<int> constant_layers;      // Layers whose centred Gram is zero (see .cc).
};

/// ORM_ij = <K_i, K_j>_F / (||K_i||_F ||K_j||_F) for centred Gram matrices `grams` (each
/// n*n, row-major), then gamma, importance and coefficients with temperature `beta`.
/// INVALID_ARGUMENT for an empty list, wrong sizes, a negative beta or non-finite values.
absl::StatusOr<Orthogonality> ComputeOrthogonality(const std::vector<std::vector<double>>& grams,
                                                   int64_t n, double beta);

/// theta_i = exp(-beta * (gamma_i - min_k gamma_k)): exp(-beta * gamma_i) divided by its
/// maximum, computed in log space so that nothing underflows at large beta.
std::vector<double> ImportanceFromGamma(const std::vector<double>& gamma, double beta);

/// c_i = (1 / (L - i)) * sum_{j >= i} theta_j (0-based i), the mean importance of a layer
/// and every later one.
std::vector<double> ObjectiveCoefficients(const std::vector<double>& importance);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_ORTHOGONALITY_H_
