// Tests of ompqctl's exit codes and error messages (client/exit_codes.h).
#include "client/exit_codes.h"

#include <gtest/gtest.h>

namespace ompq::client {
namespace {

TEST(ExitCodeForStatus, FollowsTheProductContract) {
  EXPECT_EQ(ExitCodeForStatus(absl::OkStatus()), kExitSuccess);
  // 2: bad usage or input refused.
  for (auto code : {absl::StatusCode::kInvalidArgument, absl::StatusCode::kFailedPrecondition,
                    absl::StatusCode::kNotFound, absl::StatusCode::kResourceExhausted,
                    absl::StatusCode::kUnimplemented}) {
    EXPECT_EQ(ExitCodeForStatus(absl::Status(code, "x")), kExitUsage)
        << absl::StatusCodeToString(code);
  }
  // 4: unreachable, not answering, or credentials refused.
  for (auto code : {absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded,
                    absl::StatusCode::kUnauthenticated, absl::StatusCode::kPermissionDenied}) {
    EXPECT_EQ(ExitCodeForStatus(absl::Status(code, "x")), kExitUnreachable)
        << absl::StatusCodeToString(code);
  }
  EXPECT_EQ(ExitCodeForStatus(absl::InternalError("x")), kExitJobFailed);
}

TEST(ExitCodeForJob, OnlySucceededIsZero) {
  v1::Job job;
  job.set_state(v1::SUCCEEDED);
  EXPECT_EQ(ExitCodeForJob(job), kExitSuccess);
  job.set_state(v1::FAILED);
  EXPECT_EQ(ExitCodeForJob(job), kExitJobFailed);
  job.set_state(v1::CANCELLED);
  EXPECT_EQ(ExitCodeForJob(job), kExitJobFailed);
}

TEST(DescribeError, SaysWhatToDoNext) {
  std::string unreachable =
      DescribeError(absl::UnavailableError("connection refused"), "10.0.0.1:50051");
  EXPECT_NE(unreachable.find("10.0.0.1:50051"), std::string::npos);
  EXPECT_NE(unreachable.find("--server"), std::string::npos);
  EXPECT_NE(unreachable.find("connection refused"), std::string::npos);

  std::string auth = DescribeError(absl::UnauthenticatedError("no token"), "s");
  EXPECT_NE(auth.find("--token"), std::string::npos);
  EXPECT_NE(auth.find("OMPQ_TOKEN"), std::string::npos);

  // Input errors keep the server's own message, which names the field and the fix.
  EXPECT_EQ(DescribeError(absl::InvalidArgumentError("spec.act_bits: use 1..16"), "s"),
            "spec.act_bits: use 1..16");
}

}  // namespace
}  // namespace ompq::client
