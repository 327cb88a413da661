#include "client/progress_display.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ompq::client {
namespace {

absl::Time ToAbslTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

// The job's own clock when the server gave one, so a reattached `watch` shows the true
// elapsed time; clamped at zero in case client and server clocks disagree.
absl::Duration ElapsedOf(const v1::Job& job, absl::Time now) {
  absl::Time start = now;
  if (job.has_start_time()) {
    start = ToAbslTime(job.start_time());
  } else if (job.has_create_time()) {
    start = ToAbslTime(job.create_time());
  }
  absl::Time end = job.has_end_time() ? ToAbslTime(job.end_time()) : now;
  return std::max(absl::ZeroDuration(), end - start);
}

}  // namespace

std::string FormatElapsed(absl::Duration elapsed) {
  int64_t seconds = absl::ToInt64Seconds(elapsed);
  if (seconds >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", seconds / 3600, seconds / 60 % 60, seconds % 60);
  }
  return absl::StrFormat("%02d:%02d", seconds / 60, seconds % 60);
}

std::string FormatProgressLine(const v1::Job& job, absl::Duration elapsed) {
  std::string line = absl::StrCat("[", v1::JobState_Name(job.state()), "]");
  if (job.stage() != v1::STAGE_UNSPECIFIED) {
    absl::StrAppend(&line, " ", v1::Stage_Name(job.stage()));
  }
  absl::StrAppend(&line, absl::StrFormat("  %3.0f%%  %s", job.progress(), FormatElapsed(elapsed)));
  // The worker's estimate of what is left of the current stage (0: none yet, e.g. before
  // 5% of the stage): shown only while the job runs.
  if (job.state() == v1::RUNNING && job.eta_seconds() > 0) {
    absl::StrAppend(&line, "  ~", FormatElapsed(absl::Seconds(job.eta_seconds())),
                    " left in stage");
  }
  if (!job.message().empty()) absl::StrAppend(&line, "  ", job.message());
  return line;
}

ProgressDisplay::ProgressDisplay(std::ostream& out, bool interactive)
    : out_(out), interactive_(interactive) {}

void ProgressDisplay::Update(const v1::Job& job, absl::Time now) {
  std::string line = FormatProgressLine(job, ElapsedOf(job, now));
  if (interactive_) {
    // Pad with spaces over the previous, possibly longer, line instead of relying on
    // terminal escape codes.
    size_t width = line.size();
    if (line.size() < last_width_) line.append(last_width_ - line.size(), ' ');
    out_ << '\r' << line << std::flush;
    last_width_ = width;
    line_open_ = true;
    return;
  }
  std::string key = absl::StrCat(job.state(), "/", job.stage());
  if (key == last_key_) return;
  last_key_ = key;
  out_ << line << std::endl;
}

void ProgressDisplay::Finish() {
  if (line_open_) out_ << std::endl;
  line_open_ = false;
  last_width_ = 0;
}

}  // namespace ompq::client
