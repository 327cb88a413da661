#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/digest.h"
#include "server/job_store.h"

namespace ompq {
namespace {

constexpr char kBearerPrefix[] = "Bearer ";

// Equal-length digests compared without an early exit.
bool SameHash(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

bool IsValidTenant(absl::string_view tenant) {
  if (tenant.empty() || tenant.size() > 64 || tenant.front() == '.') {
    return false;
  }
  for (char c : tenant) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' &&
        c != '-') {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokens(absl::string_view text,
                                                    absl::string_view source) {
  std::vector<TokenEntry> entries;
  std::set<std::string> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) {
      continue;
    }
    const std::vector<std::string> fields =
        absl::StrSplit(line, absl::ByAnyChar(", \t"), absl::SkipEmpty());
    // Errors say where, never what: the line holds a secret.
    const std::string where = absl::StrCat(source, " line ", line_number);
    if (fields.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": expected \"TOKEN TENANT ROLE\" (3 fields), got ", fields.size()));
    }
    TokenEntry entry;
    entry.token = fields[0];
    entry.tenant = fields[1];
    if (!IsValidTenant(entry.tenant)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": tenant '", entry.tenant.substr(0, 64),
          "' is not valid: 1-64 letters, digits, '.', '_', '-', not starting with '.'"));
    }
    if (fields[2] == "client") {
      entry.role = Role::kClient;
    } else if (fields[2] == "worker") {
      entry.role = Role::kWorker;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": role '", fields[2].substr(0, 32), "' must be client or worker"));
    }
    if (!seen.insert(entry.token).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": the token is listed twice"));
    }
    entries.push_back(std::move(entry));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, " lists no tokens: add lines \"TOKEN TENANT client|worker\""));
  }
  return entries;
}

absl::StatusOr<std::vector<TokenEntry>> LoadTokensFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read --auth-tokens '", path, "'"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return ParseTokens(text.str(), absl::StrCat("--auth-tokens '", path, "'"));
}

std::string NewInternalToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    std::abort();  // No randomness: nothing secret can be made.
  }
  std::string hex;
  for (unsigned char b : bytes) {
    absl::StrAppend(&hex, absl::Hex(b, absl::kZeroPad2));
  }
  return hex;
}

Authenticator::Authenticator(bool enabled, std::vector<TokenEntry> tokens,
                             std::string internal_worker_token, bool tls)
    : enabled_(enabled),
      tokens_(std::move(tokens)),
      internal_hash_(internal_worker_token.empty() ? std::string()
                                                   : DigestOf(internal_worker_token)),
      tls_(tls) {
  for (const TokenEntry& entry : tokens_) {
    token_hashes_.push_back(DigestOf(entry.token));
  }
}

const TokenEntry* Authenticator::Find(absl::string_view token) const {
  const std::string hash = DigestOf(token);
  const TokenEntry* found = nullptr;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (SameHash(token_hashes_[i], hash)) {
      found = &tokens_[i];  // No break: the time does not depend on the position.
    }
  }
  return found;
}

absl::StatusOr<Principal> Authenticator::Resolve(const std::optional<std::string>& authorization,
                                                 bool over_tls,
                                                 std::optional<Role> needed) const {
  std::optional<std::string> token;
  if (authorization.has_value() && absl::StartsWith(*authorization, kBearerPrefix)) {
    token = authorization->substr(std::char_traits<char>::length(kBearerPrefix));
  }
  const bool internal =
      token.has_value() && !internal_hash_.empty() && SameHash(DigestOf(*token), internal_hash_);
  if (internal) {
    // The server's own workers: a worker of every tenant.
    Principal principal{"", Role::kWorker, true};
    if (needed.has_value() && *needed != Role::kWorker) {
      return absl::PermissionDeniedError("this call needs a client token, not a worker token");
    }
    return principal;
  }
  if (tls_ && !over_tls) {
    // Only the loopback port of the server's own workers is plaintext when TLS is on.
    return absl::UnauthenticatedError("this port serves the server's own workers only");
  }
  if (!enabled_) {
    return Principal{kDefaultTenant, needed.value_or(Role::kClient), true};
  }
  if (!token.has_value() || token->empty()) {
    return absl::UnauthenticatedError(
        "this server requires a bearer token (metadata \"authorization: Bearer TOKEN\")");
  }
  const TokenEntry* entry = Find(*token);
  if (entry == nullptr) {
    return absl::UnauthenticatedError("the bearer token is not valid");
  }
  if (needed.has_value() && entry->role != *needed) {
    return absl::PermissionDeniedError(
        *needed == Role::kWorker
            ? "WorkerService needs a worker token; this is a client token"
            : "this call needs a client token; this is a worker token");
  }
  return Principal{entry->tenant, entry->role, entry->role == Role::kWorker};
}

absl::StatusOr<Principal> Authenticator::Authenticate(const grpc::ServerContextBase& context,
                                                      std::optional<Role> needed) const {
  std::optional<std::string> authorization;
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it != metadata.end()) {
    authorization = std::string(it->second.data(), it->second.size());
  }
  bool over_tls = false;
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr) {
    for (const grpc::string_ref& type : auth->FindPropertyValues("transport_security_type")) {
      over_tls = over_tls || type == "ssl";
    }
  }
  return Resolve(authorization, over_tls, needed);
}

}  // namespace ompq
