// ompqctl's exit codes (PRODUCT.md) and the error messages that tell users what to do.
#ifndef OMPQ_CLIENT_EXIT_CODES_H_
#define OMPQ_CLIENT_EXIT_CODES_H_

#include <string>

#include "absl/status/status.h"
#include "ompq/v1/job.pb.h"

namespace ompq::client {

/// Process exit codes of ompqctl.
enum ExitCode : int {
  kExitSuccess = 0,        // Done; for job commands the job SUCCEEDED.
  kExitJobFailed = 1,      // The job FAILED or was CANCELLED (or an unexpected error).
  kExitUsage = 2,          // Bad usage, or the server refused the input.
  kExitTimedOut = 3,       // `wait --timeout` passed first.
  kExitUnreachable = 4,    // Server unreachable, not answering, or refused the credentials.
  kExitInterrupted = 130,  // Ctrl-C while waiting; the job keeps running.
};

/// Exit code for a failed call or local check (never kExitSuccess for an error).
ExitCode ExitCodeForStatus(const absl::Status& status);

/// Exit code once a job is terminal: SUCCEEDED 0; FAILED, CANCELLED 1.
ExitCode ExitCodeForJob(const v1::Job& job);

/// One line for a person: what went wrong and what to do next. `server` is the address
/// that was tried, named in connection errors.
std::string DescribeError(const absl::Status& status, const std::string& server);

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_EXIT_CODES_H_
