// Tests of the row codec both job stores share (server/job_row_codec.h): records to
// column values and back, the lease-column rule, page tokens and pages, error texts.
#include "server/job_row_codec.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "rpc/proto_time.h"

namespace ompq::job_row {
namespace {

const absl::Time kT0 = absl::FromUnixMicros(1700000000123456);

JobRecord LeasedRecord() {
  JobRecord record;
  record.job.set_name("jobs/a");
  record.job.set_state(v1::RUNNING);
  *record.job.mutable_create_time() = ToProtoTimestamp(kT0);
  record.tenant = "team";
  record.version = 7;
  record.lease_id = "lease-1";
  record.lease_expire_time = kT0 + absl::Seconds(30);
  record.run_deadline = kT0 + absl::Hours(1);
  record.state_time = kT0 + absl::Seconds(1);
  return record;  // stage_time stays unset.
}

TEST(EncodeRecord, StoresTimesAsMicrosAndUnsetAsNull) {
  const JobRecord record = LeasedRecord();
  const RowValues values = EncodeRecord(record);
  EXPECT_EQ(values.create_time_us, 1700000000123456);
  EXPECT_EQ(values.lease_expire_us, 1700000030123456);
  EXPECT_EQ(values.run_deadline_us, 1700003600123456);
  EXPECT_EQ(values.state_time_us, 1700000001123456);
  EXPECT_EQ(values.stage_time_us, std::nullopt);
  EXPECT_EQ(values.job, record.job.SerializeAsString());
}

TEST(EncodeRecord, LeaseColumnsAreNullUnlessLeased) {
  JobRecord record = LeasedRecord();
  record.lease_id.clear();  // The times linger in memory; the row drops them.
  const RowValues values = EncodeRecord(record);
  EXPECT_EQ(values.lease_expire_us, std::nullopt);
  EXPECT_EQ(values.run_deadline_us, std::nullopt);
  EXPECT_EQ(values.state_time_us, 1700000001123456);
}

TEST(DecodeRecord, ReadsBackWhatEncodeWrote) {
  const JobRecord record = LeasedRecord();
  const RowValues values = EncodeRecord(record);
  RowView row;
  row.seq = 42;
  row.version = record.version;
  row.lease_id = record.lease_id;
  row.lease_expire_us = values.lease_expire_us;
  row.run_deadline_us = values.run_deadline_us;
  row.state_time_us = values.state_time_us;
  row.stage_time_us = values.stage_time_us;
  row.job = values.job;
  row.tenant = record.tenant;
  int64_t seq = 0;
  absl::StatusOr<JobRecord> read = DecodeRecord(row, &seq);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(seq, 42);
  EXPECT_EQ(read->job.SerializeAsString(), values.job);
  EXPECT_EQ(read->tenant, "team");
  EXPECT_EQ(read->version, 7);
  EXPECT_EQ(read->lease_id, "lease-1");
  EXPECT_EQ(read->lease_expire_time, record.lease_expire_time);
  EXPECT_EQ(read->run_deadline, record.run_deadline);
  EXPECT_EQ(read->state_time, record.state_time);
  EXPECT_EQ(read->stage_time, absl::InfinitePast());
}

TEST(DecodeRecord, UnparsableJobIsDataLoss) {
  RowView row;
  row.job = "\xff\xff\xff";
  absl::StatusOr<JobRecord> read = DecodeRecord(row);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(read.status().message(), "job database: a stored job does not parse");
}

TEST(Columns, TimeAndDueBy) {
  EXPECT_EQ(TimeColumn(absl::InfinitePast()), std::nullopt);
  EXPECT_EQ(TimeColumn(absl::FromUnixMicros(-5)), -5);
  EXPECT_EQ(DueByColumn(kT0), 1700000000123456);
  EXPECT_EQ(DueByColumn(absl::InfiniteFuture()), std::numeric_limits<int64_t>::max());
}

TEST(PageToken, RoundTripsAndRejectsOthers) {
  EXPECT_EQ(EncodePageToken(17), absl::WebSafeBase64Escape("seq:17"));
  EXPECT_EQ(DecodePageToken(EncodePageToken(17)).value(), 17);
  for (const std::string& bad :
       {std::string("not base64!"), absl::WebSafeBase64Escape("seq:0"),
        absl::WebSafeBase64Escape("seq:x"), absl::WebSafeBase64Escape("17")}) {
    absl::StatusOr<int64_t> seq = DecodePageToken(bad);
    EXPECT_EQ(seq.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(seq.status().message(),
              "page_token is not valid: pass the next_page_token of the previous response");
  }
}

v1::Job JobNamed(const std::string& name) {
  v1::Job job;
  job.set_name(name);
  return job;
}

TEST(PageBuilder, FirstPageStopsAtTheExtraRow) {
  JobQuery query;
  query.page_size = 2;
  absl::StatusOr<PageBuilder> page = PageBuilder::Start(query);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->below_seq(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(page->row_limit(), 3);
  std::vector<int64_t> rows = {9, 8, 5};
  for (int64_t seq : rows) {
    if (!page->WantsRow()) break;
    page->Add(seq, JobNamed("jobs/" + std::to_string(seq)));
  }
  const JobPage done = std::move(*page).Finish();
  ASSERT_EQ(done.jobs.size(), 2u);
  EXPECT_EQ(done.jobs[1].name(), "jobs/8");
  EXPECT_EQ(done.next_page_token, EncodePageToken(8));
}

TEST(PageBuilder, LastPageHasNoToken) {
  JobQuery query;
  query.page_size = 0;  // Treated as 1.
  query.page_token = EncodePageToken(8);
  absl::StatusOr<PageBuilder> page = PageBuilder::Start(query);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->below_seq(), 8);
  EXPECT_EQ(page->row_limit(), 2);
  ASSERT_TRUE(page->WantsRow());
  page->Add(5, JobNamed("jobs/5"));
  const JobPage done = std::move(*page).Finish();
  ASSERT_EQ(done.jobs.size(), 1u);
  EXPECT_EQ(done.next_page_token, "");
}

TEST(PageBuilder, ForeignTokenIsInvalid) {
  JobQuery query;
  query.page_token = "bogus";
  EXPECT_EQ(PageBuilder::Start(query).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Errors, TextsAndCodes) {
  EXPECT_EQ(NotFoundError("jobs/a"), absl::NotFoundError("job 'jobs/a' not found"));
  EXPECT_EQ(ChangedConcurrentlyError("jobs/a"),
            absl::AbortedError("job 'jobs/a' was changed concurrently; retry"));
  EXPECT_EQ(QueueFullError(3),
            absl::ResourceExhaustedError("the job queue is full (3 jobs queued); retry later, or "
                                         "raise the server's --max-queued-jobs"));
}

}  // namespace
}  // namespace ompq::job_row
