// Fuzzes the zero-copy parse of upload messages (server/write_blob_chunk.h) against
// protobuf's own parse of the same bytes. The first input byte sets where the message is
// cut into slices, as TCP reads cut it; the rest is the message.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "ompq/v1/blob_service.pb.h"
#include "server/write_blob_chunk.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t step = 1 + data[0] % 64;
  const std::string message(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < message.size(); at += step) {
    slices.emplace_back(message.data() + at, std::min(step, message.size() - at));
  }
  ompq::WriteBlobChunk chunk;
  chunk.buffer = grpc::ByteBuffer(slices.data(), slices.size());
  slices.clear();  // Only the chunk holds the bytes now.
  const absl::Status status = ompq::ParseWriteBlobChunk(&chunk);
  if (!status.ok()) {
    if (status.code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  // Reading every view: ASan catches one that points outside the chunk's slices.
  const std::string bytes = absl::StrJoin(chunk.data, "");
  if (static_cast<int64_t>(bytes.size()) != chunk.data_size) std::abort();
  // Where protobuf parses the bytes too (it also checks that the digest is UTF-8 and
  // accepts groups, which uploads never carry), both read the same fields.
  ompq::v1::WriteBlobRequest expected;
  if (expected.ParseFromString(message) &&
      (expected.digest() != chunk.digest || expected.size_bytes() != chunk.size_bytes ||
       expected.data() != bytes)) {
    std::abort();
  }
  return 0;
}
