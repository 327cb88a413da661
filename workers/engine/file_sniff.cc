#include "workers/engine/file_sniff.h"

#include <zip.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace ompq::engine {
namespace {

// How much of a file's head we look at to recognise it.
constexpr size_t kSniffBytes = 4096;

struct ZipCloser {
  void operator()(zip_t* archive) const { zip_discard(archive); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipCloser>;

absl::StatusOr<ZipPtr> OpenZip(const std::string& path) {
  int error_code = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_RDONLY, &error_code);
  if (archive == nullptr) {
    zip_error_t error;
    zip_error_init_with_code(&error, error_code);
    std::string message = zip_error_strerror(&error);
    zip_error_fini(&error);
    return absl::InvalidArgumentError(absl::StrCat("not a readable zip archive: ", message));
  }
  return ZipPtr(archive);
}

// True when `head` looks like text: UTF-8 or ASCII with ordinary control characters only.
bool LooksLikeText(absl::string_view head) {
  if (head.empty()) return false;
  for (unsigned char c : head) {
    if (c == 0) return false;
    if (c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f') return false;
  }
  return true;
}

std::string HexPrefix(absl::string_view head) {
  std::string hex;
  for (size_t i = 0; i < std::min<size_t>(head.size(), 8); ++i) {
    absl::StrAppendFormat(&hex, "%s%02x", i == 0 ? "" : " ", static_cast<unsigned char>(head[i]));
  }
  return hex;
}

// Printable start of a text file for messages: first line, at most 40 characters.
std::string TextPrefix(absl::string_view head) {
  absl::string_view line = head.substr(0, head.find('\n'));
  std::string out(line.substr(0, 40));
  if (line.size() > 40) out += "...";
  return out;
}

FileSniff DescribeZip(const std::string& path, uint64_t file_size) {
  absl::StatusOr<std::vector<std::string>> entries = ListZipEntries(path);
  if (!entries.ok()) {
    return {FileKind::kOtherBinary, absl::StrFormat("a damaged zip archive (%d bytes): %s",
                                                    file_size, entries.status().message())};
  }
  bool has_code = false, has_data_pkl = false;
  size_t npy_members = 0;
  for (const std::string& name : *entries) {
    // TorchScript and torch.save() archives keep everything under one "<prefix>/" folder.
    size_t slash = name.find('/');
    absl::string_view rest = slash == std::string::npos ? absl::string_view()
                                                        : absl::string_view(name).substr(slash + 1);
    if (absl::StartsWith(rest, "code/")) has_code = true;
    if (rest == "data.pkl") has_data_pkl = true;
    if (absl::EndsWith(name, ".npy")) ++npy_members;
  }
  if (has_code && has_data_pkl) return {FileKind::kTorchScriptArchive, "a TorchScript archive"};
  if (has_data_pkl) {
    return {FileKind::kTorchSaveArchive,
            "a torch.save() archive (pickled tensors or a state_dict) with no TorchScript "
            "code: export the model with torch.jit.trace or torch.jit.script and save it with "
            "torch.jit.save"};
  }
  if (npy_members > 0 && npy_members == entries->size()) {
    return {FileKind::kNpz, absl::StrFormat("a NumPy .npz archive with %d arrays", npy_members)};
  }
  return {FileKind::kOtherZip,
          absl::StrFormat("a zip archive with %d entries but no TorchScript code/ or data.pkl",
                          entries->size())};
}

}  // namespace

absl::StatusOr<std::string> ReadFileBytes(const std::string& path, uint64_t max_bytes) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("no regular file at '", path, "'"));
  }
  uint64_t size = std::filesystem::file_size(path, error);
  if (error)
    return absl::NotFoundError(absl::StrCat("cannot stat '", path, "': ", error.message()));
  if (size > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("'%s' has %d bytes, more than the limit of %d", path, size, max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::string bytes(size, '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) {
    return absl::DataLossError(absl::StrCat("cannot read '", path, "'"));
  }
  return bytes;
}

absl::StatusOr<std::vector<std::string>> ListZipEntries(const std::string& path) {
  absl::StatusOr<ZipPtr> archive = OpenZip(path);
  if (!archive.ok()) return archive.status();
  zip_int64_t count = zip_get_num_entries(archive->get(), 0);
  std::vector<std::string> names;
  for (zip_int64_t i = 0; i < count; ++i) {
    const char* name = zip_get_name(archive->get(), static_cast<zip_uint64_t>(i), 0);
    if (name == nullptr) return absl::InvalidArgumentError("zip entry without a readable name");
    names.emplace_back(name);
  }
  return names;
}

absl::StatusOr<std::string> ReadZipEntry(const std::string& path, const std::string& name,
                                         uint64_t max_bytes) {
  absl::StatusOr<ZipPtr> archive = OpenZip(path);
  if (!archive.ok()) return archive.status();
  zip_stat_t stat;
  zip_stat_init(&stat);
  if (zip_stat(archive->get(), name.c_str(), 0, &stat) != 0 || !(stat.valid & ZIP_STAT_SIZE)) {
    return absl::NotFoundError(absl::StrCat("no entry '", name, "' in the zip archive"));
  }
  if (stat.size > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("zip entry '%s' expands to %d bytes, more than the limit of %d", name,
                        stat.size, max_bytes));
  }
  zip_file_t* file = zip_fopen(archive->get(), name.c_str(), 0);
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open zip entry '", name, "': ", zip_strerror(archive->get())));
  }
  std::string bytes(stat.size, '\0');
  zip_int64_t got = bytes.empty() ? 0 : zip_fread(file, bytes.data(), stat.size);
  // One more read must hit the end: an entry longer than its header says is corrupt.
  char extra = 0;
  zip_int64_t more = zip_fread(file, &extra, 1);
  zip_fclose(file);
  if (got < 0 || static_cast<zip_uint64_t>(got) != stat.size || more != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip entry '", name, "' is corrupt (size or checksum mismatch)"));
  }
  return bytes;
}

