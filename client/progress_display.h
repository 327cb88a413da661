// Live progress of a job while ompqctl waits: one updating line on a terminal, plain
// lines (only when the state or stage changes) in logs and pipes.
#ifndef OMPQ_CLIENT_PROGRESS_DISPLAY_H_
#define OMPQ_CLIENT_PROGRESS_DISPLAY_H_

#include <ostream>
#include <string>

#include "absl/time/time.h"
#include "ompq/v1/job.pb.h"

namespace ompq::client {

/// "[RUNNING] ORTHOGONALITY  42%  00:07  <message>"; the stage is left out while none.
std::string FormatProgressLine(const v1::Job& job, absl::Duration elapsed);

/// "00:07", "12:34", "1:02:03".
std::string FormatElapsed(absl::Duration elapsed);

/// Writes job updates to `out` (ompqctl uses stderr so stdout stays for results).
class ProgressDisplay {
 public:
  /// `interactive`: redraw one line in place (a terminal); else print changes only.
  ProgressDisplay(std::ostream& out, bool interactive);

  /// Shows `job` as of `now`. Elapsed time counts from the job's start (or creation).
  void Update(const v1::Job& job, absl::Time now);
  /// Ends the updating line so later output starts on a fresh one.
  void Finish();

 private:
  std::ostream& out_;
  const bool interactive_;
  bool line_open_ = false;  // An interactive line is drawn and not yet ended.
  size_t last_width_ = 0;   // Length of the last interactive line, for erasing.
  std::string last_key_;    // State and stage of the last plain line.
};

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_PROGRESS_DISPLAY_H_
