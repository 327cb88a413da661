#include "server/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "common/units.h"

namespace ompq {
namespace {

namespace fs = std::filesystem;

constexpr char kTempPrefix[] = ".tmp-";
// Every this many written bytes the disk starts writing them out (see StartWriteBack).
constexpr int64_t kWriteBackBytes = 8 << 20;
// Temporary files younger than this may belong to a live upload of another replica.
constexpr absl::Duration kStaleTempAge = absl::Hours(24);

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat("blob store: ", what, " '", path, "': ", std::strerror(errno)));
}

absl::string_view HexOf(absl::string_view digest) { return digest.substr(std::strlen("sha256:")); }

// Makes a rename in `dir` durable.
absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoError("open directory", dir);
  }
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) {
    return ErrnoError("fsync directory", dir);
  }
  return absl::OkStatus();
}

}  // namespace

// ---- BlobWriter ----

BlobWriter::BlobWriter(BlobStore* store, std::string digest, int64_t size, std::string temp_path,
                       int fd)
    : store_(store),
      digest_(std::move(digest)),
      expected_size_(size),
      temp_path_(std::move(temp_path)),
      fd_(fd) {}

BlobWriter::~BlobWriter() { Discard(); }

void BlobWriter::Discard() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
}

absl::Status BlobWriter::Append(absl::Span<const absl::string_view> pieces) {
  if (fd_ < 0) {
    return absl::FailedPreconditionError("blob writer is finished");
  }
  int64_t size = 0;
  for (absl::string_view piece : pieces) size += static_cast<int64_t>(piece.size());
  if (written_ + size > expected_size_) {
    Discard();
    return absl::InvalidArgumentError(
        absl::StrCat("blob ", digest_, ": received more than the declared size_bytes ",
                     expected_size_, "; send the file's exact size in the first message"));
  }
  hasher_.Start(pieces);  // Hashed while write() copies it into the page cache.
  absl::Status status = WriteAll(pieces);
  hasher_.Wait();  // Before the data goes away.
  if (!status.ok()) {
    Discard();
    return status;
  }
  if (written_ - write_back_started_ >= kWriteBackBytes) {
    StartWriteBack();
  }
  return status;
}

// Commit must fsync before the blob becomes visible. Left alone, the kernel writes nothing
// until then, so a large upload received the whole file and then waited for the disk to
// take all of it. Starting the write-out of what has arrived lets the disk work while the
// rest is received; the final fsync waits only for the tail. Only a hint: a failure here
// is caught by that fsync.
void BlobWriter::StartWriteBack() {
  ::sync_file_range(fd_, write_back_started_, written_ - write_back_started_,
                    SYNC_FILE_RANGE_WRITE);
  write_back_started_ = written_;
}

absl::Status BlobWriter::WriteAll(absl::Span<const absl::string_view> pieces) {
  std::vector<iovec> iov;
  iov.reserve(pieces.size());
  for (absl::string_view piece : pieces) {
    if (!piece.empty()) iov.push_back({const_cast<char*>(piece.data()), piece.size()});
  }
  size_t next = 0;  // First iovec not yet written in full.
  while (next < iov.size()) {
    const int count = static_cast<int>(std::min<size_t>(iov.size() - next, IOV_MAX));
    ssize_t n = ::writev(fd_, &iov[next], count);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return ErrnoError("write", temp_path_);
    }
    written_ += n;
    // Past what was written: whole pieces, then into a partly written one.
    while (n > 0) {
      const size_t take = std::min(static_cast<size_t>(n), iov[next].iov_len);
      iov[next].iov_base = static_cast<char*>(iov[next].iov_base) + take;
      iov[next].iov_len -= take;
      n -= static_cast<ssize_t>(take);
      if (iov[next].iov_len == 0) ++next;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> BlobWriter::Commit() {
  if (fd_ < 0) {
    return absl::FailedPreconditionError("blob writer is finished");
  }
  if (written_ != expected_size_) {
    Discard();
    return absl::InvalidArgumentError(
        absl::StrCat("blob size mismatch: expected ", expected_size_, " bytes (size_bytes), got ",
                     written_, "; the upload was cut short or size_bytes is wrong"));
  }
  const std::string actual = hasher_.Finish();
  if (actual != digest_) {
    Discard();
    return absl::InvalidArgumentError(
        absl::StrCat("blob digest mismatch: expected ", digest_, ", got ", actual,
                     "; the bytes were corrupted or the digest is of another file"));
  }
  if (::fsync(fd_) != 0) {
    absl::Status error = ErrnoError("fsync", temp_path_);
    Discard();
    return error;
  }
  ::close(fd_);
  fd_ = -1;
  const std::string final_path = store_->PathOf(digest_);
  // RENAME_NOREPLACE tells us whether this write stored the blob; fall back to a plain
  // rename on filesystems without it (same content either way).
  bool stored = true;
  if (::renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) !=
      0) {
    if (errno == EEXIST) {
      stored = false;
    } else if (errno == EINVAL || errno == ENOSYS) {
      if (::rename(temp_path_.c_str(), final_path.c_str()) != 0) {
        absl::Status error = ErrnoError("rename", temp_path_);
        Discard();
        return error;
      }
    } else {
      absl::Status error = ErrnoError("rename", temp_path_);
      Discard();
      return error;
    }
  }
  if (!stored) {
    Discard();
    return false;
  }
  temp_path_.clear();
  if (absl::Status synced = SyncDirectory(fs::path(final_path).parent_path()); !synced.ok()) {
    return synced;
  }
  store_->total_bytes_ += written_;
  return true;
}

// ---- BlobReader ----

BlobReader::~BlobReader() { ::close(fd_); }

absl::Status BlobReader::Read(size_t max_bytes, std::string* out) {
  out->resize(max_bytes);
  size_t filled = 0;
  while (filled < max_bytes) {
    const ssize_t n = ::read(fd_, out->data() + filled, max_bytes - filled);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      out->clear();
      return absl::InternalError(absl::StrCat("blob store: read: ", std::strerror(errno)));
    }
    if (n == 0) {
      break;
    }
    filled += static_cast<size_t>(n);
  }
  out->resize(filled);
  return absl::OkStatus();
}

