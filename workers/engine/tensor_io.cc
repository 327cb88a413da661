#include "workers/engine/tensor_io.h"

#include <torch/serialize.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/file_sniff.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {
namespace {

absl::Status InvalidInput(absl::string_view message) {
  return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput, message);
}

std::string ShapeString(const torch::Tensor& tensor) {
  return absl::StrCat("[", absl::StrJoin(tensor.sizes(), ", "), "]");
}

void ByteSwapInPlace(char* data, int64_t count, int item_size) {
  for (int64_t i = 0; i < count; ++i)
    std::reverse(data + i * item_size, data + (i + 1) * item_size);
}

// Checks shapes and brings inputs to the dtype models expect.
absl::StatusOr<CalibrationData> Finish(torch::Tensor inputs, std::optional<torch::Tensor> labels,
                                       absl::string_view file_name) {
  if (inputs.dim() < 1 || inputs.size(0) < 1) {
    return InvalidInput(absl::StrCat("'", file_name, "': inputs have shape ", ShapeString(inputs),
                                     "; expected at least one sample along dimension 0"));
  }
  // numpy writes float64 by default and models are float32; half inputs likewise.
  if (inputs.is_floating_point() && inputs.scalar_type() != torch::kFloat) {
    inputs = inputs.to(torch::kFloat);
  }
  if (labels.has_value() && (labels->dim() < 1 || labels->size(0) != inputs.size(0))) {
    return InvalidInput(absl::StrCat("'", file_name, "': labels have shape ", ShapeString(*labels),
                                     " but inputs have ", inputs.size(0), " samples"));
  }
  return CalibrationData{inputs.contiguous(), std::move(labels)};
}

absl::StatusOr<torch::Tensor> TensorFromIValue(const c10::IValue& value, absl::string_view what) {
  if (!value.isTensor()) {
    return InvalidInput(absl::StrCat(what, " is a ", value.tagKind(), ", expected a Tensor"));
  }
  return value.toTensor();
}

absl::StatusOr<CalibrationData> LoadTorchSave(const std::string& path, absl::string_view file_name,
                                              const TensorIoLimits& limits) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path, limits.max_file_bytes));
  c10::IValue value;
  {
    std::vector<char> buffer(bytes.begin(), bytes.end());
    bytes.clear();
    bytes.shrink_to_fit();
    RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                              absl::StrCat("cannot read torch.save() file '", file_name,
                                           "' (LibTorch reads a tensor or a dict of tensors, "
                                           "not other Python objects)"),
                              [&] { value = torch::pickle_load(buffer); }));
  }
  if (value.isTensor()) return Finish(value.toTensor(), std::nullopt, file_name);
  if (!value.isGenericDict()) {
    return InvalidInput(absl::StrCat("'", file_name, "' holds a ", value.tagKind(),
                                     "; expected a Tensor or a dict with keys 'inputs' and "
                                     "'labels'"));
  }
  std::optional<torch::Tensor> inputs, labels;
  std::vector<std::string> keys;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString()) continue;
    const std::string key = entry.key().toStringRef();
    keys.push_back(key);
    if (key == "inputs") {
      ASSIGN_OR_RETURN(inputs, TensorFromIValue(entry.value(), "'inputs'"));
    } else if (key == "labels") {
      ASSIGN_OR_RETURN(labels, TensorFromIValue(entry.value(), "'labels'"));
    }
  }
  if (!inputs.has_value()) {
    if (keys.size() > 5) {
      keys.resize(5);
      keys.push_back("...");
    }
    return InvalidInput(absl::StrCat(
        "'", file_name, "' is a dict without an 'inputs' tensor (keys: ", absl::StrJoin(keys, ", "),
        "); a state_dict is not calibration data"));
  }
  return Finish(*inputs, labels, file_name);
}

absl::StatusOr<CalibrationData> LoadNpz(const std::string& path, absl::string_view file_name,
                                        const TensorIoLimits& limits) {
  ASSIGN_OR_RETURN(std::vector<std::string> members, ListZipEntries(path));
  auto has = [&](const std::string& name) {
    return std::find(members.begin(), members.end(), name) != members.end();
  };
  std::string inputs_member = "inputs.npy";
  if (!has(inputs_member)) {
    // A lone unnamed array (np.savez(f, x) names it arr_0) is taken as the inputs.
    if (members.size() != 1) {
      return InvalidInput(absl::StrCat(
          "'", file_name, "' has no 'inputs' array (arrays: ", absl::StrJoin(members, ", "), ")"));
    }
    inputs_member = members[0];
  }
  auto read_member = [&](const std::string& member) -> absl::StatusOr<torch::Tensor> {
    absl::StatusOr<std::string> bytes = ReadZipEntry(path, member, limits.max_member_bytes);
    if (!bytes.ok()) {
      return InvalidInput(absl::StrCat("'", file_name, "': ", bytes.status().message()));
    }
    absl::StatusOr<torch::Tensor> tensor = ParseNpyTensor(*bytes);
    if (!tensor.ok()) {
      return InvalidInput(
          absl::StrCat("'", file_name, "' member '", member, "': ", tensor.status().message()));
    }
    return tensor;
  };
  ASSIGN_OR_RETURN(torch::Tensor inputs, read_member(inputs_member));
  std::optional<torch::Tensor> labels;
  if (has("labels.npy")) {
    ASSIGN_OR_RETURN(labels, read_member("labels.npy"));
  }
  return Finish(inputs, labels, file_name);
}

}  // namespace

