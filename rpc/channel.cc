#include "rpc/channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace ompq::rpc {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ConnectionOptions& options) {
  if (!options.tls_server_name.empty() && options.tls_ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls-server-name needs --tls-ca: a certificate name is only checked over TLS");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_ca.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    std::ifstream in(options.tls_ca, std::ios::binary);
    std::stringstream pem;
    pem << in.rdbuf();
    if (!in || pem.str().empty()) {
      return absl::NotFoundError(absl::StrCat("cannot read the TLS CA file '", options.tls_ca,
                                              "': check the path given to --tls-ca"));
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  // Artifacts and uploads travel in 1 MiB chunks; leave headroom over the 4 MiB default.
  args.SetMaxReceiveMessageSize(16 * 1024 * 1024);
  if (!options.tls_server_name.empty()) {
    // Only the name checked in the certificate changes; the TCP peer stays `server`.
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  return grpc::CreateCustomChannel(options.server, credentials, args);
}

void PrepareContextUntil(grpc::ClientContext& context, const ConnectionOptions& options,
                         absl::Time deadline) {
  context.set_deadline(absl::ToChronoTime(deadline));
  // Call credentials are dropped on plaintext channels, so the token travels as plain
  // metadata; the server checks it either way.
  if (!options.token.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options.token));
  }
}

void PrepareContext(grpc::ClientContext& context, const ConnectionOptions& options,
                    absl::Duration timeout) {
  PrepareContextUntil(context, options, absl::Now() + timeout);
}

}  // namespace ompq::rpc
