// Moving files in and out of the server's content-addressed blob store (BlobService):
// uploads that skip blobs the server already has, downloads that appear only when whole.
#ifndef OMPQ_RPC_BLOB_TRANSFER_H_
#define OMPQ_RPC_BLOB_TRANSFER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ompq/v1/blob_service.grpc.pb.h"
#include "rpc/channel.h"

namespace ompq::rpc {

/// Deadlines for transfers: `base + size / min_bytes_per_second`, so a big file gets
/// more time but a stalled transfer still ends.
struct TransferLimits {
  absl::Duration rpc_timeout = absl::Seconds(30);           // FindMissingBlobs.
  absl::Duration base_timeout = absl::Seconds(60);          // Fixed part of a transfer deadline.
  int64_t min_bytes_per_second = 1 << 20;                   // Slowest rate still accepted.
  absl::Duration unknown_size_timeout = absl::Minutes(10);  // When the size is unknown.
  int64_t chunk_bytes = 1 << 20;                            // Bytes per streamed message.
};

/// What UploadFile did.
struct UploadResult {
  std::string digest;  // "sha256:<hex>" of the file.
  int64_t size_bytes = 0;
  bool uploaded = false;  // False when the server already had the blob.
};

/// Uploads the file at `path` unless the server already has its digest. NOT_FOUND when
/// the local file is missing or not a regular file.
absl::StatusOr<UploadResult> UploadFile(v1::BlobService::StubInterface& stub,
                                        const ConnectionOptions& connection,
                                        const TransferLimits& limits, const std::string& path);

/// Downloads blob `digest` to `path`: streamed to a temporary file beside it, checked
/// against the digest, then renamed, so `path` never holds a partial file.
/// `size_hint` (bytes, -1 unknown) only sizes the deadline.
absl::Status DownloadBlob(v1::BlobService::StubInterface& stub, const ConnectionOptions& connection,
                          const TransferLimits& limits, const std::string& digest,
                          int64_t size_hint, const std::string& path);

}  // namespace ompq::rpc

#endif  // OMPQ_RPC_BLOB_TRANSFER_H_
