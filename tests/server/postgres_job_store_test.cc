// What only the PostgreSQL store has to promise beyond the shared JobStore contract
// (job_store_test.cc): many threads in two "servers" (two store instances on one
// database) never claim one job twice; other servers' writes reach the change listener;
// the schema is migrated and a newer one refused; lost connections are reopened; the
// password never shows. Needs OMPQ_TEST_POSTGRES_URL (tests/server/postgres_test_util.h).
#include "server/postgres_job_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "rpc/proto_time.h"
#include "server/job_store_factory.h"
#include "tests/server/postgres_test_util.h"

namespace ompq {
namespace {

using ::ompq::testing::PostgresTestSchema;

JobRecord NewJob(int n) {
  JobRecord record;
  record.job.set_name(absl::StrCat("jobs/pg-", n));
  record.job.set_state(v1::QUEUED);
  *record.job.mutable_create_time() = ToProtoTimestamp(absl::FromUnixSeconds(1700000000 + n));
  return record;
}

// Collects the change listener's calls.
class Changes {
 public:
  std::function<void(const std::string&)> Listener() {
    return [this](const std::string& name) {
      absl::MutexLock lock(&mu_);
      names_.push_back(name);
    };
  }
  // Waits (bounded, never a fixed sleep) until `name` was heard; true if it was.
  bool WaitFor(const std::string& name) {
    absl::MutexLock lock(&mu_);
    auto heard = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return std::find(names_.begin(), names_.end(), name) != names_.end();
    };
    return mu_.AwaitWithTimeout(absl::Condition(&heard), absl::Seconds(20));
  }
  std::vector<std::string> names() {
    absl::MutexLock lock(&mu_);
    return names_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
};

class PostgresJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    OMPQ_REQUIRE_TEST_POSTGRES(base_url_);
    schema_ = std::make_unique<PostgresTestSchema>(base_url_);
    ASSERT_EQ(schema_->error(), "");
  }

  std::unique_ptr<PostgresJobStore> MustOpen() {
    auto store = PostgresJobStore::Open(schema_->url());
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  // Runs `sql` on a connection of the test's own (as an administrator would).
  pqxx::result Exec(const std::string& sql) {
    pqxx::connection conn(schema_->url());
    return pqxx::nontransaction(conn).exec(sql);
  }

  std::string base_url_;
  std::unique_ptr<PostgresTestSchema> schema_;
};

TEST_F(PostgresJobStoreTest, ManyClaimersInTwoServersNeverClaimOneJobTwice) {
  auto server_a = MustOpen();
  auto server_b = MustOpen();
  ASSERT_NE(server_a, nullptr);
  ASSERT_NE(server_b, nullptr);
  constexpr int kJobs = 60;
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE((i % 2 == 0 ? server_a : server_b)->Create(NewJob(i), 1000).ok());
  }
  constexpr int kThreadsPerServer = 4;
  absl::Mutex mu;
  std::map<std::string, int> claims;          // Job name -> times claimed.
  std::map<std::string, std::string> leases;  // Job name -> lease of the claimer.
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2 * kThreadsPerServer; ++t) {
    PostgresJobStore* store = (t % 2 == 0 ? server_a : server_b).get();
    threads.emplace_back([&, store, t] {
      for (int n = 0;; ++n) {
        const std::string lease = absl::StrCat("lease-", t, "-", n);
        auto claimed = store->ClaimOldestQueued([&](JobRecord& r) {
          r.job.set_state(v1::RUNNING);
          r.lease_id = lease;
          r.lease_expire_time = absl::FromUnixSeconds(1700000600);
        });
        absl::MutexLock lock(&mu);
        if (!claimed.ok()) {
          errors.push_back(claimed.status().ToString());
          return;
        }
        if (!claimed->has_value()) {
          return;
        }
        ++claims[(*claimed)->job.name()];
        leases[(*claimed)->job.name()] = lease;
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(claims.size(), static_cast<size_t>(kJobs));
  for (const auto& [name, times] : claims) {
    EXPECT_EQ(times, 1) << name << " was claimed " << times << " times";
    // The stored lease is the one its single claimer was given.
    auto stored = server_a->Get(name);
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->lease_id, leases[name]);
    EXPECT_EQ(stored->job.state(), v1::RUNNING);
  }
  auto counts = server_b->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[v1::RUNNING], kJobs);
  EXPECT_EQ(counts->count(v1::QUEUED), 0u);
}

TEST_F(PostgresJobStoreTest, OtherServersChangesReachTheListenerButOwnDoNot) {
  auto mine = MustOpen();
  auto other = MustOpen();
  ASSERT_NE(mine, nullptr);
  ASSERT_NE(other, nullptr);
  Changes changes;
  mine->SetChangeListener(changes.Listener());
  // Our own write comes first; notifications arrive in commit order, so once the other
  // store's later write is heard, ours would have been heard before it.
  auto own = mine->Create(NewJob(1), 1000);
  ASSERT_TRUE(own.ok());
  ASSERT_TRUE(other->Create(NewJob(2), 1000).ok());
  ASSERT_TRUE(changes.WaitFor("jobs/pg-2"));
  // Updates and claims by the other server are heard too.
  ASSERT_TRUE(other->Update(own->record).ok());
  ASSERT_TRUE(changes.WaitFor("jobs/pg-1"));
  EXPECT_EQ(changes.names(), (std::vector<std::string>{"jobs/pg-2", "jobs/pg-1"}));
  mine->SetChangeListener(nullptr);
}

TEST_F(PostgresJobStoreTest, SchemaIsVersionedAndANewerOneIsRefused) {
  ASSERT_NE(MustOpen(), nullptr);
  pqxx::result version = Exec("SELECT version FROM schema_version");
  ASSERT_EQ(version.size(), 1u);
  EXPECT_EQ(version[0][0].as<int>(), PostgresJobStore::LatestSchemaVersion());
  // Opening again migrates nothing and keeps one row.
  ASSERT_NE(MustOpen(), nullptr);
  EXPECT_EQ(Exec("SELECT version FROM schema_version").size(), 1u);

  Exec("UPDATE schema_version SET version = 999");
  auto refused = PostgresJobStore::Open(schema_->url());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "upgrade the server"))
      << refused.status();
}

