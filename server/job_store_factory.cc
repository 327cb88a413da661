#include "server/job_store_factory.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/postgres_job_store.h"
#include "server/sqlite_job_store.h"

namespace ompq {

absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(const std::string& url) {
  absl::string_view rest = url;
  if (absl::ConsumePrefix(&rest, "sqlite://")) {
    if (rest.empty()) {
      return absl::InvalidArgumentError(
          "--database sqlite:// needs a file path, e.g. sqlite://ompq-data/jobs.db");
    }
    auto store = SqliteJobStore::Open(std::string(rest));
    if (!store.ok()) {
      return store.status();
    }
    return std::unique_ptr<JobStore>(std::move(store).value());
  }
  if (absl::StartsWith(url, "postgresql://") || absl::StartsWith(url, "postgres://")) {
    auto store = PostgresJobStore::Open(url);
    if (!store.ok()) {
      return store.status();
    }
    return std::unique_ptr<JobStore>(std::move(store).value());
  }
  // Only the scheme is echoed: a URL may carry a password.
  const size_t scheme_end = url.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "(none)" : url.substr(0, scheme_end);
  return absl::InvalidArgumentError(
      absl::StrCat("--database: scheme '", scheme,
                   "' is not supported: use sqlite://PATH (e.g. sqlite://ompq-data/jobs.db) or "
                   "postgresql://USER@HOST:PORT/DB"));
}

std::string RedactDatabaseUrl(const std::string& url) {
  // Only PostgreSQL URLs carry credentials.
  if (absl::StartsWith(url, "postgresql://") || absl::StartsWith(url, "postgres://")) {
    return RedactPostgresUrl(url);
  }
  return url;
}

}  // namespace ompq
