#include "workers/engine/orthogonality.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace ompq::engine {

std::vector<double> ImportanceFromGamma(const std::vector<double>& gamma, double beta) {
  std::vector<double> theta(gamma.size());
  if (gamma.empty()) return theta;
  const double min_gamma = *std::min_element(gamma.begin(), gamma.end());
  for (size_t i = 0; i < gamma.size(); ++i) theta[i] = std::exp(-beta * (gamma[i] - min_gamma));
  return theta;
}

std::vector<double> ObjectiveCoefficients(const std::vector<double>& importance) {
  std::vector<double> coefficient(importance.size());
  double suffix_sum = 0;
  for (size_t i = importance.size(); i-- > 0;) {
    suffix_sum += importance[i];
    coefficient[i] = suffix_sum / static_cast<double>(importance.size() - i);
  }
  return coefficient;
}

absl::StatusOr<Orthogonality> ComputeOrthogonality(const std::vector<std::vector<double>>& grams,
                                                   int64_t n, double beta) {
  const size_t layers = grams.size();
  if (layers == 0) return absl::InvalidArgumentError("no Gram matrices");
  if (n < 1) return absl::InvalidArgumentError("sample count must be positive");
  if (!(beta >= 0) || !std::isfinite(beta)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("beta must be finite and >= 0, got %g", beta));
  }
  const size_t entries = static_cast<size_t>(n) * static_cast<size_t>(n);

  Orthogonality result;
  // Normalising each Gram first turns ORM into plain dot products: one pass per pair over
  // N^2 numbers, no Gram is ever recomputed.
  std::vector<std::vector<double>> unit(layers);
  for (size_t i = 0; i < layers; ++i) {
    if (grams[i].size() != entries) {
      return absl::InvalidArgumentError(
          absl::StrFormat("Gram %d has %d entries, expected %d", i, grams[i].size(), entries));
    }
    double norm_sq = 0;
    for (double v : grams[i]) norm_sq += v * v;
    if (!std::isfinite(norm_sq)) {
      return absl::InvalidArgumentError(absl::StrFormat("Gram %d is not finite", i));
    }
    unit[i] = grams[i];
    if (norm_sq > 0) {
      const double scale = 1.0 / std::sqrt(norm_sq);
      for (double& v : unit[i]) v *= scale;
    } else {
      // A layer whose output is the same for every sample: CKA is undefined (0/0). It
      // shares nothing with any other layer, so its off-diagonal ORM entries are 0.
      result.constant_layers.push_back(static_cast<int>(i));
    }
  }

  result.orm.assign(layers, std::vector<double>(layers, 0.0));
  for (size_t i = 0; i < layers; ++i) {
    result.orm[i][i] = 1.0;
    for (size_t j = i + 1; j < layers; ++j) {
      double dot = 0;
      const double* a = unit[i].data();
      const double* b = unit[j].data();
      for (size_t k = 0; k < entries; ++k) dot += a[k] * b[k];
      result.orm[i][j] = result.orm[j][i] = dot;
    }
  }

  result.gamma.assign(layers, 0.0);
  for (size_t i = 0; i < layers; ++i) {
    for (size_t j = 0; j < layers; ++j) {
      if (j != i) result.gamma[i] += result.orm[i][j];
    }
  }
  result.importance = ImportanceFromGamma(result.gamma, beta);
  result.coefficient = ObjectiveCoefficients(result.importance);
  return result;
}

}  // namespace ompq::engine
