#include "server/job_row_codec.h"

#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "rpc/proto_time.h"

namespace ompq::job_row {
namespace {

absl::Time TimeOf(const std::optional<int64_t>& micros) {
  return micros.has_value() ? absl::FromUnixMicros(*micros) : absl::InfinitePast();
}

}  // namespace

absl::StatusOr<JobRecord> DecodeRecord(const RowView& row, int64_t* seq) {
  JobRecord record;
  if (seq != nullptr) {
    *seq = row.seq;
  }
  record.version = row.version;
  record.lease_id = std::string(row.lease_id);
  record.lease_expire_time = TimeOf(row.lease_expire_us);
  record.run_deadline = TimeOf(row.run_deadline_us);
  record.state_time = TimeOf(row.state_time_us);
  record.stage_time = TimeOf(row.stage_time_us);
  if (!record.job.ParseFromArray(row.job.data(), static_cast<int>(row.job.size()))) {
    return absl::DataLossError("job database: a stored job does not parse");
  }
  record.tenant = std::string(row.tenant);
  return record;
}

RowValues EncodeRecord(const JobRecord& record) {
  RowValues values;
  values.create_time_us = absl::ToUnixMicros(FromProtoTimestamp(record.job.create_time()));
  // A lease's times mean nothing once it is gone: stored only while leased.
  if (record.leased()) {
    values.lease_expire_us = TimeColumn(record.lease_expire_time);
    values.run_deadline_us = TimeColumn(record.run_deadline);
  }
  values.state_time_us = TimeColumn(record.state_time);
  values.stage_time_us = TimeColumn(record.stage_time);
  values.job = record.job.SerializeAsString();
  return values;
}

std::optional<int64_t> TimeColumn(absl::Time t) {
  if (t == absl::InfinitePast()) {
    return std::nullopt;
  }
  return absl::ToUnixMicros(t);
}

int64_t DueByColumn(absl::Time t) {
  return t == absl::InfiniteFuture() ? std::numeric_limits<int64_t>::max() : absl::ToUnixMicros(t);
}

std::string EncodePageToken(int64_t seq) {
  return absl::WebSafeBase64Escape(absl::StrCat("seq:", seq));
}

absl::StatusOr<int64_t> DecodePageToken(const std::string& token) {
  std::string raw;
  if (absl::WebSafeBase64Unescape(token, &raw)) {
    absl::string_view rest = raw;
    int64_t seq = 0;
    if (absl::ConsumePrefix(&rest, "seq:") && absl::SimpleAtoi(rest, &seq) && seq > 0) {
      return seq;
    }
  }
  return absl::InvalidArgumentError(
      "page_token is not valid: pass the next_page_token of the previous response");
}

absl::StatusOr<PageBuilder> PageBuilder::Start(const JobQuery& query) {
  int64_t below_seq = std::numeric_limits<int64_t>::max();
  if (!query.page_token.empty()) {
    ASSIGN_OR_RETURN(below_seq, DecodePageToken(query.page_token));
  }
  return PageBuilder(below_seq, query.page_size > 0 ? query.page_size : 1);
}

bool PageBuilder::WantsRow() {
  if (static_cast<int>(page_.jobs.size()) < page_size_) {
    return true;
  }
  page_.next_page_token = EncodePageToken(last_seq_);
  return false;
}

void PageBuilder::Add(int64_t seq, v1::Job job) {
  last_seq_ = seq;
  page_.jobs.push_back(std::move(job));
}

JobPage PageBuilder::Finish() && { return std::move(page_); }

absl::Status NotFoundError(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("job '", name, "' not found"));
}

absl::Status ChangedConcurrentlyError(const std::string& name) {
  return absl::AbortedError(absl::StrCat("job '", name, "' was changed concurrently; retry"));
}

absl::Status QueueFullError(int64_t queued) {
  return absl::ResourceExhaustedError(
      absl::StrCat("the job queue is full (", queued,
                   " jobs queued); retry later, or raise the server's --max-queued-jobs"));
}

}  // namespace ompq::job_row
