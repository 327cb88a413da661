#include "server/blob_service.h"

#include <malloc.h>

#include <deque>
#include <mutex>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/digest.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "server/write_blob_chunk.h"

namespace ompq {
namespace {

constexpr size_t kReadChunkBytes = 1 << 20;

// Every blob message is a fresh MiB-sized buffer (gRPC's slices, the parsed bytes field).
// glibc serves those with mmap and unmaps them on free, so each MiB received cost 256 page
// faults and zeroing: a quarter of the server's CPU per uploaded byte. Served from the
// heap and kept there, the buffers are reused. Process-wide, set once by the first
// BlobService.
void KeepLargeBuffersOnTheHeap() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // Above the largest message (8 MiB).
    mallopt(M_TRIM_THRESHOLD, 64 << 20);  // Free heap kept before it is returned.
  });
}
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

// Receives one upload. Receiving and storing overlap: OnReadDone queues each message and
// starts the next read at once (up to kMaxQueuedMessages queued), while one drain task on
// the I/O pool parses, hashes and writes the queued messages in order. The messages stay
// serialized until then: the drain task writes the data from gRPC's own buffers
// (WriteBlobChunk), without the copy a parse into WriteBlobRequest makes. The read of the
// next chunk used to wait until the previous one was on disk, which left the connection
// idle for the hashing and the write() of every chunk.
class WriteReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  WriteReactor(BlobStore* store, Metrics* metrics, ThreadPool* io, int64_t max_blob_bytes,
               Principal caller, grpc::ByteBuffer* response)
      : caller_(std::move(caller)),
        store_(store),
        metrics_(metrics),
        io_(io),
        max_blob_bytes_(max_blob_bytes),
        response_(response) {
    absl::MutexLock lock(&mu_);
    reading_ = true;
    StartRead(&request_);
  }

  // gRPC runs reactions on its own threads, never inside StartRead (the route_guide
  // callback example also starts operations under its mutex), so StartRead under mu_ is
  // safe. Finish is called outside mu_ and last: OnDone may delete `this` right after.
  void OnReadDone(bool ok) override {
    bool schedule = false;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (finishing_) return;  // The drain task has finished the call.
      if (ok) {
        queued_.emplace_back();
        queued_.back().Swap(&request_);  // request_ is empty again.
        if (queued_.size() < kMaxQueuedMessages) {
          reading_ = true;
          StartRead(&request_);
        }
      } else {
        ended_ = true;
      }
      if (!draining_) {
        draining_ = true;
        schedule = true;
      }
    }
    if (schedule) io_->Schedule([this] { Drain(); });
  }
  void OnDone() override { delete this; }

 private:
  static constexpr size_t kMaxQueuedMessages = 4;

  // Runs on the I/O pool, one task per upload at a time, so messages are stored in order.
  // Every path ends in exactly one Finish() or in draining_ = false (a later OnReadDone
  // schedules the next task); `this` is not touched after either.
  void Drain() {
    for (;;) {
      WriteBlobChunk message;
      bool end = false;
      {
        absl::MutexLock lock(&mu_);
        if (queued_.empty()) {
          if (!ended_) {
            draining_ = false;
            return;
          }
          finishing_ = true;
          end = true;
        } else {
          message.buffer.Swap(&queued_.front());
          queued_.pop_front();
          if (!reading_ && !ended_) {
            reading_ = true;
            StartRead(&request_);
          }
        }
      }
      if (end) {
        return HandleEnd();  // Every message is stored and no read is in flight.
      }
      absl::Status status = HandleMessage(message);
      if (!status.ok()) {
        {
          absl::MutexLock lock(&mu_);
          finishing_ = true;
        }
        writer_.reset();  // Removes the temporary file before the client hears of the error.
        return Finish(ToGrpcStatus(status));
      }
    }
  }

  absl::Status HandleMessage(WriteBlobChunk& message) {
    RETURN_IF_ERROR(ParseWriteBlobChunk(&message));
    if (!started_) {
      RETURN_IF_ERROR(Begin(message));
      started_ = true;
    } else if (!message.digest.empty() && message.digest != digest_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "digest changed mid-upload from ", digest_, " to ", message.digest.substr(0, 80),
          "; send digest only in the first message"));
    }
    if (writer_ != nullptr) {
      return writer_->Append(message.data);
    }
    // Already stored: the bytes are drained and dropped. (Answering before the client
    // has sent everything would make a naive client see a failed write.)
    discarded_ += message.data_size;
    if (discarded_ > size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blob ", digest_, ": received more than the declared size_bytes ", size_));
    }
    return absl::OkStatus();
  }

  absl::Status Begin(const WriteBlobChunk& first) {
    digest_ = first.digest;
    size_ = first.size_bytes;
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
    v1::WriteBlobResponse response;
    response.set_digest(digest_);
    response.set_size_bytes(size_);
    if (writer_ == nullptr) {
      if (discarded_ != size_) {
        return Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
            "blob size mismatch: expected ", size_, " bytes (size_bytes), got ", discarded_))));
      }
      response.set_already_existed(true);
      return Respond(response);
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
    response.set_already_existed(!*stored);
    Respond(response);
  }

  // The method is raw (bytes in, bytes out), so the answer is serialized here.
  void Respond(const v1::WriteBlobResponse& response) {
    bool own_buffer = false;
    Finish(grpc::SerializationTraits<v1::WriteBlobResponse>::Serialize(response, response_,
                                                                       &own_buffer));
  }

  const Principal caller_;
  BlobStore* const store_;
  Metrics* const metrics_;
  ThreadPool* const io_;
  const int64_t max_blob_bytes_;
  grpc::ByteBuffer* const response_;  // A serialized WriteBlobResponse (see Respond).

  absl::Mutex mu_;
  grpc::ByteBuffer request_;  // Filled by the read in flight (reading_).
  std::deque<grpc::ByteBuffer> queued_ ABSL_GUARDED_BY(mu_);  // Received, not stored.
  bool reading_ ABSL_GUARDED_BY(mu_) = false;    // A StartRead is in flight.
  bool ended_ ABSL_GUARDED_BY(mu_) = false;      // The client half-closed.
  bool draining_ ABSL_GUARDED_BY(mu_) = false;   // A Drain task is scheduled or running.
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;  // Finish is called or about to be.

  // Owned by the drain task.
  bool started_ = false;
  std::string digest_;
  int64_t size_ = 0;
  int64_t discarded_ = 0;
  std::unique_ptr<BlobWriter> writer_;  // Null when the blob already existed.
};

