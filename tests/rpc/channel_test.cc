// Tests of the channel and per-call contexts (rpc/channel.h).
#include "rpc/channel.h"

#include <gtest/gtest.h>

#include "absl/time/clock.h"

namespace ompq::rpc {
namespace {

TEST(MakeChannel, MissingCaFileIsNotFound) {
  ConnectionOptions options;
  options.tls_ca = "/nonexistent/ca.pem";
  EXPECT_EQ(MakeChannel(options).status().code(), absl::StatusCode::kNotFound);
}

TEST(MakeChannel, ServerNameWithoutCaIsInvalid) {
  ConnectionOptions options;
  options.tls_server_name = "ompq.example";
  EXPECT_EQ(MakeChannel(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MakeChannel, PlaintextNeedsNoFiles) { EXPECT_TRUE(MakeChannel(ConnectionOptions()).ok()); }

TEST(PrepareContext, SetsTheDeadline) {
  grpc::ClientContext relative;
  const absl::Time before = absl::Now();
  PrepareContext(relative, ConnectionOptions(), absl::Seconds(30));
  const absl::Time deadline = absl::FromChrono(relative.deadline());
  EXPECT_GE(deadline, before + absl::Seconds(30) - absl::Milliseconds(1));
  EXPECT_LE(deadline, absl::Now() + absl::Seconds(30) + absl::Milliseconds(1));

  grpc::ClientContext absolute;
  const absl::Time at = absl::FromUnixSeconds(4000000000);
  PrepareContextUntil(absolute, ConnectionOptions(), at);
  EXPECT_LE(absl::AbsDuration(absl::FromChrono(absolute.deadline()) - at), absl::Microseconds(1));
}

}  // namespace
}  // namespace ompq::rpc
