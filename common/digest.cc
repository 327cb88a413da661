#include "common/digest.h"

#include <openssl/evp.h>

#include <fstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"

namespace ompq {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::Update(absl::string_view data) {
  EVP_DigestUpdate(impl_->ctx, data.data(), data.size());
}

std::string Sha256::Finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, out, &len);
  return absl::StrCat(
      "sha256:", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(out), len)));
}

namespace {
// Below this a chunk is hashed in place: handing it over costs more than it saves.
constexpr size_t kThreadedHashBytes = 256 << 10;
}  // namespace

ChunkHasher::~ChunkHasher() {
  if (thread_.joinable()) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ChunkHasher::Idle));  // Its bytes may be going away.
      stop_ = true;
    }
    thread_.join();
  }
}

void ChunkHasher::Start(absl::Span<const absl::string_view> pieces) {
  size_t size = 0;
  for (absl::string_view piece : pieces) size += piece.size();
  if (size < kThreadedHashBytes) {
    Wait();
    for (absl::string_view piece : pieces) sha_.Update(piece);
    return;
  }
  if (!thread_.joinable()) thread_ = std::thread([this] { HashOnThread(); });
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &ChunkHasher::Idle));
  pending_.assign(pieces.begin(), pieces.end());
  busy_ = true;
}

void ChunkHasher::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &ChunkHasher::Idle));
}

std::string ChunkHasher::Finish() {
  Wait();
  return sha_.Finish();
}

void ChunkHasher::HashOnThread() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ChunkHasher::HasWorkOrStop));
      if (!busy_) return;  // stop_
    }
    // pending_ does not change while busy_.
    for (absl::string_view piece : pending_) sha_.Update(piece);
    absl::MutexLock lock(&mu_);
    busy_ = false;
  }
}

std::string DigestOf(absl::string_view data) {
  Sha256 sha;
  sha.Update(data);
  return sha.Finish();
}

absl::StatusOr<std::string> DigestOfFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  Sha256 sha;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    sha.Update(absl::string_view(buf.data(), static_cast<size_t>(in.gcount())));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading '", path, "'"));
  return sha.Finish();
}

bool IsValidDigest(absl::string_view digest) {
  if (!absl::ConsumePrefix(&digest, "sha256:") || digest.size() != 64) return false;
  for (char c : digest) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

}  // namespace ompq
