#include "server/blob_service.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/digest.h"
#include "common/grpc_status.h"
#include "common/units.h"

namespace ompq {
namespace {

constexpr size_t kReadChunkBytes = 1 << 20;
constexpr int kMaxDigestsPerQuery = 10000;

absl::Status CheckDigest(const std::string& digest, absl::string_view field) {
  if (IsValidDigest(digest)) {
    return absl::OkStatus();
  }
  if (digest.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is required: \"sha256:\" and 64 lowercase hex digits"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, " '", digest.substr(0, 80),
                   "' is not a digest: expected \"sha256:\" and 64 lowercase hex digits"));
}

// Receives one upload. Each message is handled on the I/O pool; the next read starts only
// after the previous chunk is on disk, so at most one chunk per upload is in memory.
class WriteReactor final : public grpc::ServerReadReactor<v1::WriteBlobRequest> {
 public:
  WriteReactor(BlobStore* store, Metrics* metrics, ThreadPool* io, int64_t max_blob_bytes,
               Principal caller, v1::WriteBlobResponse* response)
      : caller_(std::move(caller)),
        store_(store),
        metrics_(metrics),
        io_(io),
        max_blob_bytes_(max_blob_bytes),
        response_(response) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    io_->Schedule([this, ok] { ok ? HandleMessage() : HandleEnd(); });
  }
  void OnDone() override { delete this; }

 private:
  // Every path ends in exactly one StartRead() or Finish(); `this` is not touched after.
  void HandleMessage() {
    if (!started_) {
      absl::Status status = Begin();
      if (!status.ok()) {
        return Finish(ToGrpcStatus(status));
      }
      started_ = true;
    } else if (!request_.digest().empty() && request_.digest() != digest_) {
      return Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
          "digest changed mid-upload from ", digest_, " to ", request_.digest().substr(0, 80),
          "; send digest only in the first message"))));
    }
    const std::string& data = request_.data();
    if (writer_ != nullptr) {
      absl::Status status = writer_->Append(data);
      if (!status.ok()) {
        return Finish(ToGrpcStatus(status));
      }
    } else {
      // Already stored: the bytes are drained and dropped. (Answering before the client
      // has sent everything would make a naive client see a failed write.)
      discarded_ += static_cast<int64_t>(data.size());
      if (discarded_ > size_) {
        return Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
            "blob ", digest_, ": received more than the declared size_bytes ", size_))));
      }
    }
    StartRead(&request_);
  }

  absl::Status Begin() {
    digest_ = request_.digest();
    size_ = request_.size_bytes();
    if (!IsValidDigest(digest_)) {
      return CheckDigest(digest_, "digest (first message)");
    }
    if (size_ < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("size_bytes must be >= 0 (the file's exact size), got ", size_));
    }
    if (size_ > max_blob_bytes_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "blob of ", size_, " bytes (", FormatBytes(size_), ") exceeds the server limit of ",
          max_blob_bytes_, " bytes (", FormatBytes(max_blob_bytes_),
          "); use a smaller file or raise the server's --max-blob-bytes"));
    }
    // A tenant that does not own a stored blob must send the bytes, verified like a new
    // upload: knowing a digest must not grant another tenant's blob.
    if (caller_.all_blobs ? store_->Exists(digest_) : store_->IsOwner(digest_, caller_.tenant)) {
      return absl::OkStatus();  // writer_ stays null: discard.
    }
    auto writer = store_->StartWrite(digest_, size_);
    if (!writer.ok()) {
      return writer.status();
    }
    writer_ = std::move(writer).value();
    return absl::OkStatus();
  }

  void HandleEnd() {
    if (!started_) {
      return Finish(ToGrpcStatus(absl::InvalidArgumentError(
          "empty upload: the first message must carry digest and size_bytes")));
    }
    response_->set_digest(digest_);
    response_->set_size_bytes(size_);
    if (writer_ == nullptr) {
      if (discarded_ != size_) {
        return Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
            "blob size mismatch: expected ", size_, " bytes (size_bytes), got ", discarded_))));
      }
      response_->set_already_existed(true);
      return Finish(grpc::Status::OK);
    }
    absl::StatusOr<bool> stored = writer_->Commit();
    writer_.reset();
    if (!stored.ok()) {
      return Finish(ToGrpcStatus(stored.status()));
    }
    if (*stored) {
      metrics_->BlobBytesWritten(size_);
      metrics_->SetBlobStoreBytes(store_->TotalBytes());
    }
    if (!caller_.all_blobs) {
      absl::Status owned = store_->AddOwner(digest_, caller_.tenant);
      if (!owned.ok()) {
        return Finish(ToGrpcStatus(owned));
      }
    }
    response_->set_already_existed(!*stored);
    Finish(grpc::Status::OK);
  }

  const Principal caller_;
  BlobStore* const store_;
  Metrics* const metrics_;
  ThreadPool* const io_;
  const int64_t max_blob_bytes_;
  v1::WriteBlobResponse* const response_;
  v1::WriteBlobRequest request_;
  bool started_ = false;
  std::string digest_;
  int64_t size_ = 0;
  int64_t discarded_ = 0;
  std::unique_ptr<BlobWriter> writer_;  // Null when the blob already existed.
};