// Sends one blob in kReadChunkBytes chunks. The I/O pool reads the next chunk while the
// previous one is being sent (one chunk read ahead), so the disk read and the network
// send overlap instead of taking turns.
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
    {
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    io_->Schedule([this, store, caller, digest = request.digest()] {
      absl::Status status;
      if (!caller.all_blobs && !store->IsOwner(digest, caller.tenant)) {
        // The same answer as a missing blob: another tenant's blobs do not exist for it.
        status = absl::NotFoundError(
            absl::StrCat("blob ", digest, " not found: upload it with BlobService.Write"));
      } else {
        auto reader = store->OpenForRead(digest);
        if (reader.ok()) {
          reader_ = std::move(reader).value();
        } else {
          status = reader.status();
        }
      }
      status.ok() ? ReadAhead() : ReadDone(status);
    });
  }

  void OnWriteDone(bool ok) override {
    absl::ReleasableMutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      read_status_ = absl::CancelledError("the reader went away");
      done_ = true;
    }
    Step(lock);
  }
  void OnDone() override { delete this; }

 private:
  // On the I/O pool: reads the next chunk into next_ (owned by this task while reading_).
  void ReadAhead() {
    absl::Status status = reader_->Read(kReadChunkBytes, next_.mutable_data());
    ReadDone(status);
  }

  void ReadDone(const absl::Status& status) {
    absl::ReleasableMutexLock lock(&mu_);
    reading_ = false;
    if (!status.ok()) {
      if (read_status_.ok()) read_status_ = status;
      done_ = true;
    } else if (next_.data().empty()) {
      done_ = true;  // End of the blob.
    } else {
      next_ready_ = true;
    }
    Step(lock);
  }

  // Decides, under mu_, what to start next; starts it after releasing mu_. Finish comes
  // only when neither a read nor a write is in flight, and nothing starts after it, so
  // `this` (deleted by OnDone) outlives every task.
  void Step(absl::ReleasableMutexLock& lock) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) {
      return;
    }
    if (done_ && !read_status_.ok()) {
      next_ready_ = false;  // A failed read or a reader gone: send nothing more.
    }
    bool start_write = false;
    bool start_read = false;
    if (!writing_ && next_ready_) {
      sending_.Swap(&next_);
      next_.clear_data();
      next_ready_ = false;
      writing_ = true;
      start_write = true;
    }
    if (!reading_ && !next_ready_ && !done_) {
      reading_ = true;
      start_read = true;
    }
    const bool finish = !reading_ && !writing_ && !next_ready_ && done_;
    if (finish) finished_ = true;
    const absl::Status status = read_status_;
    lock.Release();
    if (start_write) {
      metrics_->BlobBytesRead(static_cast<int64_t>(sending_.data().size()));
      StartWrite(&sending_);
    }
    if (start_read) io_->Schedule([this] { ReadAhead(); });
    if (finish) Finish(ToGrpcStatus(status));
  }

  Metrics* const metrics_;
  ThreadPool* const io_;
  std::unique_ptr<BlobReader> reader_;  // Used by the one read task in flight.
  absl::Mutex mu_;
  v1::ReadBlobResponse sending_;  // The chunk being written (while writing_).
  v1::ReadBlobResponse next_;     // The chunk read ahead (while reading_ or next_ready_).
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool next_ready_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // End of blob, read error or reader gone.
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status read_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

BlobServiceImpl::BlobServiceImpl(BlobStore* store, Metrics* metrics, ThreadPool* io,
                                 int64_t max_blob_bytes, const Authenticator* auth)
    : store_(store), metrics_(metrics), io_(io), max_blob_bytes_(max_blob_bytes), auth_(auth) {
  KeepLargeBuffersOnTheHeap();
}

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

grpc::ServerReadReactor<grpc::ByteBuffer>* BlobServiceImpl::Write(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  absl::StatusOr<Principal> caller = auth_->Authenticate(*context, std::nullopt);
  if (!caller.ok()) {
    return new RejectedReadReactor<grpc::ByteBuffer>(ToGrpcStatus(caller.status()));
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
