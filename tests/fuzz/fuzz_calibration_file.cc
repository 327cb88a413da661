// Fuzzes LoadCalibrationFile (workers/engine/tensor_io.h) with LibTorch linked: .pt files
// through torch::pickle_load, .npy/.npz into tensors. Our code must turn every malformed
// file into INVALID_ARGUMENT/RESOURCE_EXHAUSTED; LibTorch's own exceptions are caught by
// the CallTorch adapter. (Should LibTorch itself abort on some input, the worker process
// model isolates it: one child dies, the job fails after its attempts.)
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "workers/engine/tensor_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool init = [] {
    at::set_num_threads(1);
    return true;
  }();
  (void)init;
  const std::string& path = ompq::fuzz::WriteScratch(data, size);
  // Small limits: the fuzzer must not be able to make us allocate gigabytes.
  ompq::engine::TensorIoLimits limits;
  limits.max_file_bytes = 1 << 20;
  limits.max_member_bytes = 1 << 20;
  absl::StatusOr<ompq::engine::CalibrationData> loaded =
      ompq::engine::LoadCalibrationFile(path, limits);
  if (loaded.ok()) {
    if (!loaded->inputs.defined() || loaded->inputs.dim() < 1 || loaded->inputs.size(0) < 1) {
      std::abort();
    }
    // Every tensor we hand the engine must hold valid values of its type: a bool is 0 or
    // 1 (anything else is undefined behaviour in LibTorch's kernels).
    for (const torch::Tensor& tensor : {loaded->inputs, loaded->labels.value_or(torch::Tensor())}) {
      if (tensor.defined() && tensor.scalar_type() == torch::kBool &&
          tensor.numel() > 0 && tensor.view(torch::kByte).gt(1).any().item<bool>()) {
        std::abort();
      }
    }
  } else if (loaded.status().code() != absl::StatusCode::kInvalidArgument &&
             loaded.status().code() != absl::StatusCode::kResourceExhausted) {
    std::abort();
  }
  return 0;
}
