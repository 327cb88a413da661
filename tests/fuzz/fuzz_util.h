// Helpers shared by the fuzz targets whose parsers take a file path (libzip, LibTorch).
#ifndef OMPQ_TESTS_FUZZ_FUZZ_UTIL_H_
#define OMPQ_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace ompq::fuzz {

// One scratch file per process, rewritten with each input: the parsers under test open
// files by path, as the worker does with downloaded blobs.
inline const std::string& ScratchPath() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    std::string p = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") +
                    "/ompq-fuzz-" + std::to_string(::getpid()) + ".bin";
    std::atexit([] { std::remove(ScratchPath().c_str()); });
    return p;
  }();
  return path;
}

// Writes `data` to the scratch file and returns its path; aborts if it cannot (a broken
// harness must not look like a clean run).
inline const std::string& WriteScratch(const uint8_t* data, size_t size) {
  const std::string& path = ScratchPath();
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr || (size > 0 && std::fwrite(data, 1, size, file) != size) ||
      std::fclose(file) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

}  // namespace ompq::fuzz

#endif  // OMPQ_TESTS_FUZZ_FUZZ_UTIL_H_
