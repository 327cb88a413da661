// Opens the JobStore named by a --database URL: "sqlite://PATH" (one server) or
// "postgresql://..." (several server replicas on one database).
#ifndef OMPQ_SERVER_JOB_STORE_FACTORY_H_
#define OMPQ_SERVER_JOB_STORE_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/job_store.h"

namespace ompq {

/// Opens the store for `url`: "sqlite://PATH" (relative or absolute path), or
/// "postgresql://user[:password]@host[:port]/db[?params]" ("postgres://" too). Other
/// schemes are refused with a message saying what is supported.
absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(const std::string& url);

/// `url` safe to log: any password replaced by ***.
std::string RedactDatabaseUrl(const std::string& url);

}  // namespace ompq

#endif  // OMPQ_SERVER_JOB_STORE_FACTORY_H_
