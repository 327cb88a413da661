// Fuzzes SniffFile (workers/engine/file_sniff.h), which reads the head of every uploaded
// model and calibration file (and the zip directory of zips) to say what it is.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "workers/engine/file_sniff.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = ompq::fuzz::WriteScratch(data, size);
  absl::StatusOr<ompq::engine::FileSniff> sniff = ompq::engine::SniffFile(path);
  // The file exists and is readable: sniffing always answers, with a description.
  if (!sniff.ok() || sniff->description.empty()) std::abort();
  if ((size == 0) != (sniff->kind == ompq::engine::FileKind::kEmpty)) std::abort();
  return 0;
}
