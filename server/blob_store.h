// BlobStore: content-addressed files on disk, DIR/sha256/<first two hex>/<hex>.
//
// A blob becomes visible only when whole: BlobWriter writes a temporary file in the
// blob's own directory, checks size and SHA-256, fsyncs, renames, and fsyncs the
// directory. A writer dropped before a successful Commit() removes its temporary file.
// Several server replicas may share one directory (renames are atomic).
#ifndef OMPQ_SERVER_BLOB_STORE_H_
#define OMPQ_SERVER_BLOB_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/digest.h"

namespace ompq {

class BlobStore;

/// Streams one blob into the store.
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  /// Appends bytes. INVALID_ARGUMENT (and the writer is finished) past the declared size.
  absl::Status Append(absl::string_view data) { return Append(absl::MakeConstSpan(&data, 1)); }
  /// Appends bytes given in pieces, in order (one write for all of them).
  absl::Status Append(absl::Span<const absl::string_view> pieces);
  /// Verifies size and digest and publishes the blob. INVALID_ARGUMENT naming expected and
  /// actual on mismatch, and nothing is left behind. Returns true when this call stored the
  /// blob, false when an identical blob was already there.
  absl::StatusOr<bool> Commit();
  /// Bytes appended so far.
  int64_t bytes_written() const { return written_; }

 private:
  friend class BlobStore;
  BlobWriter(BlobStore* store, std::string digest, int64_t size, std::string temp_path, int fd);
  void Discard();
  absl::Status WriteAll(absl::Span<const absl::string_view> pieces);
  void StartWriteBack();

  BlobStore* store_;
  std::string digest_;
  int64_t expected_size_;
  std::string temp_path_;
  int fd_;
  int64_t written_ = 0;
  int64_t write_back_started_ = 0;  // Bytes handed to the disk before Commit's fsync.
  ChunkHasher hasher_;
};

/// Reads one blob in chunks.
class BlobReader {
 public:
  ~BlobReader();
  BlobReader(const BlobReader&) = delete;
  BlobReader& operator=(const BlobReader&) = delete;

  /// Reads up to `max_bytes` into `out`; `out` is empty at the end of the blob.
  absl::Status Read(size_t max_bytes, std::string* out);
  /// Size of the blob.
  int64_t size() const { return size_; }

 private:
  friend class BlobStore;
  BlobReader(int fd, int64_t size) : fd_(fd), size_(size) {}
  int fd_;
  int64_t size_;
};

/// The content-addressed store.
class BlobStore {
 public:
  /// Opens (creating) the store under `dir`; removes temporary files older than a day that
  /// a crash left behind, and counts the stored bytes.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(const std::string& dir);

  /// True when the blob is stored. `digest` must be valid (IsValidDigest).
  bool Exists(absl::string_view digest) const;
  /// Size of a stored blob; NOT_FOUND when absent.
  absl::StatusOr<int64_t> Size(absl::string_view digest) const;
  /// Starts writing the blob `digest` of `size_bytes` bytes (digest must be valid).
  absl::StatusOr<std::unique_ptr<BlobWriter>> StartWrite(absl::string_view digest,
                                                         int64_t size_bytes);
  /// Opens a stored blob; NOT_FOUND naming the digest when absent.
  absl::StatusOr<std::unique_ptr<BlobReader>> OpenForRead(absl::string_view digest) const;
  /// Records that `tenant` may read and reference the blob: it uploaded the bytes, or a
  /// job of its produced them. An empty marker file, DIR/owners/<tenant>/<hex>, so replicas
  /// sharing the directory share the records. `tenant` must be a valid tenant name
  /// (letters, digits, '.', '_', '-'; see auth.h). Idempotent.
  absl::Status AddOwner(absl::string_view digest, absl::string_view tenant) const;
  /// True when AddOwner(digest, tenant) was recorded and the blob is stored.
  bool IsOwner(absl::string_view digest, absl::string_view tenant) const;
  /// Bytes of all blobs stored through or found by this process.
  int64_t TotalBytes() const { return total_bytes_.load(); }

  /// The file a blob lives in.
  std::string PathOf(absl::string_view digest) const;
  /// The marker file recording that `tenant` owns the blob.
  std::string OwnerPathOf(absl::string_view digest, absl::string_view tenant) const;

 private:
  friend class BlobWriter;
  explicit BlobStore(std::string dir) : dir_(std::move(dir)) {}

  const std::string dir_;
  std::atomic<int64_t> total_bytes_{0};
};

}  // namespace ompq

#endif  // OMPQ_SERVER_BLOB_STORE_H_