// Sends one blob in kReadChunkBytes chunks, reading each on the I/O pool.
class ReadReactor final : public grpc::ServerWriteReactor<v1::ReadBlobResponse> {
 public:
  ReadReactor(const BlobStore* store, Metrics* metrics, ThreadPool* io,
              const v1::ReadBlobRequest& request, const Principal& caller)
      : metrics_(metrics), io_(io) {
    absl::Status valid = CheckDigest(request.digest(), "digest");
    if (!valid.ok()) {
      Finish(ToGrpcStatus(valid));
      return;
    }
    io_->Schedule([this, store, caller, digest = request.digest()] {
      if (!caller.all_blobs && !store->IsOwner(digest, caller.tenant)) {
        // The same answer as a missing blob: another tenant's blobs do not exist for it.
        return Finish(ToGrpcStatus(absl::NotFoundError(
            absl::StrCat("blob ", digest, " not found: upload it with BlobService.Write"))));
      }
      auto reader = store->OpenForRead(digest);
      if (!reader.ok()) {
        return Finish(ToGrpcStatus(reader.status()));
      }
      reader_ = std::move(reader).value();
      SendNextChunk();
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the reader went away"));
    }
    io_->Schedule([this] { SendNextChunk(); });
  }
  void OnDone() override { delete this; }

 private:
  void SendNextChunk() {
    std::string* chunk = response_.mutable_data();
    absl::Status status = reader_->Read(kReadChunkBytes, chunk);
    if (!status.ok()) {
      return Finish(ToGrpcStatus(status));
    }
    if (chunk->empty()) {
      return Finish(grpc::Status::OK);
    }
    metrics_->BlobBytesRead(static_cast<int64_t>(chunk->size()));
    StartWrite(&response_);
  }

  Metrics* const metrics_;
  ThreadPool* const io_;
  std::unique_ptr<BlobReader> reader_;
  v1::ReadBlobResponse response_;
};

}  // namespace

BlobServiceImpl::BlobServiceImpl(BlobStore* store, Metrics* metrics, ThreadPool* io,
                                 int64_t max_blob_bytes, const Authenticator* auth)
    : store_(store), metrics_(metrics), io_(io), max_blob_bytes_(max_blob_bytes), auth_(auth) {}

// Clients (role client) see only the blobs their tenant uploaded or its jobs produced
// (BlobStore::AddOwner); workers and callers of an open server see every blob.

grpc::ServerUnaryReactor* BlobServiceImpl::FindMissingBlobs(
    grpc::CallbackServerContext* context, const v1::FindMissingBlobsRequest* request,
    v1::FindMissingBlobsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, std::nullopt);
  if (!caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  if (request->digests_size() > kMaxDigestsPerQuery) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("digests: at most ", kMaxDigestsPerQuery, " per call, got ",
                     request->digests_size(), "; split the query"))));
    return reactor;
  }
  for (int i = 0; i < request->digests_size(); ++i) {
    absl::Status valid = CheckDigest(request->digests(i), absl::StrCat("digests[", i, "]"));
    if (!valid.ok()) {
      reactor->Finish(ToGrpcStatus(valid));
      return reactor;
    }
  }
  // A stat() per digest: cheap enough to answer inline.
  for (const std::string& digest : request->digests()) {
    if (caller->all_blobs ? !store_->Exists(digest) : !store_->IsOwner(digest, caller->tenant)) {
      response->add_missing_digests(digest);
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerReadReactor<v1::WriteBlobRequest>* BlobServiceImpl::Write(
    grpc::CallbackServerContext* context, v1::WriteBlobResponse* response) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, std::nullopt);
  if (!caller.ok()) {
    return new RejectedReadReactor<v1::WriteBlobRequest>(ToGrpcStatus(caller.status()));
  }
  return new WriteReactor(store_, metrics_, io_, max_blob_bytes_, *std::move(caller), response);
}

grpc::ServerWriteReactor<v1::ReadBlobResponse>* BlobServiceImpl::Read(
    grpc::CallbackServerContext* context, const v1::ReadBlobRequest* request) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, std::nullopt);
  if (!caller.ok()) {
    return new RejectedWriteReactor<v1::ReadBlobResponse>(ToGrpcStatus(caller.status()));
  }
  return new ReadReactor(store_, metrics_, io_, *request, *caller);
}

}  // namespace ompq
