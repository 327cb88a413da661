// SHA-256 content digests in the "sha256:<64 lowercase hex>" form used for blobs.
#ifndef OMPQ_COMMON_DIGEST_H_
#define OMPQ_COMMON_DIGEST_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

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

/// Digest of a byte string.
std::string DigestOf(absl::string_view data);

/// Digest of a file's contents, read in chunks.
absl::StatusOr<std::string> DigestOfFile(const std::string& path);

/// True when `digest` is "sha256:" followed by 64 lowercase hex digits.
bool IsValidDigest(absl::string_view digest);

}  // namespace ompq

#endif  // OMPQ_COMMON_DIGEST_H_
