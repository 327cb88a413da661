// The one mapping between absl::Status and grpc::Status.
#ifndef OMPQ_COMMON_GRPC_STATUS_H_
#define OMPQ_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace ompq {

/// absl -> gRPC, keeping code and message (codes share numbering).
grpc::Status ToGrpcStatus(const absl::Status& status);

/// gRPC -> absl, keeping code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

/// Canonical name of a code, e.g. "INVALID_ARGUMENT".
std::string StatusCodeName(absl::StatusCode code);

}  // namespace ompq

#endif  // OMPQ_COMMON_GRPC_STATUS_H_
