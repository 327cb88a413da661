// How ompq processes (ompqctl, ompq-worker) reach ompq-server: one gRPC channel with
// TLS or not, and per-call contexts that carry a deadline and the bearer token.
#ifndef OMPQ_RPC_CHANNEL_H_
#define OMPQ_RPC_CHANNEL_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ompq::rpc {

/// Where the server is and how to authenticate to it.
struct ConnectionOptions {
  std::string server = "127.0.0.1:50051";  // host:port of ompq-server.
  std::string token;                       // Bearer token; empty: none sent.
  std::string tls_ca;                      // PEM file of the CA; empty: plaintext.
  // Name the server certificate must carry when it differs from `server`'s host (e.g. a
  // probe dialling localhost in the server's pod); empty: the host of `server`.
  std::string tls_server_name;
};

/// Opens a channel to `options.server`: TLS trusting `tls_ca` when given (checking the
/// certificate for `tls_server_name` when set), else plaintext. NOT_FOUND when the CA file
/// cannot be read; INVALID_ARGUMENT for `tls_server_name` without `tls_ca`.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ConnectionOptions& options);

/// Sets the deadline `now + timeout` on `context` and adds the token as
/// "authorization: Bearer <token>" metadata when there is one.
void PrepareContext(grpc::ClientContext& context, const ConnectionOptions& options,
                    absl::Duration timeout);

/// Same with an absolute deadline.
void PrepareContextUntil(grpc::ClientContext& context, const ConnectionOptions& options,
                         absl::Time deadline);

}  // namespace ompq::rpc

#endif  // OMPQ_RPC_CHANNEL_H_
