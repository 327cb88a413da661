// Loading TorchScript models: what a wrong file looks like, the op safety check, devices
// and error messages.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "common/job_error.h"
#include "tests/engine/test_models.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

using testing::ModelFile;

void ExpectFailure(const absl::Status& status, absl::string_view reason,
                   const std::string& fragment) {
  ASSERT_FALSE(status.ok()) << "expected " << reason;
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(ReasonOf(status), reason) << status;
  EXPECT_NE(status.message().find(fragment), absl::string_view::npos)
      << "'" << fragment << "' not in: " << status.message();
}

TEST(ModelLoadingTest, LoadsTracedAndScriptedModels) {
  for (const char* name : {"resnet18.pt", "scripted.pt", "sequence.pt"}) {
    absl::StatusOr<LoadedModel> model = LoadTorchScriptModel(ModelFile(name), "cpu");
    ASSERT_TRUE(model.ok()) << name << ": " << model.status();
    EXPECT_TRUE(model->device.is_cpu());
    EXPECT_TRUE(model->module.find_method("forward").has_value());
    // Scripted models are switched to eval mode (BatchNorm uses running statistics).
    EXPECT_FALSE(model->module.is_training()) << name;
  }
}

TEST(ModelLoadingTest, SaysWhatANonTorchScriptFileLooksLike) {
  const std::pair<const char*, const char*> cases[] = {
      {"empty.pt", "an empty file"},
      {"state_dict.pt", "torch.save() archive (pickled tensors or a state_dict)"},
      {"random.bin", "unrecognised binary data (4096 bytes"},
      {"notes.txt", "a text file (20 bytes, starts with \"this is not a model\")"},
      {"calib_images.npy", "a NumPy .npy file"},
      {"calib_images.npz", "a NumPy .npz archive with 2 arrays"},
      {"calib_legacy.pt", "a legacy (pre-zip) torch.save() file"},
  };
  for (const auto& [name, description] : cases) {
    absl::Status status = LoadTorchScriptModel(ModelFile(name), "cpu").status();
    ExpectFailure(status, reason::kInvalidModel, description);
    EXPECT_NE(status.message().find(std::string("'") + name + "' is not a TorchScript archive"),
              absl::string_view::npos)
        << status.message();
  }
  EXPECT_EQ(LoadTorchScriptModel(ModelFile("missing.pt"), "cpu").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ModelLoadingTest, RefusesUnsafeAndUnknownOps) {
  ExpectFailure(LoadTorchScriptModel(ModelFile("reads_file.pt"), "cpu").status(),
                reason::kUnsupportedOp, "from_file");
  ExpectFailure(LoadTorchScriptModel(ModelFile("saves_file.pt"), "cpu").status(),
                reason::kUnsupportedOp, "torch.save");
  ExpectFailure(LoadTorchScriptModel(ModelFile("profiled.pt"), "cpu").status(),
                reason::kUnsupportedOp, "'profiler::");
  ExpectFailure(LoadTorchScriptModel(ModelFile("custom_op.pt"), "cpu").status(),
                reason::kUnsupportedOp, "ompqtest::double_it");
}

// The graph walk on its own (LoadTorchScriptModel also scans the code text first).
TEST(ModelLoadingTest, GraphWalkFindsDeniedOps) {
  torch::jit::Module reads_file = torch::jit::load(ModelFile("reads_file.pt"));
  ExpectFailure(CheckModelOps(reads_file), reason::kUnsupportedOp, "'aten::from_file'");
  torch::jit::Module saves_file = torch::jit::load(ModelFile("saves_file.pt"));
  ExpectFailure(CheckModelOps(saves_file), reason::kUnsupportedOp, "'aten::save'");
  EXPECT_TRUE(CheckModelOps(torch::jit::load(ModelFile("mobilenet_v2.pt"))).ok());
  EXPECT_TRUE(CheckModelOps(torch::jit::load(ModelFile("scripted.pt"))).ok());
}

TEST(ModelLoadingTest, OpAllowlist) {
  for (const char* op : {"aten::conv2d", "aten::linear", "aten::add_", "prim::If", "prim::GetAttr",
                         "prim::Print", "aten::warn"}) {
    EXPECT_TRUE(IsAllowedOp(op)) << op;
  }
  for (const char* op : {"aten::from_file", "aten::save", "prim::rpc_async", "prim::rpc_sync",
                         "quantized::linear", "profiler::_record_function_enter_new",
                         "mylib::anything", "aten::_some_future_load_op", "tap"}) {
    EXPECT_FALSE(IsAllowedOp(op)) << op;
  }
}

TEST(ModelLoadingTest, DevicesResolve) {
  absl::StatusOr<torch::Device> cpu = ResolveDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_TRUE(cpu->is_cpu());
  absl::StatusOr<torch::Device> automatic = ResolveDevice("auto");
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(automatic->is_cuda(), torch::cuda::is_available());
  EXPECT_EQ(ResolveDevice("tpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveDevice("cuda:x").status().code(), absl::StatusCode::kInvalidArgument);
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(ResolveDevice("cuda").status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(LoadTorchScriptModel(ModelFile("grouped.pt"), "cuda").status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
}

TEST(ModelLoadingTest, ErrorSummariesKeepTheModelsOwnMessage) {
  const std::string interpreter =
      "The following operation failed in the TorchScript interpreter.\n"
      "Traceback of TorchScript (most recent call last):\n"
      "  File \"model.py\", line 3, in forward\n"
      "    return self.conv(x)\n"
      "RuntimeError: Given groups=1, weight of size [64, 3, 7, 7], expected input[2, 4, 64, "
      "64] to have 3 channels, but got 4 channels instead\n";
  EXPECT_EQ(TorchErrorSummary(interpreter),
            "RuntimeError: Given groups=1, weight of size [64, 3, 7, 7], expected input[2, 4, "
            "64, 64] to have 3 channels, but got 4 channels instead");
  EXPECT_EQ(TorchErrorSummary("shape mismatch\nException raised from foo at bar.cpp:1\nframe #0"),
            "shape mismatch");
  EXPECT_EQ(TorchErrorSummary(""), "unknown LibTorch error");
  EXPECT_LE(TorchErrorSummary(std::string(5000, 'x')).size(), 603u);

  absl::Status status = CallTorch(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                                  "the model failed", [] { TORCH_CHECK(false, "bad shape"); });
  EXPECT_EQ(ReasonOf(status), reason::kInputMismatch);
  EXPECT_EQ(status.message(), "the model failed: bad shape");
  EXPECT_TRUE(CallTorch(absl::StatusCode::kInternal, reason::kInternal, "x", [] {}).ok());
}

}  // namespace
}  // namespace ompq::engine
