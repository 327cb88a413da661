// ORM, importance and objective coefficients against values worked out by hand.
#include "workers/engine/orthogonality.h"

#include <gtest/gtest.h>

#include <cmath>

namespace ompq::engine {
namespace {

// Centred Gram X X^T (2 samples) of a layer whose two samples differ by `d`:
// centred features are +-d/2, so K = (d^2/4) [[1, -1], [-1, 1]] times the width.
std::vector<double> TwoSampleGram(double scale) { return {scale, -scale, -scale, scale}; }

TEST(OrthogonalityTest, MatchesHandComputedValues) {
  // K1 = [[1,0],[0,0]], K2 = [[0,0],[0,1]] (orthogonal), K3 = [[1,1],[1,1]]:
  // <K1,K3> = 1, |K1| = 1, |K3| = 2 -> ORM 0.5; same for K2.
  std::vector<std::vector<double>> grams = {{1, 0, 0, 0}, {0, 0, 0, 1}, {1, 1, 1, 1}};
  absl::StatusOr<Orthogonality> result = ComputeOrthogonality(grams, 2, /*beta=*/1.0);
  ASSERT_TRUE(result.ok()) << result.status();
  const auto& orm = result->orm;
  EXPECT_DOUBLE_EQ(orm[0][0], 1.0);
  EXPECT_DOUBLE_EQ(orm[0][1], 0.0);
  EXPECT_DOUBLE_EQ(orm[0][2], 0.5);
  EXPECT_DOUBLE_EQ(orm[2][1], 0.5);
  EXPECT_DOUBLE_EQ(orm[1][2], orm[2][1]);
  EXPECT_DOUBLE_EQ(result->gamma[0], 0.5);
  EXPECT_DOUBLE_EQ(result->gamma[1], 0.5);
  EXPECT_DOUBLE_EQ(result->gamma[2], 1.0);
  // theta = exp(-(gamma - 0.5)): 1, 1, exp(-0.5).
  EXPECT_DOUBLE_EQ(result->importance[0], 1.0);
  EXPECT_DOUBLE_EQ(result->importance[2], std::exp(-0.5));
  // c = suffix means: (2 + e^-0.5)/3, (1 + e^-0.5)/2, e^-0.5.
  EXPECT_DOUBLE_EQ(result->coefficient[0], (2 + std::exp(-0.5)) / 3);
  EXPECT_DOUBLE_EQ(result->coefficient[1], (1 + std::exp(-0.5)) / 2);
  EXPECT_DOUBLE_EQ(result->coefficient[2], std::exp(-0.5));
  EXPECT_TRUE(result->constant_layers.empty());
}

TEST(OrthogonalityTest, OrmIsScaleInvariant) {
  absl::StatusOr<Orthogonality> result =
      ComputeOrthogonality({TwoSampleGram(1e-3), TwoSampleGram(1e6)}, 2, 1.0);
  ASSERT_TRUE(result.ok());
  EXPECT_NEAR(result->orm[0][1], 1.0, 1e-15);
}

TEST(OrthogonalityTest, ImportanceIsStableForLargeBeta) {
  const std::vector<double> gamma = {40.0, 40.5, 41.0};
  for (double beta : {0.0, 1.0, 100.0, 1000.0}) {
    std::vector<double> theta = ImportanceFromGamma(gamma, beta);
    EXPECT_DOUBLE_EQ(theta[0], 1.0) << beta;  // The most orthogonal layer is the maximum.
    EXPECT_DOUBLE_EQ(theta[1], std::exp(-beta * 0.5)) << beta;
    if (beta > 0) {
      EXPECT_LT(theta[2], theta[1]);
    } else {
      EXPECT_DOUBLE_EQ(theta[2], 1.0);
    }
  }
  // exp(-beta * gamma) itself underflows here, the normalised form does not.
  EXPECT_EQ(std::exp(-1000.0 * 40.0), 0.0);
  EXPECT_GT(ImportanceFromGamma(gamma, 1000.0)[0], 0.0);
}

TEST(OrthogonalityTest, CoefficientsAreSuffixMeans) {
  EXPECT_EQ(ObjectiveCoefficients({1.0, 0.5, 0.25}),
            (std::vector<double>{1.75 / 3, 0.75 / 2, 0.25}));
  EXPECT_TRUE(ObjectiveCoefficients({}).empty());
}

TEST(OrthogonalityTest, ConstantLayerIsOrthogonalToAll) {
  absl::StatusOr<Orthogonality> result =
      ComputeOrthogonality({TwoSampleGram(1), {0, 0, 0, 0}, TwoSampleGram(2)}, 2, 1.0);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->constant_layers, std::vector<int>{1});
  EXPECT_DOUBLE_EQ(result->orm[1][1], 1.0);
  EXPECT_DOUBLE_EQ(result->orm[0][1], 0.0);
  EXPECT_DOUBLE_EQ(result->orm[1][2], 0.0);
  EXPECT_DOUBLE_EQ(result->orm[0][2], 1.0);
}

TEST(OrthogonalityTest, RefusesBadInput) {
  EXPECT_FALSE(ComputeOrthogonality({}, 2, 1.0).ok());
  EXPECT_FALSE(ComputeOrthogonality({{1, 0, 0}}, 2, 1.0).ok());
  EXPECT_FALSE(ComputeOrthogonality({TwoSampleGram(1)}, 2, -1.0).ok());
  EXPECT_FALSE(ComputeOrthogonality({TwoSampleGram(1)}, 2, NAN).ok());
  EXPECT_FALSE(ComputeOrthogonality({{1, NAN, 0, 1}}, 2, 1.0).ok());
  EXPECT_TRUE(ComputeOrthogonality({TwoSampleGram(1)}, 2, 0.0).ok());
}

}  // namespace
}  // namespace ompq::engine
