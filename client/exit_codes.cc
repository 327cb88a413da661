#include "client/exit_codes.h"

#include "absl/strings/str_cat.h"

namespace ompq::client {

ExitCode ExitCodeForStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitSuccess;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnimplemented:
      return kExitUsage;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitUnreachable;
    default:
      // INTERNAL, UNKNOWN, DATA_LOSS, ...: the operation failed for a reason the user
      // cannot fix by changing the input; 1 is the generic failure code.
      return kExitJobFailed;
  }
}

ExitCode ExitCodeForJob(const v1::Job& job) {
  return job.state() == v1::SUCCEEDED ? kExitSuccess : kExitJobFailed;
}

std::string DescribeError(const absl::Status& status, const std::string& server) {
  std::string detail(status.message());
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return absl::StrCat("cannot reach ompq-server at ", server, " (", detail,
                          "): start it with `ompq-server` or pass --server (or set "
                          "OMPQ_SERVER)");
    case absl::StatusCode::kDeadlineExceeded:
      return absl::StrCat("ompq-server at ", server, " did not answer in time (", detail,
                          "): check that it is running and healthy, or pass --server");
    case absl::StatusCode::kUnauthenticated:
      return absl::StrCat("ompq-server at ", server, " refused the credentials (", detail,
                          "): pass a valid token with --token or set OMPQ_TOKEN");
    case absl::StatusCode::kPermissionDenied:
      return absl::StrCat("not allowed (", detail,
                          "): use a token whose tenant and role permit this");
    case absl::StatusCode::kResourceExhausted:
      return absl::StrCat(detail,
                          " (the server's limits were reached: retry later, or "
                          "use a smaller file or fewer queued jobs)");
    case absl::StatusCode::kUnimplemented:
      return absl::StrCat(detail,
                          " (this server does not support it yet: leave the "
                          "option out or upgrade ompq-server)");
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return absl::StrCat(detail,
                          " (an internal error: retry; if it persists, check the "
                          "ompq-server log)");
    default:
      // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION...: the message already names
      // the field or file and the fix.
      return detail;
  }
}

}  // namespace ompq::client
