// bench_export: what writing model_quantized.onnx costs and how large it is, measured side
// by side in one run: the ONNX export's time against one warm forward pass of the same
// batch, and its file size against the FP32 model exported by the same translator (no
// quantizers). See docs/benchmarks.md "ONNX export".
//
// Usage: bench_export --model M.pt --calib C.pt [--samples 32] [--act-bits 8]
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "workers/engine/graph_layers.h"
#include "workers/engine/job_run.h"
#include "workers/engine/onnx_export.h"

namespace {

namespace engine = ompq::engine;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const absl::Status& status) {
  std::fprintf(stderr, "bench_export: %s\n", status.ToString().c_str());
  std::exit(1);
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, calib_path;
  int64_t samples = 32;
  int act_bits = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--model")
      model_path = argv[i + 1];
    else if (flag == "--calib")
      calib_path = argv[i + 1];
    else if (flag == "--samples")
      samples = std::atoll(argv[i + 1]);
    else if (flag == "--act-bits")
      act_bits = std::atoi(argv[i + 1]);
  }
  if (model_path.empty() || calib_path.empty()) {
    std::fprintf(stderr, "usage: bench_export --model M.pt --calib C.pt [--samples N]\n");
    return 2;
  }
  engine::InitTorchThreads();
  const std::filesystem::path out =
      std::filesystem::temp_directory_path() / ("ompq-bench-export-" + std::to_string(getpid()));

  // The job: search at the size halfway along the frontier, nearest rounding, export.
  engine::SearchOptions search;
  search.model_path = model_path;
  search.calib_path = calib_path;
  search.search_samples = static_cast<int>(samples);
  search.size_budget_bytes = int64_t{1} << 40;
  engine::QuantizeOptions quantize;
  quantize.model_path = model_path;
  quantize.calib_path = calib_path;
  quantize.finetune = engine::FinetuneMode::kNone;
  quantize.act_bits = act_bits;
  quantize.calib_samples = static_cast<int>(samples);
  quantize.out_dir = out.string();
  absl::StatusOr<std::unique_ptr<engine::JobRun>> probe =
      engine::JobRun::Load(search, quantize, nullptr);
  if (!probe.ok()) Die(probe.status());
  if (absl::Status s = (*probe)->Search(nullptr); !s.ok()) Die(s);
  const nlohmann::json& frontier = (*probe)->report()["frontier"];
  search.size_budget_bytes = (frontier.front()["size_bytes"].get<int64_t>() +
                              frontier.back()["size_bytes"].get<int64_t>()) /
                             2;
  absl::StatusOr<std::unique_ptr<engine::JobRun>> run =
      engine::JobRun::Load(search, quantize, nullptr);
  if (!run.ok()) Die(run.status());
  if (absl::Status s = (*run)->Search(nullptr); !s.ok()) Die(s);
  if (absl::Status s = (*run)->Quantize(nullptr); !s.ok()) Die(s);
  const nlohmann::json& onnx = (*run)->report()["export"]["onnx"];
  if (onnx["status"] != "exported") {
    std::fprintf(stderr, "bench_export: not exported: %s\n", onnx.dump().c_str());
    return 1;
  }

  // One warm forward pass of the same batch (the minimum of 5).
  const engine::JobInputs& inputs = (*run)->inputs();
  torch::Tensor batch = inputs.calib.narrow(0, 0, std::min<int64_t>(samples, inputs.calib.size(0)));
  double forward = 1e30;
  {
    c10::InferenceMode inference;
    torch::jit::Module module = inputs.model.module;  // A handle: forward is not const.
    for (int k = 0; k < 6; ++k) {
      const Clock::time_point start = Clock::now();
      module.forward({batch});
      if (k > 0) forward = std::min(forward, Seconds(start));
    }
  }

  // The FP32 model through the same translator: the size an unquantized ONNX file has.
  absl::StatusOr<engine::LoadedModel> fp = engine::CopyModel(inputs.model);
  if (!fp.ok()) Die(fp.status());
  std::shared_ptr<torch::jit::Graph> graph = fp->module.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  engine::FoldStaticIfs(*graph, fp->module);
  engine::OnnxExportInput fp_input;
  fp_input.module = &fp->module;
  fp_input.graph = graph.get();
  fp_input.sample_shape.assign(batch.sizes().begin() + 1, batch.sizes().end());
  absl::StatusOr<std::string> fp_onnx = engine::ExportOnnx(fp_input);
  if (!fp_onnx.ok()) Die(fp_onnx.status());

  const double seconds = onnx["seconds"];
  const int64_t bytes = onnx["size_bytes"];
  const nlohmann::json& result = (*run)->report()["result"];
  std::printf("bench_export %s, %lld samples, act %d bits, %zu layers, mean %.2f weight bits\n",
              model_path.c_str(), static_cast<long long>(batch.size(0)), act_bits,
              (*run)->report()["layers"].size(),
              8.0 * result["size_bytes"].get<double>() /
                  std::max<double>(1, (*run)->report()["model"]["parameters"].get<double>()));
  std::printf("  forward pass       %.3f s (min of 5 warm)\n", forward);
  std::printf("  ONNX export        %.3f s = %.2fx a forward pass\n", seconds, seconds / forward);
  std::printf("  ONNX file          %.2f MiB; FP32 ONNX %.2f MiB: %.3fx\n", bytes / 1048576.0,
              fp_onnx->size() / 1048576.0, static_cast<double>(bytes) / fp_onnx->size());
  std::filesystem::remove_all(out);
  return 0;
}
