// model_quantized.onnx (workers/engine/onnx_export.h) on torchvision CNN families made by
// real PyTorch (tests/models/make_onnx_models.py), quantized with nearest rounding at
// activations 8 and 4, in both export profiles: the file is exported, its weights are int8
// codes with per-channel DequantizeLinear named as in encodings.json, its activations are
// Q -> Clip -> DQ at the b-bit range under the encodings' names (tensorrt: float Clip ->
// Q -> DQ, int8 with zero point 0 throughout, float biases), and ONNX Runtime
// (check_quantized_model.py via onnxruntime-node) gives the report's top-1. A model with an op the
// export does not know still succeeds, without the ONNX file and with the op and module named.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/script.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "nlohmann/json.hpp"
#include "workers/engine/quantize.h"
#include "workers/engine/search.h"

namespace ompq::engine {
namespace {

namespace fs = std::filesystem;

std::string ModelInput(const std::string& name) {
  return std::string(OMPQ_ONNX_MODELS_DIR) + "/" + name;
}

std::string Slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Case {
  std::string model;
  int act_bits;
  ExportProfile profile = ExportProfile::kDefault;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.model << " at activations " << c.act_bits << ", profile "
      << ExportProfileName(c.profile);
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return info.param.model + "_a" + std::to_string(info.param.act_bits) +
         (info.param.profile == ExportProfile::kTensorRt ? "_tensorrt" : "");
}

std::vector<Case> Families() {
  std::vector<Case> cases;
  for (ExportProfile profile : {ExportProfile::kDefault, ExportProfile::kTensorRt}) {
    for (const char* model : {"shufflenet", "mobilenet_v3", "squeezenet", "efficientnet", "regnet",
                              "googlenet", "convnext", "vit", "encoder"}) {
      for (int act_bits : {8, 4}) cases.push_back(Case{model, act_bits, profile});
    }
  }
  return cases;
}

float FloatAt(const onnx::TensorProto& t) {
  float v = 0;
  if (t.raw_data().size() >= sizeof v) std::memcpy(&v, t.raw_data().data(), sizeof v);
  return v;
}

class OnnxExportTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    out_ = fs::temp_directory_path() / ("ompq-onnx-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(out_);
  }
  void TearDown() override { fs::remove_all(out_); }

  // Search at the size halfway along the frontier (a mixed allocation), then quantize
  // with nearest rounding and evaluate.
  nlohmann::json Quantize(const std::string& model, int act_bits, std::vector<std::string>* files,
                          ExportProfile profile = ExportProfile::kDefault) {
    SearchOptions search;
    search.export_profile = profile;
    search.model_path = ModelInput(model + ".pt");
    search.calib_path = ModelInput("calib.pt");
    search.size_budget_bytes = int64_t{1} << 40;
    absl::StatusOr<SearchResult> searched = RunSearch(search, nullptr);
    EXPECT_TRUE(searched.ok()) << searched.status();
    if (!searched.ok()) return {};
    const nlohmann::json& frontier = searched->report["frontier"];
    EXPECT_GE(frontier.size(), 2u);
    if (frontier.size() < 2) return {};
    search.size_budget_bytes = (frontier.front()["size_bytes"].get<int64_t>() +
                                frontier.back()["size_bytes"].get<int64_t>()) /
                               2;
    searched = RunSearch(search, nullptr);
    EXPECT_TRUE(searched.ok()) << searched.status();
    if (!searched.ok()) return {};
    nlohmann::json report = searched->report;
    QuantizeOptions options;
    options.model_path = search.model_path;
    options.calib_path = search.calib_path;
    options.eval_path = ModelInput(model + ".eval.pt");
    options.finetune = FinetuneMode::kNone;
    options.act_bits = act_bits;
    options.export_profile = profile;
    options.out_dir = out_.string();
    absl::StatusOr<std::vector<std::string>> written = RunQuantization(options, report, nullptr);
    EXPECT_TRUE(written.ok()) << written.status();
    if (written.ok()) *files = *written;
    return report;
  }

