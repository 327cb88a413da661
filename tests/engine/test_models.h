// Paths to the models and files tests/models/make_models.py generates for the tests.
#ifndef OMPQ_TESTS_ENGINE_TEST_MODELS_H_
#define OMPQ_TESTS_ENGINE_TEST_MODELS_H_

#include <fstream>
#include <string>

#include "nlohmann/json.hpp"

namespace ompq::engine::testing {

/// Samples the expected values were computed on (make_models.py SAMPLES).
inline constexpr int kSamples = 16;

inline std::string ModelFile(const std::string& name) {
  return std::string(OMPQ_TEST_MODELS_DIR) + "/" + name;
}

/// The independent expectations for model `name` (`<name>.expected.json`).
inline nlohmann::json Expected(const std::string& name) {
  std::ifstream in(ModelFile(name + ".expected.json"));
  return nlohmann::json::parse(in);
}

}  // namespace ompq::engine::testing

#endif  // OMPQ_TESTS_ENGINE_TEST_MODELS_H_