// ---- BlobStore ----

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(const std::string& dir) {
  std::error_code ec;
  const fs::path root = fs::path(dir) / "sha256";
  fs::create_directories(root, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create blob directory '", root.string(), "': ", ec.message()));
  }
  std::unique_ptr<BlobStore> store(new BlobStore(dir));
  const auto stale_before =
      fs::file_time_type::clock::now() - std::chrono::seconds(absl::ToInt64Seconds(kStaleTempAge));
  int64_t total = 0;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) {
      continue;
    }
    const std::string name = it->path().filename().string();
    if (absl::StartsWith(name, kTempPrefix)) {
      if (it->last_write_time(ec) < stale_before) {
        OMPQ_LOG(INFO) << "removing stale upload " << it->path().string();
        fs::remove(it->path(), ec);
      }
      continue;
    }
    total += static_cast<int64_t>(it->file_size(ec));
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot scan blob directory '", root.string(), "': ", ec.message()));
  }
  store->total_bytes_ = total;
  return store;
}

std::string BlobStore::PathOf(absl::string_view digest) const {
  const absl::string_view hex = HexOf(digest);
  return absl::StrCat(dir_, "/sha256/", hex.substr(0, 2), "/", hex);
}

bool BlobStore::Exists(absl::string_view digest) const {
  struct stat st;
  return ::stat(PathOf(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<int64_t> BlobStore::Size(absl::string_view digest) const {
  struct stat st;
  if (::stat(PathOf(digest).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("blob ", digest, " not found"));
  }
  return static_cast<int64_t>(st.st_size);
}

// ---- Ownership (tenants see only the blobs they uploaded) ----

std::string BlobStore::OwnerPathOf(absl::string_view digest, absl::string_view tenant) const {
  return absl::StrCat(dir_, "/owners/", tenant, "/", HexOf(digest));
}

absl::Status BlobStore::AddOwner(absl::string_view digest, absl::string_view tenant) const {
  const std::string path = OwnerPathOf(digest, tenant);
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("blob store: cannot create the owners directory of '", path,
                     "': ", ec.message()));
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return ErrnoError("create", path);
  }
  ::close(fd);
  return absl::OkStatus();
}

bool BlobStore::IsOwner(absl::string_view digest, absl::string_view tenant) const {
  struct stat st;
  return Exists(digest) && ::stat(OwnerPathOf(digest, tenant).c_str(), &st) == 0;
}

absl::StatusOr<std::unique_ptr<BlobWriter>> BlobStore::StartWrite(absl::string_view digest,
                                                                  int64_t size_bytes) {
  const std::string dir = fs::path(PathOf(digest)).parent_path().string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("blob store: cannot create '", dir, "': ", ec.message()));
  }
  // The temporary file sits beside its final name so the rename stays on one filesystem.
  std::string temp_path =
      absl::StrCat(dir, "/", kTempPrefix, HexOf(digest).substr(0, 16), "-XXXXXX");
  const int fd = ::mkostemp(temp_path.data(), O_CLOEXEC);
  if (fd < 0) {
    return ErrnoError("create temporary file in", dir);
  }
  // Reserving the whole blob up front fails an upload the disk cannot hold at its start,
  // not gigabytes in, and lets the file system allocate the file in few pieces (and spend
  // less per write). File systems without fallocate skip the reservation.
  if (size_bytes > 0 && ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size_bytes) != 0 &&
      (errno == ENOSPC || errno == EDQUOT)) {
    ::close(fd);
    ::unlink(temp_path.c_str());
    return absl::ResourceExhaustedError(
        absl::StrCat("the blob store has no room for ", size_bytes, " bytes (",
                     FormatBytes(size_bytes), ") in '", dir,
                     "': free disk space there or move --blob-dir to a larger volume"));
  }
  return std::unique_ptr<BlobWriter>(
      new BlobWriter(this, std::string(digest), size_bytes, std::move(temp_path), fd));
}

absl::StatusOr<std::unique_ptr<BlobReader>> BlobStore::OpenForRead(absl::string_view digest) const {
  const std::string path = PathOf(digest);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("blob ", digest, " not found: upload it with BlobService.Write"));
    }
    return ErrnoError("open", path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return ErrnoError("stat", path);
  }
  return std::unique_ptr<BlobReader>(new BlobReader(fd, static_cast<int64_t>(st.st_size)));
}

}  // namespace ompq
