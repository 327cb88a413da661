// The schema of PostgresJobStore: an ordered list of migrations, and bringing a database
// (table schema_version) up to the latest of them.
#ifndef OMPQ_SERVER_POSTGRES_SCHEMA_H_
#define OMPQ_SERVER_POSTGRES_SCHEMA_H_

#include <pqxx/connection>
#include <string>

#include "absl/status/status.h"

namespace ompq {

/// The schema version this build creates and understands.
int PostgresSchemaVersion();

/// Creates or migrates the schema (in the connection's current schema) to
/// PostgresSchemaVersion(). FAILED_PRECONDITION when the database's is newer; libpqxx's
/// exceptions pass through. `where` (a redacted URL) names the database in messages.
absl::Status MigratePostgresSchema(pqxx::connection& conn, const std::string& where);

}  // namespace ompq

#endif  // OMPQ_SERVER_POSTGRES_SCHEMA_H_
