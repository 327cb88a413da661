// The row codec that both job stores (SqliteJobStore, PostgresJobStore) share: which
// columns a JobRecord is read from and in what order, how its times and lease are stored,
// the page tokens of List(), and the errors callers see. The stores differ only in their
// SQL dialect and driver.
#ifndef OMPQ_SERVER_JOB_ROW_CODEC_H_
#define OMPQ_SERVER_JOB_ROW_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/job_store.h"

namespace ompq::job_row {

/// Columns read back into a JobRecord, in this order: "SELECT " + kRecordColumns + ...
inline constexpr char kRecordColumns[] =
    "seq, version, lease_id, lease_expire_us, run_deadline_us, state_time_us, "
    "stage_time_us, job, tenant";

/// One row's kRecordColumns as the driver returned them (in that order). Times are
/// microseconds since the epoch, nullopt for NULL; the views must outlive DecodeRecord().
struct RowView {
  int64_t seq = 0;  // Creation order: newest first is seq descending.
  int64_t version = 0;
  absl::string_view lease_id;
  std::optional<int64_t> lease_expire_us;
  std::optional<int64_t> run_deadline_us;
  std::optional<int64_t> state_time_us;
  std::optional<int64_t> stage_time_us;
  absl::string_view job;  // The serialised v1::Job.
  absl::string_view tenant;
};

/// The record `row` holds (and its seq in `*seq` when given); DATA_LOSS when the stored
/// job does not parse.
absl::StatusOr<JobRecord> DecodeRecord(const RowView& row, int64_t* seq = nullptr);

/// The column values Create() inserts and Update() writes for a record (beside its name,
/// state, tenant, lease_id and version, which are stored as they are). The lease columns
/// are NULL unless the job is leased; unset times (InfinitePast) are NULL.
struct RowValues {
  int64_t create_time_us = 0;
  std::optional<int64_t> lease_expire_us;
  std::optional<int64_t> run_deadline_us;
  std::optional<int64_t> state_time_us;
  std::optional<int64_t> stage_time_us;
  std::string job;  // The serialised v1::Job.
};
RowValues EncodeRecord(const JobRecord& record);

/// A time column's value: microseconds since the epoch; nullopt (NULL) for InfinitePast.
std::optional<int64_t> TimeColumn(absl::Time t);
/// The bound of FindLeasedDueBy(t) on the lease and deadline columns (InfiniteFuture:
/// the largest value, so every leased job).
int64_t DueByColumn(absl::Time t);

/// List()'s page token after the job `seq`: the next page starts below it.
std::string EncodePageToken(int64_t seq);
/// The seq of a token EncodePageToken() made; INVALID_ARGUMENT for any other.
absl::StatusOr<int64_t> DecodePageToken(const std::string& token);

/// Builds one page of List() from rows read newest first:
///   ASSIGN_OR_RETURN(PageBuilder page, PageBuilder::Start(query));
///   ... WHERE seq < page.below_seq() ... ORDER BY seq DESC LIMIT page.row_limit()
///   for each row: if (!page.WantsRow()) break; page.Add(seq, job);
///   return std::move(page).Finish();
class PageBuilder {
 public:
  /// For `query`'s page size and token; INVALID_ARGUMENT for a token this store did not
  /// make.
  static absl::StatusOr<PageBuilder> Start(const JobQuery& query);

  /// Rows to read have a seq below this.
  int64_t below_seq() const { return below_seq_; }
  /// Rows to read at most: one more than the page holds tells whether another follows.
  int64_t row_limit() const { return int64_t{page_size_} + 1; }

  /// False when the page is full: the row at hand only shows that another page follows
  /// (next_page_token is now set); stop reading.
  bool WantsRow();
  /// Appends the job of the row with `seq`.
  void Add(int64_t seq, v1::Job job);
  /// The page.
  JobPage Finish() &&;

 private:
  PageBuilder(int64_t below_seq, int page_size) : below_seq_(below_seq), page_size_(page_size) {}

  int64_t below_seq_;
  int page_size_;
  int64_t last_seq_ = 0;
  JobPage page_;
};

/// NOT_FOUND: no job called `name`.
absl::Status NotFoundError(const std::string& name);
/// ABORTED: job `name` no longer has the version the caller read (someone wrote first).
absl::Status ChangedConcurrentlyError(const std::string& name);
/// RESOURCE_EXHAUSTED: `queued` jobs are queued, as many as allowed.
absl::Status QueueFullError(int64_t queued);

}  // namespace ompq::job_row

#endif  // OMPQ_SERVER_JOB_ROW_CODEC_H_
