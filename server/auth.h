// Authentication and tenants: who is calling, from the bearer token of each call.
//
// --auth-tokens FILE maps tokens to (tenant, role); every RPC handler of the three
// services starts with Authenticator::Authenticate(), which answers UNAUTHENTICATED for a
// missing or unknown token and PERMISSION_DENIED for the wrong role. Without a tokens file
// the server is open: every caller is a client and worker of the default tenant.
//
// Why not a grpc::AuthMetadataProcessor: gRPC only runs one on secure (TLS) credentials,
// and the server must also authenticate plaintext calls (loopback, --insecure).
#ifndef OMPQ_SERVER_AUTH_H_
#define OMPQ_SERVER_AUTH_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ompq {

/// What a token may do.
enum class Role {
  kClient,  // QuantizationService and BlobService, within its tenant.
  kWorker,  // WorkerService, and every blob (workers serve all tenants).
};

/// The caller of one RPC.
struct Principal {
  std::string tenant;      // Jobs and blobs it sees.
  Role role = Role::kClient;
  bool all_blobs = false;  // May read any blob (workers; everyone when the server is open).
};

/// One line of the tokens file.
struct TokenEntry {
  std::string token;
  std::string tenant;
  Role role = Role::kClient;
};

/// True for tenant names usable in paths: 1..64 of letters, digits, '.', '_', '-', not
/// starting with '.'.
bool IsValidTenant(absl::string_view tenant);

/// Parses a tokens file: one "TOKEN TENANT ROLE" per line (separated by spaces, tabs or
/// commas), ROLE client or worker; blank lines and lines starting with '#' are skipped.
/// Errors name `source` and the line, never the token.
absl::StatusOr<std::vector<TokenEntry>> ParseTokens(absl::string_view text,
                                                    absl::string_view source);
/// Reads and parses --auth-tokens FILE.
absl::StatusOr<std::vector<TokenEntry>> LoadTokensFile(const std::string& path);

/// Resolves callers. Thread-safe once built (read-only).
class Authenticator {
 public:
  /// `enabled`: tokens are required (a tokens file was given). `internal_worker_token`:
  /// the secret of the server's own worker children, a worker everywhere. `tls`: the main
  /// port is TLS; then plaintext calls (the loopback port of the children) must carry the
  /// internal token.
  Authenticator(bool enabled, std::vector<TokenEntry> tokens, std::string internal_worker_token,
                bool tls);

  /// Who calls; UNAUTHENTICATED (no or unknown token) or PERMISSION_DENIED (the token's
  /// role is not `needed`; nullopt: any role will do).
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContextBase& context,
                                         std::optional<Role> needed) const;
  /// The same from the "authorization" header's value (nullopt: absent) and whether the
  /// call came over TLS.
  absl::StatusOr<Principal> Resolve(const std::optional<std::string>& authorization,
                                    bool over_tls, std::optional<Role> needed) const;

  /// True when tokens are required.
  bool enabled() const { return enabled_; }

 private:
  // Constant-time lookup: every entry is compared (by SHA-256, so lengths do not leak).
  const TokenEntry* Find(absl::string_view token) const;

  const bool enabled_;
  std::vector<TokenEntry> tokens_;
  std::vector<std::string> token_hashes_;  // SHA-256 of tokens_[i].token.
  const std::string internal_hash_;        // SHA-256 of the internal token; empty: none.
  const bool tls_;
};

/// A random secret for the server's own workers (hex, 256 bits).
std::string NewInternalToken();

/// A server-streaming reactor that only answers `status` (a refused call).
template <typename T>
class RejectedWriteReactor final : public grpc::ServerWriteReactor<T> {
 public:
  explicit RejectedWriteReactor(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

/// A client-streaming reactor that only answers `status` (a refused call).
template <typename T>
class RejectedReadReactor final : public grpc::ServerReadReactor<T> {
 public:
  explicit RejectedReadReactor(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace ompq

#endif  // OMPQ_SERVER_AUTH_H_