  fs::path out_;
};

TEST_P(OnnxExportTest, RunsInOnnxRuntimeWithTheReportsAccuracy) {
  const Case& c = GetParam();
  std::vector<std::string> files;
  nlohmann::json report = Quantize(c.model, c.act_bits, &files, c.profile);
  ASSERT_FALSE(report.is_null());
  ASSERT_EQ(report["export"]["onnx"]["status"], "exported") << report["export"].dump();
  const bool tensorrt = c.profile == ExportProfile::kTensorRt;
  EXPECT_EQ(report["export"]["onnx"]["profile"], ExportProfileName(c.profile));
  EXPECT_EQ(report["quantization"]["export_profile"], ExportProfileName(c.profile));
  EXPECT_NE(std::find(files.begin(), files.end(), "model_quantized.onnx"), files.end());

  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(Slurp(out_ / "model_quantized.onnx")));
  ASSERT_EQ(model.opset_import_size(), 1);
  EXPECT_EQ(model.opset_import(0).version(), 13);
  const onnx::GraphProto& graph = model.graph();
  std::map<std::string, const onnx::TensorProto*> initializers;
  for (const onnx::TensorProto& t : graph.initializer()) initializers[t.name()] = &t;
  std::map<std::string, const onnx::NodeProto*> producer;
  std::map<std::string, std::vector<const onnx::NodeProto*>> consumers;
  for (const onnx::NodeProto& node : graph.node()) {
    for (const std::string& out : node.output()) producer[out] = &node;
    for (const std::string& in : node.input()) consumers[in].push_back(&node);
  }

  const nlohmann::json encodings = nlohmann::json::parse(Slurp(out_ / "encodings.json"));
  // Weights: int8 codes under the encodings' names, dequantized per output channel with
  // the encodings' scales and zero points (offset = -zero point; int8 = code - 2^(b-1)).
  for (const auto& [name, channels] : encodings["param_encodings"].items()) {
    ASSERT_TRUE(initializers.count(name)) << name;
    const onnx::TensorProto& codes = *initializers[name];
    EXPECT_EQ(codes.data_type(), onnx::TensorProto::INT8) << name;
    ASSERT_EQ(consumers[name].size(), 1u) << name;
    const onnx::NodeProto& dq = *consumers[name][0];
    EXPECT_EQ(dq.op_type(), "DequantizeLinear") << name;
    ASSERT_EQ(dq.input_size(), 3);
    const onnx::TensorProto& scale = *initializers.at(dq.input(1));
    const onnx::TensorProto& zero_point = *initializers.at(dq.input(2));
    ASSERT_EQ(scale.dims(0), static_cast<int64_t>(channels.size())) << name;
    const float* scales = reinterpret_cast<const float*>(scale.raw_data().data());
    const int8_t* zeros = reinterpret_cast<const int8_t*>(zero_point.raw_data().data());
    for (size_t k = 0; k < channels.size(); ++k) {
      EXPECT_NEAR(scales[k], channels[k]["scale"].get<double>(),
                  1e-6 * channels[k]["scale"].get<double>())
          << name << " channel " << k;
      EXPECT_EQ(zeros[k],
                -channels[k]["offset"].get<int>() - (1 << (channels[k]["bitwidth"].get<int>() - 1)))
          << name << " channel " << k;
      if (tensorrt) EXPECT_EQ(zeros[k], 0) << name << " channel " << k;
      EXPECT_EQ(channels[k]["is_symmetric"], tensorrt ? "True" : "False") << name;
    }
    const int8_t* values = reinterpret_cast<const int8_t*>(codes.raw_data().data());
    const int bits = channels[0]["bitwidth"];
    for (size_t i = 0; i < codes.raw_data().size(); ++i) {
      // TensorRT's weight codes stop at -(2^(b-1) - 1): -127 at 8 bits.
      ASSERT_GE(values[i], -(1 << (bits - 1)) + (tensorrt ? 1 : 0))
          << name << " code below " << bits << " bits";
      ASSERT_LT(values[i], 1 << (bits - 1)) << name << " code above " << bits << " bits";
    }
  }
  // Activations: the encodings' names are DequantizeLinear outputs; below 8 bits a Clip to
  // the code range sits between Q and DQ (tensorrt: a float Clip at the encoding's bounds
  // before an int8 Q with zero point 0).
  for (const auto& [name, entry] : encodings["activation_encodings"].items()) {
    const nlohmann::json& encoding = entry.is_array() ? entry[0] : entry;
    ASSERT_TRUE(producer.count(name)) << name;
    const onnx::NodeProto& dq = *producer[name];
    EXPECT_EQ(dq.op_type(), "DequantizeLinear") << name;
    const onnx::NodeProto& before = *producer.at(dq.input(0));
    if (tensorrt) {
      ASSERT_EQ(before.op_type(), "QuantizeLinear") << name;
      const onnx::TensorProto& zero_point = *initializers.at(before.input(2));
      EXPECT_EQ(zero_point.data_type(), onnx::TensorProto::INT8) << name;
      EXPECT_EQ(zero_point.raw_data(), std::string(1, '\0')) << name;
      EXPECT_EQ(encoding["is_symmetric"], "True") << name;
      if (c.act_bits < 8) {
        const onnx::NodeProto& clip = *producer.at(before.input(0));
        ASSERT_EQ(clip.op_type(), "Clip") << name;
        const double max = encoding["max"].get<double>(), min = encoding["min"].get<double>();
        EXPECT_NEAR(FloatAt(*initializers.at(clip.input(1))), min, 1e-6 * std::abs(min)) << name;
        EXPECT_NEAR(FloatAt(*initializers.at(clip.input(2))), max, 1e-6 * std::abs(max)) << name;
      }
    } else if (c.act_bits < 8) {
      ASSERT_EQ(before.op_type(), "Clip") << name;
      const onnx::TensorProto& hi = *initializers.at(before.input(2));
      EXPECT_EQ(static_cast<uint8_t>(hi.raw_data()[0]), (1 << c.act_bits) - 1) << name;
    } else {
      EXPECT_EQ(before.op_type(), "QuantizeLinear") << name;
    }
  }
  EXPECT_GT(encodings["activation_encodings"].size(), 0u);
  // TensorRT's parser takes int8 Q/DQ only: no uint8 or int32 tensor anywhere.
  int int32_biases = 0;
  for (const onnx::TensorProto& t : graph.initializer()) {
    if (tensorrt) EXPECT_NE(t.data_type(), onnx::TensorProto::UINT8) << t.name();
    int32_biases += t.data_type() == onnx::TensorProto::INT32;
  }
  if (tensorrt) {
    EXPECT_EQ(int32_biases, 0);
  } else {
    EXPECT_GT(int32_biases, 0);
  }

