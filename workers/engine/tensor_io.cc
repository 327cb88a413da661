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

// LibTorch's unpickler trusts counts in the pickle: a memo id grows its memo table to that
// many 16-byte entries and a string opcode allocates its declared length before reading,
// so a few crafted bytes of a .pt make it allocate gigabytes (found by
// fuzz_calibration_file). Walk the opcodes first: a valid pickle numbers its memo entries
// from 0 (so ids are below its length) and holds every string it declares.
absl::Status CheckPickleCounts(absl::string_view pickle, absl::string_view file_name) {
  auto refuse = [&](absl::string_view what) {
    return InvalidInput(absl::StrCat("cannot read torch.save() file '", file_name,
                                     "': its data.pkl is malformed (", what, ")"));
  };
  auto read_le = [&](size_t pos, int bytes) {
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; --i) {
      value = (value << 8) | static_cast<unsigned char>(pickle[pos + i]);
    }
    return value;
  };
  size_t pos = 0;
  while (pos < pickle.size()) {
    const unsigned char op = static_cast<unsigned char>(pickle[pos++]);
    size_t fixed = 0;  // Argument bytes after the opcode.
    int length_bytes = 0;  // Or: a length of this many bytes, then that many bytes.
    bool memo_id = false;
    switch (op) {
      case '.':  // STOP
        return absl::OkStatus();
      case 'K': case 'h': case 'q': case 0x80:  // BININT1 BINGET BINPUT PROTO
        fixed = 1;
        break;
      case 'M':  // BININT2
        fixed = 2;
        break;
      case 'J':  // BININT
        fixed = 4;
        break;
      case 'j': case 'r':  // LONG_BINGET LONG_BINPUT
        fixed = 4;
        memo_id = true;
        break;
      case 'G': case 0x95:  // BINFLOAT FRAME
        fixed = 8;
        break;
      case 'U': case 'C': case 0x8c: case 0x8a:  // SHORT_BINSTRING/BYTES/UNICODE LONG1
        length_bytes = 1;
        break;
      case 'X': case 'T': case 'B': case 0x8b:  // BINUNICODE BINSTRING BINBYTES LONG4
        length_bytes = 4;
        break;
      case 0x8d: case 0x8e: case 0x96:  // BINUNICODE8 BINBYTES8 BYTEARRAY8
        length_bytes = 8;
        break;
      case 'c':  // GLOBAL: module and name, each ending in a newline.
        for (int line = 0; line < 2; ++line) {
          size_t end = pickle.find('\n', pos);
          if (end == absl::string_view::npos) return refuse("truncated GLOBAL");
          pos = end + 1;
        }
        continue;
      case '(': case '0': case '1': case '2': case 'N': case 'Q': case 'R': case 'a':
      case 'b': case 'd': case '}': case 'e': case 'l': case ']': case 's': case 't':
      case ')': case 'u': case 0x81: case 0x85: case 0x86: case 0x87: case 0x88:
      case 0x89: case 0x8f: case 0x90: case 0x91: case 0x92: case 0x93: case 0x94:
        break;
      default:  // An opcode LibTorch does not know either: it refuses the file itself.
        return absl::OkStatus();
    }
    if (length_bytes > 0) {
      if (static_cast<size_t>(length_bytes) > pickle.size() - pos) return refuse("truncated");
      const uint64_t length = read_le(pos, length_bytes);
      pos += length_bytes;
      if (length > pickle.size() - pos) return refuse("a string longer than the pickle");
      pos += length;
      continue;
    }
    if (fixed > pickle.size() - pos) return refuse("truncated");
    if (memo_id && read_le(pos, 4) >= pickle.size()) return refuse("a memo id out of range");
    pos += fixed;
  }
  return absl::OkStatus();
}

absl::StatusOr<CalibrationData> LoadTorchSave(const std::string& path, absl::string_view file_name,
                                              const TensorIoLimits& limits) {
  {
    // LibTorch reads "<prefix>/data.pkl", the prefix being the first entry's folder.
    absl::StatusOr<std::vector<std::string>> entries = ListZipEntries(path);
    if (!entries.ok() || entries->empty()) {
      return InvalidInput(absl::StrCat("cannot read torch.save() file '", file_name,
                                       "': not a readable zip archive"));
    }
    const std::string prefix = (*entries)[0].substr(0, (*entries)[0].find('/'));
    absl::StatusOr<std::string> pickle =
        ReadZipEntry(path, absl::StrCat(prefix, "/data.pkl"), limits.max_file_bytes);
    if (!pickle.ok()) {
      return InvalidInput(absl::StrCat("cannot read torch.save() file '", file_name,
                                       "': ", pickle.status().message()));
    }
    RETURN_IF_ERROR(CheckPickleCounts(*pickle, file_name));
  }
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
      // Read as bytes and compare with 0 below: numpy stores any byte in a bool array
      // (arr.view(bool)), and a LibTorch bool other than 0/1 is undefined behaviour.
      type = torch::kByte;
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
  if (array.dtype == NpyDtype::kBool) tensor = tensor.ne(0);
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
