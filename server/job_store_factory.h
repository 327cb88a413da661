// Opens the JobStore named by a --database URL ("sqlite://PATH"; PostgreSQL comes later).
#ifndef OMPQ_SERVER_JOB_STORE_FACTORY_H_
#define OMPQ_SERVER_JOB_STORE_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/job_store.h"

namespace ompq {

/// Opens the store for `url`: "sqlite://PATH" (relative or absolute path). Other schemes
/// are refused with a message saying what is supported.
absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(const std::string& url);

}  // namespace ompq

#endif  // OMPQ_SERVER_JOB_STORE_FACTORY_H_
