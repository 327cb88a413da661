// The JobStore contract, written once and run against every store implementation
// (SQLite and PostgreSQL: the factories in INSTANTIATE_TEST_SUITE_P below). The
// PostgreSQL cases need OMPQ_TEST_POSTGRES_URL (see tests/server/postgres_test_util.h).
#include "server/job_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "rpc/proto_time.h"
#include "server/postgres_job_store.h"
#include "server/sqlite_job_store.h"
#include "tests/server/postgres_test_util.h"
#include "tests/server/test_util.h"

namespace ompq {
namespace {

using ::ompq::testing::PostgresTestSchema;
using ::ompq::testing::TempDir;

// Opens a store at `location` (a fresh directory for SQLite; for PostgreSQL the URL of a
// fresh schema); opening the same location again must reach the same jobs.
struct StoreFactory {
  std::string name;
  std::function<std::unique_ptr<JobStore>(const std::string& location)> open;
  bool needs_postgres = false;
};

// Names the store in test output.
void PrintTo(const StoreFactory& factory, std::ostream* os) { *os << factory.name; }

std::unique_ptr<JobStore> OpenSqlite(const std::string& dir) {
  auto store = SqliteJobStore::Open(dir + "/jobs.db");
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

std::unique_ptr<JobStore> OpenPostgres(const std::string& url) {
  auto store = PostgresJobStore::Open(url);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

JobRecord NewJob(int n, const std::string& request_id = "") {
  JobRecord record;
  record.job.set_name(absl::StrCat("jobs/test-", n));
  record.job.set_state(v1::QUEUED);
  record.job.set_request_id(request_id);
  record.job.mutable_spec()->set_model_digest(absl::StrCat("model-", n));
  *record.job.mutable_create_time() = ToProtoTimestamp(kT0 + absl::Seconds(n));
  record.state_time = kT0 + absl::Seconds(n);
  return record;
}

class JobStoreTest : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override {
    location_ = dir_.path();
    if (GetParam().needs_postgres) {
      std::string base_url;
      OMPQ_REQUIRE_TEST_POSTGRES(base_url);
      schema_ = std::make_unique<PostgresTestSchema>(base_url);
      ASSERT_EQ(schema_->error(), "");
      location_ = schema_->url();
    }
    store_ = GetParam().open(location_);
    ASSERT_NE(store_, nullptr);
  }

  JobRecord MustCreate(const JobRecord& record, int64_t max_queued = 1000) {
    auto result = store_->Create(record, max_queued);
    EXPECT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result.ok() && result->created);
    return result.ok() ? result->record : JobRecord{};
  }

  // Names on one page.
  std::vector<std::string> Names(const JobPage& page) {
    std::vector<std::string> names;
    for (const auto& job : page.jobs) {
      names.push_back(job.name());
    }
    return names;
  }

  TempDir dir_;
  std::unique_ptr<PostgresTestSchema> schema_;  // PostgreSQL only; outlives the store.
  std::string location_;                        // What the factory opens.
  std::unique_ptr<JobStore> store_;
};

TEST_P(JobStoreTest, CreateThenGetReturnsTheJob) {
  JobRecord created = MustCreate(NewJob(1));
  EXPECT_EQ(created.version, 1);
  auto got = store_->Get("jobs/test-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->job.spec().model_digest(), "model-1");
  EXPECT_EQ(got->job.state(), v1::QUEUED);
  EXPECT_EQ(got->version, 1);
  EXPECT_EQ(got->state_time, kT0 + absl::Seconds(1));
  EXPECT_FALSE(got->leased());
}

TEST_P(JobStoreTest, GetUnknownIsNotFound) {
  EXPECT_EQ(store_->Get("jobs/nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_P(JobStoreTest, RequestIdMakesCreateIdempotent) {
  MustCreate(NewJob(1, "req-a"));
  auto again = store_->Create(NewJob(2, "req-a"), 1000);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->record.job.name(), "jobs/test-1");
  EXPECT_EQ(store_->Get("jobs/test-2").status().code(), absl::StatusCode::kNotFound);
  // Without a request_id, or with another one, each call creates a job.
  MustCreate(NewJob(3));
  MustCreate(NewJob(4));
  MustCreate(NewJob(5, "req-b"));
  auto counts = store_->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[v1::QUEUED], 4);
}

TEST_P(JobStoreTest, CreateRefusesWhenQueueIsFull) {
  MustCreate(NewJob(1), 2);
  MustCreate(NewJob(2), 2);
  auto full = store_->Create(NewJob(3), 2);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->Get("jobs/test-3").status().code(), absl::StatusCode::kNotFound);
  // A job leaving QUEUED makes room.
  auto claimed = store_->ClaimOldestQueued([](JobRecord& r) { r.job.set_state(v1::RUNNING); });
  ASSERT_TRUE(claimed.ok() && claimed->has_value());
  MustCreate(NewJob(3), 2);
}

TEST_P(JobStoreTest, ListPagesNewestFirst) {
  for (int i = 1; i <= 5; ++i) {
    MustCreate(NewJob(i));
  }
  JobQuery query;
  query.page_size = 2;
  std::vector<std::string> all;
  int pages = 0;
  do {
    auto page = store_->List(query);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_LE(page->jobs.size(), 2u);
    for (const auto& name : Names(*page)) {
      all.push_back(name);
    }
    query.page_token = page->next_page_token;
    ++pages;
  } while (!query.page_token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(all, (std::vector<std::string>{"jobs/test-5", "jobs/test-4", "jobs/test-3",
                                           "jobs/test-2", "jobs/test-1"}));
}

TEST_P(JobStoreTest, ListExactPageHasNoNextToken) {
  for (int i = 1; i <= 2; ++i) {
    MustCreate(NewJob(i));
  }
  JobQuery query;
  query.page_size = 2;
  auto page = store_->List(query);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 2u);
  EXPECT_EQ(page->next_page_token, "");
}

TEST_P(JobStoreTest, ListFiltersByStateAndLabel) {
  for (int i = 1; i <= 4; ++i) {
    JobRecord record = NewJob(i);
    (*record.job.mutable_spec()->mutable_labels())["team"] = i % 2 == 0 ? "vision" : "speech";
    MustCreate(record);
  }
  // Oldest (test-1) leaves QUEUED.
  ASSERT_TRUE(store_->ClaimOldestQueued([](JobRecord& r) { r.job.set_state(v1::RUNNING); }).ok());

  JobQuery by_state;
  by_state.state = v1::RUNNING;
  auto running = store_->List(by_state);
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(Names(*running), std::vector<std::string>{"jobs/test-1"});

  JobQuery by_label;
  by_label.label_key = "team";
  by_label.label_value = "vision";
  auto vision = store_->List(by_label);
  ASSERT_TRUE(vision.ok());
  EXPECT_EQ(Names(*vision), (std::vector<std::string>{"jobs/test-4", "jobs/test-2"}));

  JobQuery both = by_label;
  both.label_value = "speech";
  both.state = v1::QUEUED;
  auto queued_speech = store_->List(both);
  ASSERT_TRUE(queued_speech.ok());
  EXPECT_EQ(Names(*queued_speech), std::vector<std::string>{"jobs/test-3"});

  JobQuery nobody = by_label;
  nobody.label_value = "none";
  auto empty = store_->List(nobody);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->jobs.empty());
}

TEST_P(JobStoreTest, ListRefusesForeignPageToken) {
  JobQuery query;
  query.page_token = "not-a-token";
  EXPECT_EQ(store_->List(query).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(JobStoreTest, UpdateIsCompareAndSet) {
  JobRecord first = MustCreate(NewJob(1));
  JobRecord mine = first;
  mine.job.set_progress(10);
  auto written = store_->Update(mine);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->version, 2);

  JobRecord stale = first;  // Still at version 1.
  stale.job.set_progress(99);
  EXPECT_EQ(store_->Update(stale).status().code(), absl::StatusCode::kAborted);

  auto got = store_->Get("jobs/test-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->job.progress(), 10);
  EXPECT_EQ(got->version, 2);
}

TEST_P(JobStoreTest, UpdateOfDeletedJobIsNotFound) {
  JobRecord record = NewJob(1);
  record.version = 1;
  EXPECT_EQ(store_->Update(record).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(JobStoreTest, ConcurrentCompareAndSetLosesNoUpdate) {
  MustCreate(NewJob(1));
  constexpr int kThreads = 4;
  constexpr int kIncrements = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this] {
      for (int i = 0; i < kIncrements; ++i) {
        while (true) {
          auto record = store_->Get("jobs/test-1");
          ASSERT_TRUE(record.ok());
          record->job.set_attempt(record->job.attempt() + 1);
          auto written = store_->Update(*record);
          if (written.ok()) {
            break;
          }
          ASSERT_EQ(written.status().code(), absl::StatusCode::kAborted);
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  auto got = store_->Get("jobs/test-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->job.attempt(), kThreads * kIncrements);
  EXPECT_EQ(got->version, 1 + kThreads * kIncrements);
}

TEST_P(JobStoreTest, ClaimTakesOldestQueuedJob) {
  MustCreate(NewJob(1));
  MustCreate(NewJob(2));
  std::vector<std::string> order;
  for (int i = 0; i < 3; ++i) {
    auto claimed = store_->ClaimOldestQueued([](JobRecord& r) {
      r.job.set_state(v1::RUNNING);
      r.lease_id = "lease";
      r.lease_expire_time = kT0 + absl::Seconds(60);
      r.run_deadline = kT0 + absl::Hours(1);
    });
    ASSERT_TRUE(claimed.ok()) << claimed.status();
    if (!claimed->has_value()) {
      break;
    }
    EXPECT_EQ((*claimed)->version, 2);
    order.push_back((*claimed)->job.name());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"jobs/test-1", "jobs/test-2"}));
  auto stored = store_->Get("jobs/test-1");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->job.state(), v1::RUNNING);
  EXPECT_EQ(stored->lease_id, "lease");
  EXPECT_EQ(stored->lease_expire_time, kT0 + absl::Seconds(60));
}

TEST_P(JobStoreTest, FindLeasedDueByFindsLapsedLeasesAndDeadlines) {
  MustCreate(NewJob(1));
  MustCreate(NewJob(2));
  MustCreate(NewJob(3));  // Stays queued: never due.
  auto lease = [](absl::Duration lease_for, absl::Duration run_for) {
    return [=](JobRecord& r) {
      r.job.set_state(v1::RUNNING);
      r.lease_id = "lease";
      r.lease_expire_time = kT0 + lease_for;
      r.run_deadline = kT0 + run_for;
    };
  };
  ASSERT_TRUE(store_->ClaimOldestQueued(lease(absl::Seconds(10), absl::Hours(1))).ok());
  ASSERT_TRUE(store_->ClaimOldestQueued(lease(absl::Hours(2), absl::Seconds(30))).ok());

  auto names = [this](absl::Time t) {
    std::vector<std::string> found;
    auto due = store_->FindLeasedDueBy(t);
    EXPECT_TRUE(due.ok());
    if (due.ok()) {
      for (const auto& r : *due) {
        found.push_back(r.job.name());
      }
    }
    return found;
  };
  EXPECT_TRUE(names(kT0 + absl::Seconds(9)).empty());
  EXPECT_EQ(names(kT0 + absl::Seconds(10)), std::vector<std::string>{"jobs/test-1"});
  EXPECT_EQ(names(kT0 + absl::Seconds(30)),
            (std::vector<std::string>{"jobs/test-1", "jobs/test-2"}));
  EXPECT_EQ(names(absl::InfiniteFuture()),
            (std::vector<std::string>{"jobs/test-1", "jobs/test-2"}));

  // A job whose lease is dropped is never due.
  auto first = store_->Get("jobs/test-1");
  ASSERT_TRUE(first.ok());
  first->lease_id.clear();
  first->job.set_state(v1::SUCCEEDED);
  ASSERT_TRUE(store_->Update(*first).ok());
  EXPECT_EQ(names(absl::InfiniteFuture()), std::vector<std::string>{"jobs/test-2"});
}

TEST_P(JobStoreTest, DeleteHonoursVersionAndRemovesLabels) {
  JobRecord record = NewJob(1);
  (*record.job.mutable_spec()->mutable_labels())["k"] = "v";
  JobRecord created = MustCreate(record);
  EXPECT_EQ(store_->Delete("jobs/test-1", created.version + 1).code(), absl::StatusCode::kAborted);
  ASSERT_TRUE(store_->Get("jobs/test-1").ok());
  EXPECT_TRUE(store_->Delete("jobs/test-1", created.version).ok());
  EXPECT_EQ(store_->Get("jobs/test-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete("jobs/test-1", created.version).code(), absl::StatusCode::kNotFound);
  JobQuery by_label;
  by_label.label_key = "k";
  by_label.label_value = "v";
  auto page = store_->List(by_label);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->jobs.empty());
}

TEST_P(JobStoreTest, CountByStateCountsEachState) {
  for (int i = 1; i <= 3; ++i) {
    MustCreate(NewJob(i));
  }
  ASSERT_TRUE(store_->ClaimOldestQueued([](JobRecord& r) { r.job.set_state(v1::RUNNING); }).ok());
  auto counts = store_->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->size(), 2u);
  EXPECT_EQ((*counts)[v1::QUEUED], 2);
  EXPECT_EQ((*counts)[v1::RUNNING], 1);
}

// Two stores on one database (two servers) create at once against a queue limit: exactly
// the limit is created, every other create is RESOURCE_EXHAUSTED. Then both claim and
// finish jobs at once, and the per-state counts (kept by triggers in both stores) still
// match the jobs' states one by one.
TEST_P(JobStoreTest, ConcurrentCreatesKeepTheQueueLimitAndTheCounts) {
  std::unique_ptr<JobStore> other = GetParam().open(location_);
  ASSERT_NE(other, nullptr);
  JobStore* stores[2] = {store_.get(), other.get()};
  constexpr int kLimit = 25;
  constexpr int kThreads = 8;
  constexpr int kCreatesPerThread = 10;
  std::atomic<int> created{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCreatesPerThread; ++i) {
        auto result = stores[(t + i) % 2]->Create(NewJob(t * kCreatesPerThread + i), kLimit);
        if (result.ok()) {
          EXPECT_TRUE(result->created);
          ++created;
        } else {
          EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted)
              << result.status();
          ++refused;
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  threads.clear();
  EXPECT_EQ(created.load(), kLimit);
  EXPECT_EQ(refused.load(), kThreads * kCreatesPerThread - kLimit);

  // Claims (QUEUED -> RUNNING) and finishes (RUNNING -> SUCCEEDED) from both stores.
  std::atomic<int> finished{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 4; ++i) {
        auto claimed = stores[t % 2]->ClaimOldestQueued(
            [](JobRecord& r) { r.job.set_state(v1::RUNNING); });
        ASSERT_TRUE(claimed.ok()) << claimed.status();
        if (!claimed->has_value() || i % 2 == 1) continue;  // Every other one keeps running.
        JobRecord record = **claimed;
        record.job.set_state(v1::SUCCEEDED);
        auto done = stores[(t + 1) % 2]->Update(record);
        ASSERT_TRUE(done.ok()) << done.status();
        ++finished;
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  std::map<v1::JobState, int64_t> expected;
  for (int n = 0; n < kThreads * kCreatesPerThread; ++n) {
    auto got = store_->Get(absl::StrCat("jobs/test-", n));
    if (got.ok()) ++expected[got->job.state()];
  }
  EXPECT_EQ(expected[v1::SUCCEEDED], finished.load());
  EXPECT_EQ(expected[v1::RUNNING], 16 - finished.load());
  EXPECT_EQ(expected[v1::QUEUED], kLimit - 16);
  for (JobStore* store : stores) {
    auto counts = store->CountByState();
    ASSERT_TRUE(counts.ok()) << counts.status();
    EXPECT_EQ(*counts, expected);
  }
  // A job leaving QUEUED made room: creates succeed again, up to the limit.
  for (int i = 0; i < 16; ++i) {
    MustCreate(NewJob(1000 + i), kLimit);
  }
  EXPECT_EQ(store_->Create(NewJob(2000), kLimit).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_P(JobStoreTest, JobsSurviveReopening) {
  MustCreate(NewJob(1, "req"));
  store_.reset();
  store_ = GetParam().open(location_);
  ASSERT_NE(store_, nullptr);
  auto got = store_->Get("jobs/test-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->job.request_id(), "req");
  auto again = store_->Create(NewJob(2, "req"), 1000);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
}

INSTANTIATE_TEST_SUITE_P(Stores, JobStoreTest,
                         ::testing::Values(StoreFactory{"Sqlite", OpenSqlite, false},
                                           StoreFactory{"Postgres", OpenPostgres, true}),
                         [](const ::testing::TestParamInfo<StoreFactory>& info) {
                           return info.param.name;
                         });

// Schema version 3 keeps per-state counts in a table maintained by triggers. A version 2
// file (no such table) must get counts that match its rows when opened, and they must
// then follow creates, claims and deletes.
TEST(SqliteJobStoreMigrationTest, CountsOfAVersion2FileAreRebuilt) {
  TempDir dir;
  const std::string path = dir.path() + "/jobs.db";
  {
    auto store = SqliteJobStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 1; i <= 4; ++i) {
      ASSERT_TRUE((*store)->Create(NewJob(i), 1000).ok());
    }
    ASSERT_TRUE(
        (*store)->ClaimOldestQueued([](JobRecord& r) { r.job.set_state(v1::RUNNING); }).ok());
  }
  {
    // Turn the file back into version 2 (no counts table), one job fewer than before.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    char* error = nullptr;
    const int rc = sqlite3_exec(db,
                                "DROP TRIGGER job_counts_insert; DROP TRIGGER job_counts_delete;"
                                "DROP TRIGGER job_counts_update; DROP TABLE job_counts;"
                                "DELETE FROM jobs WHERE name = 'jobs/test-4';"
                                "PRAGMA user_version = 2;",
                                nullptr, nullptr, &error);
    EXPECT_EQ(rc, SQLITE_OK) << (error != nullptr ? error : "");
    sqlite3_free(error);
    sqlite3_close(db);
  }
  auto store = SqliteJobStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto counts = (*store)->CountByState();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ((*counts)[v1::QUEUED], 2);
  EXPECT_EQ((*counts)[v1::RUNNING], 1);
  // The queue limit reads the same counts: 2 queued, limit 3 admits one more only.
  ASSERT_TRUE((*store)->Create(NewJob(5), 3).ok());
  EXPECT_TRUE(absl::IsResourceExhausted((*store)->Create(NewJob(6), 3).status()));
  ASSERT_TRUE((*store)->ClaimOldestQueued([](JobRecord& r) { r.job.set_state(v1::RUNNING); }).ok());
  auto running = (*store)->Get("jobs/test-2");
  ASSERT_TRUE(running.ok());
  running->job.set_state(v1::SUCCEEDED);
  auto finished = (*store)->Update(*running);
  ASSERT_TRUE(finished.ok()) << finished.status();
  ASSERT_TRUE((*store)->Delete("jobs/test-2", finished->version).ok());
  counts = (*store)->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[v1::QUEUED], 2);
  EXPECT_EQ((*counts)[v1::RUNNING], 1);
  EXPECT_EQ(counts->count(v1::SUCCEEDED), 0u) << "a deleted job is not counted";
}

}  // namespace
}  // namespace ompq
