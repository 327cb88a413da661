// encodings.json layout: AIMET's field names and order, per-channel lists, values that
// reproduce our dequantisation, and refusal of duplicate or malformed entries.
#include "workers/engine/encodings.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace ompq::engine {
namespace {

TEST(EncodingsTest, DocumentLayout) {
  torch::manual_seed(1);
  torch::Tensor w = torch::randn({3, 2, 3, 3});
  QuantizerOptions wo;
  wo.bits = 4;
  QuantParams wp = FitWeightQuantizer(w, wo).value();
  QuantizerOptions ao;
  ao.bits = 8;
  QuantParams ap = FitActivationQuantizer(torch::relu(torch::randn({100})), ao).value();

  EncodingsBuilder builder;
  ASSERT_TRUE(builder.AddActivation("conv1.input", ap).ok());
  ASSERT_TRUE(builder.AddParam("conv1.weight", wp).ok());
  nlohmann::ordered_json doc = builder.Build();

  std::vector<std::string> keys;
  for (auto& [k, v] : doc.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"version", "activation_encodings", "param_encodings"}));
  EXPECT_EQ(doc["version"], "0.6.1");

  const auto& act = doc["activation_encodings"]["conv1.input"];
  ASSERT_TRUE(act.is_array());
  ASSERT_EQ(act.size(), 1u);
  std::vector<std::string> fields;
  for (auto& [k, v] : act[0].items()) fields.push_back(k);
  EXPECT_EQ(fields, (std::vector<std::string>{"bitwidth", "dtype", "is_symmetric", "max", "min",
                                              "offset", "scale"}));
  EXPECT_EQ(act[0]["bitwidth"], 8);
  EXPECT_EQ(act[0]["dtype"], "int");
  EXPECT_EQ(act[0]["is_symmetric"], "False");
  EXPECT_EQ(act[0]["offset"], 0);  // ReLU output: unsigned grid.
  EXPECT_DOUBLE_EQ(act[0]["min"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(act[0]["max"].get<double>(), 255 * ap.scale.item<double>());

  const auto& param = doc["param_encodings"]["conv1.weight"];
  ASSERT_EQ(param.size(), 3u);
  // Written and parsed back, the numbers are exact, and (q + offset) * scale is our value.
  nlohmann::json parsed = nlohmann::json::parse(doc.dump());
  torch::Tensor codes = Quantize(w, wp).value();
  torch::Tensor ours = QuantizeDequantize(w, wp).value();
  for (int64_t c = 0; c < 3; ++c) {
    const auto& e = parsed["param_encodings"]["conv1.weight"][c];
    EXPECT_EQ(e["bitwidth"], 4);
    EXPECT_EQ(e["scale"].get<double>(), wp.scale[c].item<double>());
    EXPECT_EQ(e["offset"].get<int64_t>(), -wp.zero_point[c].item<int64_t>());
    torch::Tensor theirs =
        ((codes[c].to(torch::kDouble) + e["offset"].get<double>()) * e["scale"].get<double>())
            .to(torch::kFloat);
    EXPECT_TRUE(torch::allclose(theirs, ours[c], 1e-6, 1e-7)) << c;
    EXPECT_DOUBLE_EQ(e["max"].get<double>() - e["min"].get<double>(),
                     15 * e["scale"].get<double>());
  }
}

TEST(EncodingsTest, SymmetricIsWrittenAsAimetDoes) {
  QuantizerOptions o;
  o.symmetric = true;
  QuantParams p = FitActivationQuantizer(torch::randn({50}), o).value();
  EncodingsBuilder builder;
  ASSERT_TRUE(builder.AddActivation("x", p).ok());
  const nlohmann::ordered_json doc = builder.Build();
  const auto& e = doc["activation_encodings"]["x"][0];
  EXPECT_EQ(e["is_symmetric"], "True");
  EXPECT_EQ(e["offset"], -128);
}

TEST(EncodingsTest, RefusesDuplicatesAndMalformedEntries) {
  QuantParams tensor = FitActivationQuantizer(torch::randn({10}), QuantizerOptions()).value();
  QuantParams channel = FitWeightQuantizer(torch::randn({2, 3}), QuantizerOptions()).value();
  EncodingsBuilder builder;
  EXPECT_TRUE(builder.AddActivation("a", tensor).ok());
  EXPECT_EQ(builder.AddActivation("a", tensor).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(builder.AddActivation("", tensor).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(builder.AddActivation("b", channel).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(builder.AddParam("w", channel).ok());
  EXPECT_EQ(builder.AddParam("w", channel).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(builder.AddParam("v", QuantParams()).code(), absl::StatusCode::kInvalidArgument);
  // Entries keep the order they were added in.
  EXPECT_TRUE(builder.AddParam("c", channel).ok());
  const nlohmann::ordered_json doc = builder.Build();
  std::vector<std::string> names;
  for (auto& [k, v] : doc["param_encodings"].items()) names.push_back(k);
  EXPECT_EQ(names, (std::vector<std::string>{"w", "c"}));
}

}  // namespace
}  // namespace ompq::engine