// Schema 3 keeps per-state counts with a trigger. A version 2 database (jobs, no counts)
// gets counts that match its rows when a newer server opens it, and they then follow
// creates, claims and the queue limit.
TEST_F(PostgresJobStoreTest, CountsOfAVersion2DatabaseAreSeededFromItsRows) {
  {
    auto store = MustOpen();
    ASSERT_NE(store, nullptr);
    for (int i = 1; i <= 3; ++i) {
      ASSERT_TRUE(store->Create(NewJob(i), 1000).ok());
    }
    ASSERT_TRUE(store->ClaimOldestQueued([](JobRecord& r) { r.job.set_state(v1::RUNNING); }).ok());
  }
  // Back to version 2 as a version-2 server left it.
  Exec("DROP TRIGGER job_counts_track ON jobs; DROP FUNCTION job_counts_track();"
       "DROP TABLE job_counts; UPDATE schema_version SET version = 2");
  auto store = MustOpen();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Exec("SELECT version FROM schema_version")[0][0].as<int>(),
            PostgresJobStore::LatestSchemaVersion());
  auto counts = store->CountByState();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(*counts, (std::map<v1::JobState, int64_t>{{v1::QUEUED, 2}, {v1::RUNNING, 1}}));
  // The limit counts the seeded rows: 2 queued, limit 3 -> one more, then full.
  ASSERT_TRUE(store->Create(NewJob(4), 3).ok());
  EXPECT_EQ(store->Create(NewJob(5), 3).status().code(), absl::StatusCode::kResourceExhausted);
  // A delete gives the count back.
  ASSERT_TRUE(store->Delete("jobs/pg-4", 1).ok());
  counts = store->CountByState();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ((*counts)[v1::QUEUED], 2);
}

TEST_F(PostgresJobStoreTest, LostConnectionsAreReopened) {
  // Tagged, so only this store's sessions are ended below (other tests may be running).
  const std::string tagged = absl::StrCat(schema_->url(), "&application_name=", schema_->name());
  auto opened = PostgresJobStore::Open(tagged);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<PostgresJobStore> store = std::move(opened).value();
  Changes changes;
  store->SetChangeListener(changes.Listener());
  ASSERT_TRUE(store->Create(NewJob(1), 1000).ok());
  // As when the database restarts: end the store's sessions.
  pqxx::result ended = Exec(absl::StrCat(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '",
      schema_->name(), "'"));
  ASSERT_GE(ended.size(), 2u);  // At least one pooled connection and the listener's.
  // A pooled connection that died says so, as UNAVAILABLE; the next call reconnects.
  auto first = store->Get("jobs/pg-1");
  if (!first.ok()) {
    EXPECT_EQ(first.status().code(), absl::StatusCode::kUnavailable) << first.status();
    EXPECT_TRUE(absl::StrContains(first.status().message(), "connection lost")) << first.status();
  }
  auto again = store->Get("jobs/pg-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->job.name(), "jobs/pg-1");
  // The listener reconnects too, and says changes may have been missed ("").
  EXPECT_TRUE(changes.WaitFor(""));
  auto other = MustOpen();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->Create(NewJob(2), 1000).ok());
  EXPECT_TRUE(changes.WaitFor("jobs/pg-2"));
}

TEST_F(PostgresJobStoreTest, FactoryOpensPostgresqlUrls) {
  auto store = OpenJobStore(schema_->url());
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Create(NewJob(1), 1000).ok());
  // Another store on the same URL sees the job: it is in the database, not in memory.
  auto again = MustOpen();
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(again->Get("jobs/pg-1").ok());
}

// These need no database.

TEST(PostgresUrlTest, UnreachableDatabaseIsUnavailableAndHidesThePassword) {
  // Port 1 on loopback: nothing listens there, so the connection is refused at once.
  auto store = OpenJobStore("postgresql://ompq:s3cret@127.0.0.1:1/ompq?connect_timeout=5");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(store.status().message(), "ompq:***@127.0.0.1:1"))
      << store.status();
  EXPECT_FALSE(absl::StrContains(store.status().message(), "s3cret")) << store.status();
}

TEST(PostgresUrlTest, RedactionHidesPasswordsOnly) {
  EXPECT_EQ(RedactDatabaseUrl("postgresql://u:pw@db:5432/ompq"), "postgresql://u:***@db:5432/ompq");
  EXPECT_EQ(RedactDatabaseUrl("postgres://u@db/ompq?password=pw&sslmode=require"),
            "postgres://u@db/ompq?password=***&sslmode=require");
  EXPECT_EQ(RedactDatabaseUrl("postgresql://db:5432/ompq"), "postgresql://db:5432/ompq");
  EXPECT_EQ(RedactDatabaseUrl("sqlite://data/jobs.db"), "sqlite://data/jobs.db");
}

}  // namespace
}  // namespace ompq
