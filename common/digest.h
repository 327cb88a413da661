// SHA-256 content digests in the "sha256:<64 lowercase hex>" form used for blobs.
#ifndef OMPQ_COMMON_DIGEST_H_
#define OMPQ_COMMON_DIGEST_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace ompq {

/// Incremental SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  /// Adds bytes to the hash.
  void Update(absl::string_view data);
  /// Returns "sha256:<hex>"; the object must not be used afterwards.
  std::string Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// SHA-256 of a stream whose chunks are also written somewhere: Start hashes a large chunk
/// on a thread of its own while the caller writes it, Wait returns once it is hashed.
/// Hashing and writing a chunk each take about as long (SHA-256 runs at ~1.5 GB/s with the
/// CPU's SHA instructions), so a transfer is bound by the slower, not by their sum. One
/// thread serves the whole stream: a thread per chunk cost a clone and its wake-ups per MiB.
///
///   hasher.Start(chunk); write(chunk); hasher.Wait();  ...  hasher.Finish();
class ChunkHasher {
 public:
  ChunkHasher() = default;
  ~ChunkHasher();
  ChunkHasher(const ChunkHasher&) = delete;
  ChunkHasher& operator=(const ChunkHasher&) = delete;

  /// Starts hashing `data`, which must stay valid until Wait returns. Small chunks are
  /// hashed at once, on the caller's thread.
  void Start(absl::string_view data) { Start(absl::MakeConstSpan(&data, 1)); }
  /// The same for a chunk in pieces, hashed in order.
  void Start(absl::Span<const absl::string_view> pieces);
  /// Returns when the chunk of the last Start is hashed.
  void Wait();
  /// Returns "sha256:<hex>" of all chunks; the object must not be used afterwards.
  std::string Finish();

 private:
  void HashOnThread();
  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !busy_; }
  bool HasWorkOrStop() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return busy_ || stop_; }

  Sha256 sha_;  // Touched by the thread only between Start and Wait.
  absl::Mutex mu_;
  // The chunk to hash: set by Start while !busy_, read by the thread while busy_.
  std::vector<absl::string_view> pending_;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // pending_ is being hashed.
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // Started with the first large chunk.
};

/// Digest of a byte string.
std::string DigestOf(absl::string_view data);

/// Digest of a file's contents, read in chunks.
absl::StatusOr<std::string> DigestOfFile(const std::string& path);

/// True when `digest` is "sha256:" followed by 64 lowercase hex digits.
bool IsValidDigest(absl::string_view digest);

}  // namespace ompq

#endif  // OMPQ_COMMON_DIGEST_H_
