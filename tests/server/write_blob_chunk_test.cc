// ParseWriteBlobChunk reads a serialized WriteBlobRequest as protobuf would, but leaves the
// data in the received slices. Checked against protobuf's own parse of the same bytes.
#include "server/write_blob_chunk.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ompq/v1/blob_service.pb.h"

namespace ompq {
namespace {

// `bytes` as a buffer of slices cut at `cuts` (as gRPC hands over what TCP delivered).
grpc::ByteBuffer InSlices(const std::string& bytes, std::vector<size_t> cuts) {
  cuts.push_back(bytes.size());
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  for (size_t cut : cuts) {
    slices.emplace_back(bytes.data() + at, cut - at);
    at = cut;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

absl::StatusOr<WriteBlobChunk> Parse(const std::string& bytes, std::vector<size_t> cuts = {}) {
  WriteBlobChunk chunk;
  chunk.buffer = InSlices(bytes, std::move(cuts));
  absl::Status status = ParseWriteBlobChunk(&chunk);
  if (!status.ok()) return status;
  return chunk;  // Moved: the views stay valid.
}

std::string Data(const WriteBlobChunk& chunk) { return absl::StrJoin(chunk.data, ""); }

TEST(WriteBlobChunkTest, FieldsMatchProtobufWhereverTheSlicesAreCut) {
  std::mt19937 random(7);
  std::string data(3 * (1 << 20) + 17, '\0');
  for (char& c : data) c = static_cast<char>(random());
  v1::WriteBlobRequest request;
  request.set_digest("sha256:" + std::string(64, 'a'));
  request.set_size_bytes(123456789012);
  request.set_data(data);
  const std::string bytes = request.SerializeAsString();
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<size_t> cuts;
    for (size_t at = random() % 100; at < bytes.size(); at += 1 + random() % 70000) {
      cuts.push_back(at);
    }
    auto chunk = Parse(bytes, cuts);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    EXPECT_EQ(chunk->digest, request.digest());
    EXPECT_EQ(chunk->size_bytes, request.size_bytes());
    EXPECT_EQ(chunk->data_size, static_cast<int64_t>(data.size()));
    EXPECT_TRUE(Data(*chunk) == data) << "trial " << trial;
  }
}

TEST(WriteBlobChunkTest, DataOnlyAndEmptyMessages) {
  v1::WriteBlobRequest request;
  request.set_data("just bytes");
  auto chunk = Parse(request.SerializeAsString());
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  EXPECT_EQ(chunk->digest, "");
  EXPECT_EQ(chunk->size_bytes, 0);
  EXPECT_EQ(Data(*chunk), "just bytes");
  auto empty = Parse("");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->data_size, 0);
  EXPECT_TRUE(empty->data.empty());
}

TEST(WriteBlobChunkTest, NegativeSizeIsKeptForTheServerToRefuse) {
  v1::WriteBlobRequest request;
  request.set_size_bytes(-1);
  auto chunk = Parse(request.SerializeAsString());
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  EXPECT_EQ(chunk->size_bytes, -1);
}

// Unknown fields are skipped and a repeated field's last value wins, as protobuf parses.
TEST(WriteBlobChunkTest, UnknownAndRepeatedFieldsAsProtobufReadsThem) {
  v1::WriteBlobRequest first, second;
  first.set_digest("first");
  first.set_data("old data");
  second.set_data("new data");
  second.set_size_bytes(8);
  const std::string unknown = std::string("\x48\x05", 2)               // field 9, varint
                              + std::string("\x52\x03xyz", 5)           // field 10, bytes
                              + std::string("\x5d\x01\x02\x03\x04", 5)  // field 11, fixed32
                              + std::string("\x61", 1) + std::string(8, '\x07')  // 12, fixed64
                              + std::string("\x18\x01", 2);  // field 3 as a varint: unknown
  const std::string bytes = first.SerializeAsString() + unknown + second.SerializeAsString();
  v1::WriteBlobRequest expected;
  ASSERT_TRUE(expected.ParseFromString(bytes));
  auto chunk = Parse(bytes, {3, 11, 12});
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  EXPECT_EQ(chunk->digest, expected.digest());
  EXPECT_EQ(chunk->size_bytes, expected.size_bytes());
  EXPECT_EQ(Data(*chunk), expected.data());
  EXPECT_EQ(Data(*chunk), "new data");
}

TEST(WriteBlobChunkTest, MalformedBytesAreInvalidArgument) {
  v1::WriteBlobRequest request;
  request.set_digest("sha256:abc");
  request.set_data(std::string(1000, 'd'));
  const std::string bytes = request.SerializeAsString();
  const std::vector<std::string> malformed = {
      bytes.substr(0, bytes.size() - 1),   // data cut short
      bytes.substr(0, 5),                  // digest cut short
      std::string("\x1a\xff", 2),          // data length cut short
      std::string("\x00\x01", 2),          // field 0
      std::string("\x0b\x0c", 2),          // a group (wire type 3)
      std::string("\x0e", 1),              // wire type 6
      std::string("\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11),  // varint too long
      bytes + std::string("\x1a\x10", 2) + "short",  // a second data field cut short
  };
  for (const std::string& bad : malformed) {
    auto chunk = Parse(bad);
    EXPECT_EQ(chunk.status().code(), absl::StatusCode::kInvalidArgument)
        << absl::CEscape(bad.substr(0, 20));
  }
}

}  // namespace
}  // namespace ompq