absl::StatusOr<torch::Tensor> ParseNpyTensor(absl::string_view bytes) {
  ASSIGN_OR_RETURN(NpyArray array, ParseNpy(bytes));
  torch::ScalarType type = torch::kFloat;
  switch (array.dtype) {
    case NpyDtype::kBool:
      type = torch::kBool;
      break;
    case NpyDtype::kInt8:
      type = torch::kChar;
      break;
    case NpyDtype::kUInt8:
      type = torch::kByte;
      break;
    case NpyDtype::kInt16:
    case NpyDtype::kUInt16:
      type = torch::kShort;
      break;
    case NpyDtype::kInt32:
    case NpyDtype::kUInt32:
      type = torch::kInt;
      break;
    case NpyDtype::kInt64:
      type = torch::kLong;
      break;
    case NpyDtype::kFloat16:
      type = torch::kHalf;
      break;
    case NpyDtype::kFloat32:
      type = torch::kFloat;
      break;
    case NpyDtype::kFloat64:
      type = torch::kDouble;
      break;
    case NpyDtype::kUInt64:
      return InvalidInput(
          "uint64 arrays are not supported (LibTorch has no uint64): convert "
          "to int64");
  }
  // Fortran order is C order of the reversed shape; transpose back after copying.
  std::vector<int64_t> storage_shape = array.shape;
  if (array.fortran_order) std::reverse(storage_shape.begin(), storage_shape.end());
  torch::Tensor tensor;
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kResourceExhausted, reason::kInvalidInput, "cannot allocate the .npy array",
      [&] { tensor = torch::empty(storage_shape, torch::TensorOptions(type)); }));
  if (!array.data.empty()) std::memcpy(tensor.data_ptr(), array.data.data(), array.data.size());
  if (array.big_endian) {
    ByteSwapInPlace(static_cast<char*>(tensor.data_ptr()), array.NumElements(), array.item_size);
  }
  // Unsigned types were read as their signed twins: widen and mask back to the true value.
  if (array.dtype == NpyDtype::kUInt16) tensor = tensor.to(torch::kInt).bitwise_and(0xFFFF);
  if (array.dtype == NpyDtype::kUInt32) {
    tensor = tensor.to(torch::kLong).bitwise_and(int64_t{0xFFFFFFFF});
  }
  if (array.fortran_order && tensor.dim() > 1) {
    std::vector<int64_t> reverse(tensor.dim());
    for (int64_t i = 0; i < tensor.dim(); ++i) reverse[i] = tensor.dim() - 1 - i;
    tensor = tensor.permute(reverse).contiguous();
  }
  return tensor;
}

absl::StatusOr<CalibrationData> LoadCalibrationFile(const std::string& path,
                                                    const TensorIoLimits& limits) {
  const std::string file_name = std::filesystem::path(path).filename().string();
  absl::StatusOr<FileSniff> sniff = SniffFile(path);
  if (!sniff.ok()) {
    return InvalidInput(
        absl::StrCat("cannot read calibration file '", file_name, "': ", sniff.status().message()));
  }
  switch (sniff->kind) {
    case FileKind::kNpy: {
      absl::StatusOr<std::string> bytes = ReadFileBytes(path, limits.max_file_bytes);
      if (!bytes.ok()) return InvalidInput(bytes.status().message());
      absl::StatusOr<torch::Tensor> inputs = ParseNpyTensor(*bytes);
      if (!inputs.ok()) {
        return InvalidInput(absl::StrCat("'", file_name, "': ", inputs.status().message()));
      }
      return Finish(*inputs, std::nullopt, file_name);
    }
    case FileKind::kNpz:
      return LoadNpz(path, file_name, limits);
    case FileKind::kTorchSaveArchive:
      return LoadTorchSave(path, file_name, limits);
    case FileKind::kLegacyTorchSave:
      return InvalidInput(absl::StrCat("'", file_name, "' uses the legacy torch.save() format; ",
                                       "save it again with PyTorch >= 1.6 defaults (zip format)"));
    case FileKind::kTorchScriptArchive:
      return InvalidInput(absl::StrCat("'", file_name,
                                       "' is a TorchScript model, not "
                                       "calibration data"));
    default:
      return InvalidInput(absl::StrCat("'", file_name, "' is not calibration data: it is ",
                                       sniff->description,
                                       "; expected .pt (torch.save), .npy or .npz"));
  }
}

}  // namespace ompq::engine