absl::StatusOr<FileSniff> SniffFile(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat("no regular file at '", path, "'"));
  }
  uint64_t size = std::filesystem::file_size(path, error);
  if (error) return absl::NotFoundError(absl::StrCat("cannot stat '", path, "'"));
  if (size == 0) return FileSniff{FileKind::kEmpty, "an empty file (0 bytes)"};

  std::ifstream in(path, std::ios::binary);
  std::string head(std::min<uint64_t>(size, kSniffBytes), '\0');
  if (!in.read(head.data(), static_cast<std::streamsize>(head.size()))) {
    return absl::DataLossError(absl::StrCat("cannot read '", path, "'"));
  }
  absl::string_view h = head;
  if (absl::StartsWith(h, "PK\x03\x04") || absl::StartsWith(h, "PK\x05\x06")) {
    return DescribeZip(path, size);
  }
  if (absl::StartsWith(h, "\x93NUMPY")) return FileSniff{FileKind::kNpy, "a NumPy .npy file"};
  // Legacy torch.save(): pickle protocol 2 followed by the LONG1 magic number
  // 0x1950a86a20f9469cfc6c (torch/serialization.py MAGIC_NUMBER).
  static constexpr char kLegacyTorchMagic[] =
      "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
  if (absl::StartsWith(h, absl::string_view(kLegacyTorchMagic, sizeof(kLegacyTorchMagic) - 1))) {
    return FileSniff{FileKind::kLegacyTorchSave,
                     "a legacy (pre-zip) torch.save() file, not a TorchScript archive"};
  }
  if (h.size() >= 2 && h[0] == '\x80' && h[1] >= 2 && h[1] <= 5) {
    return FileSniff{FileKind::kPickle, "a Python pickle, not a TorchScript archive"};
  }
  if (absl::StartsWith(h,
                       "\x7f"
                       "ELF")) {
    return FileSniff{FileKind::kElf, "an ELF executable or shared library"};
  }
  struct Magic {
    absl::string_view bytes;
    const char* what;
  };
  static constexpr Magic kMagics[] = {
      {"\x89PNG", "a PNG image"},
      {"\xff\xd8\xff", "a JPEG image"},
      {"GIF8", "a GIF image"},
      {"%PDF", "a PDF document"},
      {"\x1f\x8b", "a gzip-compressed file"},
      {"\x89HDF", "an HDF5 file (Keras .h5?)"},
      {"BZh", "a bzip2-compressed file"},
      {"\xfd"
       "7zXZ",
       "an xz-compressed file"},
  };
  for (const Magic& magic : kMagics) {
    if (absl::StartsWith(h, magic.bytes)) {
      return FileSniff{FileKind::kOtherBinary, std::string(magic.what)};
    }
  }
  // ONNX models are protobufs that start with ir_version (field 1, varint) and usually
  // name their producer near the start.
  if (h[0] == '\x08' && (absl::StrContains(h.substr(0, 256), "pytorch") ||
                         absl::StrContains(h.substr(0, 256), "onnx"))) {
    return FileSniff{FileKind::kOtherBinary, "an ONNX model (protobuf), not a TorchScript archive"};
  }
  if (LooksLikeText(h)) {
    return FileSniff{FileKind::kText, absl::StrFormat("a text file (%d bytes, starts with \"%s\")",
                                                      size, TextPrefix(h))};
  }
  return FileSniff{
      FileKind::kOtherBinary,
      absl::StrFormat("unrecognised binary data (%d bytes, starts with %s)", size, HexPrefix(h))};
}

}  // namespace ompq::engine
