// Fuzzes ParseNpy (workers/engine/npy.h): any bytes give an array consistent with its
// header or an INVALID_INPUT status, never a crash.
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "common/job_error.h"
#include "workers/engine/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ompq::engine::NpyArray> array = ompq::engine::ParseNpy(bytes);
  if (!array.ok()) {
    // The documented contract: malformed input is INVALID_ARGUMENT / INVALID_INPUT.
    if (array.status().code() != absl::StatusCode::kInvalidArgument ||
        ompq::ReasonOf(array.status()) != ompq::reason::kInvalidInput) {
      std::abort();
    }
    return 0;
  }
  // The data view must lie inside the input and hold exactly the promised bytes.
  const char* begin = bytes.data();
  const char* end = begin + bytes.size();
  if (array->data.data() < begin || array->data.data() + array->data.size() > end) std::abort();
  if (static_cast<uint64_t>(array->NumElements()) * array->item_size != array->data.size()) {
    std::abort();
  }
  // Touch every byte, so ASan checks the view.
  unsigned sum = 0;
  for (char c : array->data) sum += static_cast<unsigned char>(c);
  (void)sum;
  (void)ompq::engine::NpyDtypeName(array->dtype);
  return 0;
}
