// Recognises what a user-supplied file is from its bytes (not its name), so a wrong file
// gets an answer such as "a torch.save() state_dict, not a TorchScript archive" instead of
// a loader's stack trace. Also the small zip helpers (libzip) that TorchScript archives,
// torch.save() files and .npz files share.
//
// Pure C++ (no LibTorch): cheap to build and safe to fuzz.
#ifndef OMPQ_WORKERS_ENGINE_FILE_SNIFF_H_
#define OMPQ_WORKERS_ENGINE_FILE_SNIFF_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ompq::engine {

/// What a file looks like.
enum class FileKind {
  kEmpty,
  kTorchScriptArchive,  // zip with <prefix>/code/ and <prefix>/data.pkl
  kTorchSaveArchive,    // zip with <prefix>/data.pkl but no code/: torch.save() output
  kNpz,                 // zip whose members are .npy files
  kOtherZip,
  kLegacyTorchSave,  // pre-1.6 torch.save(): pickle starting with torch's magic number
  kPickle,
  kNpy,
  kElf,
  kText,
  kOtherBinary,
};

/// A file's kind plus a one-line human description ("a NumPy .npy file", ...).
struct FileSniff {
  FileKind kind = FileKind::kOtherBinary;
  std::string description;
};

/// Reads the file at `path` (its zip directory when it is a zip) and says what it is.
/// NOT_FOUND / PERMISSION_DENIED style errors only when the file cannot be read at all.
absl::StatusOr<FileSniff> SniffFile(const std::string& path);

/// Entry names of the zip archive at `path`; INVALID_ARGUMENT when it is not a readable zip.
absl::StatusOr<std::vector<std::string>> ListZipEntries(const std::string& path);

/// The uncompressed bytes of entry `name` of the zip archive at `path`. Refuses entries
/// larger than `max_bytes` (zip bombs) with RESOURCE_EXHAUSTED.
absl::StatusOr<std::string> ReadZipEntry(const std::string& path, const std::string& name,
                                         uint64_t max_bytes);

/// Reads a whole (regular) file, refusing files larger than `max_bytes`.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path, uint64_t max_bytes);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_FILE_SNIFF_H_
