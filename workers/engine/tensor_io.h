// Calibration data files: `.pt` written by torch.save (a Tensor, or a dict with keys
// "inputs" and "labels"), NumPy `.npy` (inputs) and `.npz` (keys "inputs", "labels").
//
// Files are recognised by their bytes, not their names. Every malformed file gives
// INVALID_ARGUMENT with reason INVALID_INPUT and a message saying what is wrong.
#ifndef OMPQ_WORKERS_ENGINE_TENSOR_IO_H_
#define OMPQ_WORKERS_ENGINE_TENSOR_IO_H_

#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "workers/engine/npy.h"

namespace ompq::engine {

/// Calibration (or evaluation) samples along dimension 0.
struct CalibrationData {
  torch::Tensor inputs;                 // [N, ...]; float64/float16 become float32.
  std::optional<torch::Tensor> labels;  // [N] when the file has labels.
};

/// Limits on what a file may make us allocate.
struct TensorIoLimits {
  uint64_t max_file_bytes = 16ull << 30;    // Whole .pt / .npy file.
  uint64_t max_member_bytes = 16ull << 30;  // One uncompressed .npz member.
};

/// Loads calibration data from a .pt, .npy or .npz file.
absl::StatusOr<CalibrationData> LoadCalibrationFile(const std::string& path,
                                                    const TensorIoLimits& limits = {});

/// Parses .npy bytes into a tensor of the matching dtype (uint16/uint32 widen to
/// int32/int64; uint64 is refused), copied, native byte order, C order.
absl::StatusOr<torch::Tensor> ParseNpyTensor(absl::string_view bytes);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_TENSOR_IO_H_
