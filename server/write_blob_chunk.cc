#include "server/write_blob_chunk.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream.h>

#include <algorithm>
#include <climits>

#include "absl/strings/str_cat.h"

namespace ompq {
namespace {

using google::protobuf::io::CodedInputStream;

// Field numbers of ompq.v1.WriteBlobRequest (proto/ompq/v1/blob_service.proto).
constexpr uint32_t kDigestField = 1;
constexpr uint32_t kSizeBytesField = 2;
constexpr uint32_t kDataField = 3;

// Wire types (protobuf encoding).
constexpr uint32_t kVarint = 0;
constexpr uint32_t kFixed64 = 1;
constexpr uint32_t kLengthDelimited = 2;
constexpr uint32_t kFixed32 = 5;

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed WriteBlobRequest (", what,
                   "): send a serialized ompq.v1.WriteBlobRequest"));
}

// Skips a field of no interest, as protobuf keeps it among the unknown fields.
bool SkipField(CodedInputStream& in, uint32_t wire_type) {
  uint64_t varint = 0;
  uint32_t length = 0;
  switch (wire_type) {
    case kVarint:
      return in.ReadVarint64(&varint);
    case kFixed64:
      return in.ReadLittleEndian64(&varint);
    case kLengthDelimited:
      return in.ReadVarint32(&length) && in.Skip(static_cast<int>(length));
    case kFixed32:
      return in.Skip(4);
    default:  // Groups (3, 4) are not in proto3 messages; 6 and 7 do not exist.
      return false;
  }
}

// Reads the slices in order, handing out pointers into the Slice objects themselves (a
// small slice keeps its bytes inline, so the pointers must not go through a copy of it).
class SliceStream final : public google::protobuf::io::ZeroCopyInputStream {
 public:
  explicit SliceStream(const std::vector<grpc::Slice>& slices) : slices_(slices) {}

  bool Next(const void** data, int* size) override {
    if (backed_up_ > 0) {
      const grpc::Slice& last = slices_[next_ - 1];
      *data = last.begin() + last.size() - backed_up_;
      *size = backed_up_;
      backed_up_ = 0;
      return true;
    }
    while (next_ < slices_.size() && slices_[next_].size() == 0) ++next_;
    if (next_ == slices_.size()) return false;
    const grpc::Slice& slice = slices_[next_++];
    *data = slice.begin();
    *size = static_cast<int>(slice.size());  // Messages are at most a few MiB.
    read_ += *size;
    return true;
  }
  void BackUp(int count) override { backed_up_ = count; }
  bool Skip(int count) override {
    const void* data = nullptr;
    int size = 0;
    while (count > 0 && Next(&data, &size)) {
      if (size >= count) {
        BackUp(size - count);
        return true;
      }
      count -= size;
    }
    return count == 0;
  }
  int64_t ByteCount() const override { return read_ - backed_up_; }

 private:
  const std::vector<grpc::Slice>& slices_;
  size_t next_ = 0;     // Index of the next slice to hand out.
  int backed_up_ = 0;   // Bytes at the end of the last slice handed back.
  int64_t read_ = 0;    // Bytes handed out.
};

}  // namespace

absl::Status ParseWriteBlobChunk(WriteBlobChunk* chunk) {
  chunk->digest.clear();
  chunk->size_bytes = 0;
  chunk->data.clear();
  chunk->data_size = 0;
  // Dump takes a reference to each slice, copying nothing (and would hand out the inflated
  // bytes of a compressed buffer); `data` views what the chunk's slices hold.
  if (!chunk->buffer.Dump(&chunk->slices).ok()) {
    return Malformed("unreadable buffer");
  }
  chunk->buffer.Clear();
  SliceStream stream(chunk->slices);
  CodedInputStream in(&stream);
  for (;;) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) {
      // 0 is both the end and a read error; only the end consumed everything.
      if (!in.ConsumedEntireMessage()) {
        return Malformed("truncated or zero tag");
      }
      return absl::OkStatus();
    }
    const uint32_t field = tag >> 3;
    const uint32_t wire_type = tag & 7;
    if (field == kDigestField && wire_type == kLengthDelimited) {
      uint32_t length = 0;
      if (!in.ReadVarint32(&length) || !in.ReadString(&chunk->digest, static_cast<int>(length))) {
        return Malformed("digest");
      }
    } else if (field == kSizeBytesField && wire_type == kVarint) {
      uint64_t value = 0;
      if (!in.ReadVarint64(&value)) {
        return Malformed("size_bytes");
      }
      chunk->size_bytes = static_cast<int64_t>(value);  // int64 is two's complement on the wire.
    } else if (field == kDataField && wire_type == kLengthDelimited) {
      uint32_t length = 0;
      if (!in.ReadVarint32(&length) || length > static_cast<uint32_t>(INT32_MAX)) {
        return Malformed("data length");
      }
      chunk->data.clear();
      chunk->data_size = length;
      // The bytes stay where they are: views of the buffer's slices.
      while (length > 0) {
        const void* piece = nullptr;
        int available = 0;
        if (!in.GetDirectBufferPointer(&piece, &available) || available <= 0) {
          return Malformed("data cut short");
        }
        const uint32_t take = std::min(length, static_cast<uint32_t>(available));
        chunk->data.emplace_back(static_cast<const char*>(piece), take);
        in.Skip(static_cast<int>(take));
        length -= take;
      }
    } else if (field == 0 || !SkipField(in, wire_type)) {
      return Malformed(absl::StrCat("field ", field, ", wire type ", wire_type));
    }
  }
}

}  // namespace ompq