  // The runtime's view, against the report and the TorchScript export.
  ASSERT_TRUE(WriteArtifacts(report, out_.string()).ok());
  const std::string command = std::string("/usr/bin/python3 ") + OMPQ_CHECK_QUANTIZED_MODEL + " " +
                              out_.string() + " " + ModelInput(c.model + ".eval.pt");
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

INSTANTIATE_TEST_SUITE_P(Families, OnnxExportTest, ::testing::ValuesIn(Families()), CaseName);

class OnnxSkipTest : public OnnxExportTest {};

TEST_F(OnnxSkipTest, AnUnknownOpCostsOnlyTheOnnxFileAndIsNamed) {
  std::vector<std::string> files;
  nlohmann::json report = Quantize("unknown_op", 8, &files);
  ASSERT_FALSE(report.is_null());
  const nlohmann::json& onnx = report["export"]["onnx"];
  EXPECT_EQ(onnx["status"], "skipped");
  const std::string reason = onnx["reason"];
  EXPECT_NE(reason.find("aten::cumsum"), std::string::npos) << reason;
  EXPECT_NE(reason.find("module head"), std::string::npos) << reason;
  EXPECT_EQ(files, (std::vector<std::string>{"model_quantized.pt", "encodings.json"}));
  EXPECT_FALSE(fs::exists(out_ / "model_quantized.onnx"));
  bool warned = false;
  for (const nlohmann::json& warning : report["warnings"]) {
    warned = warned || warning.get<std::string>().find("aten::cumsum") != std::string::npos;
  }
  EXPECT_TRUE(warned) << report["warnings"].dump();
}

}  // namespace
}  // namespace ompq::engine
