// Parser for NumPy .npy bytes (format versions 1.0, 2.0 and 3.0).
//
// Pure C++ (no LibTorch) so a fuzzer can drive it directly: every malformed input gives an
// INVALID_ARGUMENT status (reason INVALID_INPUT), never a crash or an unbounded allocation.
#ifndef OMPQ_WORKERS_ENGINE_NPY_H_
#define OMPQ_WORKERS_ENGINE_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ompq::engine {

/// Element types we accept (numpy "descr" codes b1 i1 u1 i2 u2 i4 u4 i8 u8 f2 f4 f8).
enum class NpyDtype {
  kBool,
  kInt8,
  kUInt8,
  kInt16,
  kUInt16,
  kInt32,
  kUInt32,
  kInt64,
  kUInt64,
  kFloat16,
  kFloat32,
  kFloat64,
};

/// A parsed array. `data` points into the bytes given to ParseNpy (no copy).
struct NpyArray {
  NpyDtype dtype = NpyDtype::kFloat32;
  int item_size = 4;           // Bytes per element.
  bool big_endian = false;     // Elements stored big-endian ('>' in descr).
  bool fortran_order = false;  // Column-major element order.
  std::vector<int64_t> shape;  // Empty for a 0-d array.
  absl::string_view data;      // Exactly product(shape) * item_size bytes.

  int64_t NumElements() const;
};

/// The numpy name of a dtype ("float32", ...).
const char* NpyDtypeName(NpyDtype dtype);

/// Parses a whole .npy file. The array data must follow the header exactly (no trailing
/// bytes), dims must be non-negative and the element count must not overflow.
absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_NPY_H_
