// One BlobService.Write message as gRPC received it: digest and size_bytes parsed, the data
// left in gRPC's receive buffers instead of copied into a std::string. Parsing the message
// with protobuf copied every uploaded MiB once more, ~10% of the server's CPU per byte.
#ifndef OMPQ_SERVER_WRITE_BLOB_CHUNK_H_
#define OMPQ_SERVER_WRITE_BLOB_CHUNK_H_

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ompq {

/// A parsed ompq.v1.WriteBlobRequest whose `data` points into `slices`. May be moved (the
/// slices stay where they are) but not copied (a copy's views would point into the
/// original).
struct WriteBlobChunk {
  WriteBlobChunk() = default;
  WriteBlobChunk(WriteBlobChunk&&) = default;
  WriteBlobChunk& operator=(WriteBlobChunk&&) = default;

  grpc::ByteBuffer buffer;               // The serialized message as received; emptied by
                                         // the parse, which moves its bytes to `slices`.
  std::vector<grpc::Slice> slices;       // What `data` views.
  std::string digest;                    // Field 1; empty when absent.
  int64_t size_bytes = 0;                // Field 2; 0 when absent.
  std::vector<absl::string_view> data;   // Field 3, in pieces as the buffer holds it.
  int64_t data_size = 0;                 // Bytes in `data`.
};

/// Parses `chunk->buffer` with protobuf's wire-format reader, as WriteBlobRequest would
/// be parsed (a repeated singular field: the last one wins; unknown fields are skipped).
/// INVALID_ARGUMENT for bytes that are not such a message.
absl::Status ParseWriteBlobChunk(WriteBlobChunk* chunk);

}  // namespace ompq

#endif  // OMPQ_SERVER_WRITE_BLOB_CHUNK_H_
