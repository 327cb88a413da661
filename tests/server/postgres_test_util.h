// Where the PostgreSQL tests find their database, and a schema of their own in it.
//
// The URL comes from OMPQ_TEST_POSTGRES_URL (scripts/test.sh starts a throwaway server
// with scripts/pg-test-server.sh and sets it). Without it the PostgreSQL tests FAIL,
// saying how to start one, so a missing database is never mistaken for a pass; set
// OMPQ_TEST_POSTGRES=off to skip them on purpose.
#ifndef OMPQ_TESTS_SERVER_POSTGRES_TEST_UTIL_H_
#define OMPQ_TESTS_SERVER_POSTGRES_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <pqxx/pqxx>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"

namespace ompq::testing {

/// The test database, or why there is none.
struct TestPostgres {
  std::string url;          // Set when a database was given.
  std::string skip_reason;  // Set when the tests were turned off on purpose.
  std::string failure;      // Otherwise: what is missing and how to fix it.
};

/// Reads OMPQ_TEST_POSTGRES_URL / OMPQ_TEST_POSTGRES.
inline TestPostgres FindTestPostgres() {
  TestPostgres found;
  const char* off = std::getenv("OMPQ_TEST_POSTGRES");
  if (off != nullptr && std::string(off) == "off") {
    found.skip_reason = "OMPQ_TEST_POSTGRES=off: PostgreSQL store tests skipped on request";
    return found;
  }
  const char* url = std::getenv("OMPQ_TEST_POSTGRES_URL");
  if (url == nullptr || *url == '\0') {
    found.failure =
        "OMPQ_TEST_POSTGRES_URL is not set, so the PostgreSQL tests cannot run. Start a "
        "throwaway server with `scripts/pg-test-server.sh start /tmp/ompq-pg` and export "
        "OMPQ_TEST_POSTGRES_URL=<the URL it prints> (scripts/test.sh does both), or set "
        "OMPQ_TEST_POSTGRES=off to skip these tests on purpose.";
    return found;
  }
  found.url = url;
  return found;
}

/// In SetUp() or a test body: skips (OMPQ_TEST_POSTGRES=off) or fails (no database)
/// unless a test database is configured; then sets `url_var` to its URL.
#define OMPQ_REQUIRE_TEST_POSTGRES(url_var)                                             \
  do {                                                                                  \
    const ::ompq::testing::TestPostgres ompq_pg_ = ::ompq::testing::FindTestPostgres(); \
    if (!ompq_pg_.skip_reason.empty()) {                                                \
      GTEST_SKIP() << ompq_pg_.skip_reason;                                             \
    }                                                                                   \
    ASSERT_FALSE(ompq_pg_.url.empty()) << ompq_pg_.failure;                             \
    url_var = ompq_pg_.url;                                                             \
  } while (0)

/// A fresh schema in the test database, dropped with everything in it when this goes
/// away; url() reaches it (search_path), so tests running at once never see each other.
class PostgresTestSchema {
 public:
  explicit PostgresTestSchema(const std::string& base_url) : base_url_(base_url) {
    std::random_device random;
    name_ = absl::StrCat("ompq_test_", absl::Hex(random(), absl::kZeroPad8),
                         absl::Hex(random(), absl::kZeroPad8));
    const char separator = base_url.find('?') == std::string::npos ? '?' : '&';
    url_ = absl::StrCat(base_url, std::string(1, separator), "options=-csearch_path%3D", name_);
    try {
      pqxx::connection conn(base_url_);
      pqxx::nontransaction(conn).exec(absl::StrCat("CREATE SCHEMA ", name_));
    } catch (const std::exception& e) {
      error_ = absl::StrCat("cannot create a schema in OMPQ_TEST_POSTGRES_URL's database (",
                            e.what(), "); is the server running?");
    }
  }
  ~PostgresTestSchema() {
    try {
      pqxx::connection conn(base_url_);
      pqxx::nontransaction(conn).exec(absl::StrCat("DROP SCHEMA IF EXISTS ", name_, " CASCADE"));
    } catch (const std::exception&) {
      // Best effort: a leftover schema only costs space in a throwaway database.
    }
  }
  PostgresTestSchema(const PostgresTestSchema&) = delete;
  PostgresTestSchema& operator=(const PostgresTestSchema&) = delete;

  /// Empty when the schema exists; else why not.
  const std::string& error() const { return error_; }
  /// The schema's name.
  const std::string& name() const { return name_; }
  /// The database URL with this schema as search_path.
  const std::string& url() const { return url_; }

 private:
  std::string base_url_;
  std::string name_;
  std::string url_;
  std::string error_;
};

}  // namespace ompq::testing

#endif  // OMPQ_TESTS_SERVER_POSTGRES_TEST_UTIL_H_
