#include "rpc/blob_transfer.h"

#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/digest.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"

namespace ompq::rpc {
namespace {

namespace fs = std::filesystem;

// Transfers move MiB-sized buffers (the messages, gRPC's slices); glibc would mmap and
// unmap each, costing page faults and zeroing per MiB (as in server/blob_service.cc).
// Kept on the heap they are reused. Process-wide, set once by the first transfer.
void KeepLargeBuffersOnTheHeap() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
  });
}

absl::Duration TransferTimeout(const TransferLimits& limits, int64_t size_bytes) {
  if (size_bytes < 0) return limits.unknown_size_timeout;
  return limits.base_timeout + absl::Seconds(static_cast<double>(size_bytes) /
                                             static_cast<double>(limits.min_bytes_per_second));
}

// Returns true when the server lacks `digest`.
absl::StatusOr<bool> IsMissing(v1::BlobService::StubInterface& stub,
                               const ConnectionOptions& connection, const TransferLimits& limits,
                               const std::string& digest) {
  grpc::ClientContext context;
  PrepareContext(context, connection, limits.rpc_timeout);
  v1::FindMissingBlobsRequest request;
  request.add_digests(digest);
  v1::FindMissingBlobsResponse response;
  RETURN_IF_ERROR(FromGrpcStatus(stub.FindMissingBlobs(&context, request, &response)));
  for (const auto& missing : response.missing_digests()) {
    if (missing == digest) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<UploadResult> UploadFile(v1::BlobService::StubInterface& stub,
                                        const ConnectionOptions& connection,
                                        const TransferLimits& limits, const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("'", path, "' does not exist or is not a regular file; check the path"));
  }
  KeepLargeBuffersOnTheHeap();
  UploadResult result;
  result.size_bytes = static_cast<int64_t>(fs::file_size(path, ec));
  ASSIGN_OR_RETURN(result.digest, DigestOfFile(path));
  ASSIGN_OR_RETURN(bool missing, IsMissing(stub, connection, limits, result.digest));
  if (!missing) return result;

  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  grpc::ClientContext context;
  PrepareContext(context, connection, TransferTimeout(limits, result.size_bytes));
  v1::WriteBlobResponse response;
  auto writer = stub.Write(&context, &response);

  // The first message names the blob; every message may carry a chunk.
  v1::WriteBlobRequest chunk;
  chunk.set_digest(result.digest);
  chunk.set_size_bytes(result.size_bytes);
  bool stream_ok = true;
  do {
    // Read straight into the message: no intermediate buffer to copy from.
    std::string* data = chunk.mutable_data();
    data->resize(static_cast<size_t>(limits.chunk_bytes));
    in.read(data->data(), static_cast<std::streamsize>(data->size()));
    data->resize(static_cast<size_t>(in.gcount()));
    // A failed Write means the server ended the call; Finish() says why.
    stream_ok = writer->Write(chunk);
    chunk.clear_digest();
    chunk.clear_size_bytes();
  } while (stream_ok && in);
  if (in.bad()) {
    context.TryCancel();
    writer->Finish();
    return absl::DataLossError(absl::StrCat("error reading '", path, "' during upload"));
  }
  if (stream_ok) writer->WritesDone();
  RETURN_IF_ERROR(FromGrpcStatus(writer->Finish()));
  result.uploaded = !response.already_existed();
  return result;
}

absl::Status DownloadBlob(v1::BlobService::StubInterface& stub, const ConnectionOptions& connection,
                          const TransferLimits& limits, const std::string& digest,
                          int64_t size_hint, const std::string& path) {
  KeepLargeBuffersOnTheHeap();
  const std::string temp_path = absl::StrCat(path, ".part-", getpid());
  std::ofstream out(temp_path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write '", temp_path, "': check that the folder is writable"));
  }
  grpc::ClientContext context;
  PrepareContext(context, connection, TransferTimeout(limits, size_hint));
  v1::ReadBlobRequest request;
  request.set_digest(digest);
  auto reader = stub.Read(&context, request);
  v1::ReadBlobResponse chunk;
  ChunkHasher hasher;
  while (reader->Read(&chunk)) {
    const std::string& data = chunk.data();
    hasher.Start(data);  // Hashed while it is written, as the server's blob store does.
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    hasher.Wait();
  }
  absl::Status status = FromGrpcStatus(reader->Finish());
  out.close();
  if (status.ok() && !out) {
    status = absl::DataLossError(absl::StrCat("error writing '", temp_path, "'"));
  }
  if (status.ok()) {
    std::string got = hasher.Finish();
    if (got != digest) {
      status = absl::DataLossError(
          absl::StrCat("downloaded bytes of ", digest, " hash to ", got, "; retry"));
    }
  }
  std::error_code ec;
  if (status.ok()) {
    fs::rename(temp_path, path, ec);
    if (ec) {
      status = absl::InternalError(
          absl::StrCat("cannot rename '", temp_path, "' to '", path, "': ", ec.message()));
    }
  }
  if (!status.ok()) fs::remove(temp_path, ec);
  return status;
}

}  // namespace ompq::rpc
