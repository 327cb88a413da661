// Tests of rpc/proto_time.h: absl times <-> google.protobuf Timestamp and Duration.
#include "rpc/proto_time.h"

#include <gtest/gtest.h>

namespace ompq {
namespace {

TEST(ProtoTimestamp, KeepsMicrosecondsBothWays) {
  const absl::Time t = absl::FromUnixMicros(1700000000123456);
  const google::protobuf::Timestamp proto = ToProtoTimestamp(t);
  EXPECT_EQ(proto.seconds(), 1700000000);
  EXPECT_EQ(proto.nanos(), 123456000);
  EXPECT_EQ(FromProtoTimestamp(proto), t);
}

TEST(ProtoTimestamp, BeforeTheEpochHasPositiveNanos) {
  const google::protobuf::Timestamp proto = ToProtoTimestamp(absl::FromUnixMicros(-1));
  EXPECT_EQ(proto.seconds(), -1);
  EXPECT_EQ(proto.nanos(), 999999000);
  EXPECT_EQ(FromProtoTimestamp(proto), absl::FromUnixMicros(-1));
}

TEST(ProtoDuration, KeepsNanosecondsBothWays) {
  const absl::Duration d = absl::Seconds(20) + absl::Nanoseconds(7);
  const google::protobuf::Duration proto = ToProtoDuration(d);
  EXPECT_EQ(proto.seconds(), 20);
  EXPECT_EQ(proto.nanos(), 7);
  EXPECT_EQ(FromProtoDuration(proto), d);
}

TEST(ProtoDuration, NegativeHasOneSign) {
  const google::protobuf::Duration proto = ToProtoDuration(-absl::Milliseconds(1500));
  EXPECT_EQ(proto.seconds(), -1);
  EXPECT_EQ(proto.nanos(), -500000000);
  EXPECT_EQ(FromProtoDuration(proto), -absl::Milliseconds(1500));
}

}  // namespace
}  // namespace ompq
