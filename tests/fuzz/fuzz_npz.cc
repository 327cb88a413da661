// Fuzzes the torch-free .npz path (zip directory, member extraction with a size cap, then
// ParseNpy on each .npy member), as LoadCalibrationFile uses it on a downloaded blob.
#include <cstdint>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_util.h"
#include "workers/engine/file_sniff.h"
#include "workers/engine/npy.h"

namespace {
// Small cap on member sizes: a zip bomb must be refused, not expanded.
constexpr uint64_t kMaxMemberBytes = 1 << 20;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = ompq::fuzz::WriteScratch(data, size);
  absl::StatusOr<std::vector<std::string>> members = ompq::engine::ListZipEntries(path);
  if (!members.ok()) return 0;
  for (const std::string& member : *members) {
    absl::StatusOr<std::string> bytes =
        ompq::engine::ReadZipEntry(path, member, kMaxMemberBytes);
    if (!bytes.ok()) continue;
    if (bytes->size() > kMaxMemberBytes) std::abort();
    absl::StatusOr<ompq::engine::NpyArray> array = ompq::engine::ParseNpy(*bytes);
    (void)array;
  }
  return 0;
}
