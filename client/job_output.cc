#include "client/job_output.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/units.h"

namespace ompq::client {
namespace {

std::string FormatTimestamp(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  return google::protobuf::util::TimeUtil::ToString(time);
}

}  // namespace

std::string JobToJson(const v1::Job& job) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.always_print_enums_as_ints = false;
  std::string json;
  // Serialising a valid in-memory message cannot fail; an empty object is a safe fallback.
  if (!google::protobuf::util::MessageToJsonString(job, &json, options).ok()) json = "{}";
  return json;
}

std::string JobListToJson(const std::vector<v1::Job>& jobs) {
  std::vector<std::string> items;
  items.reserve(jobs.size());
  for (const v1::Job& job : jobs) items.push_back(JobToJson(job));
  return absl::StrCat("{\"jobs\":[", absl::StrJoin(items, ","), "]}");
}

std::string JobFailureLine(const v1::Job& job) {
  std::string line = v1::JobState_Name(job.state());
  if (!job.error().reason().empty()) absl::StrAppend(&line, ": ", job.error().reason());
  if (!job.error().message().empty()) absl::StrAppend(&line, ": ", job.error().message());
  return line;
}

std::string JobToText(const v1::Job& job) {
  std::string text;
  absl::StrAppend(&text, "name:      ", job.name(), "\n");
  if (!job.spec().display_name().empty()) {
    absl::StrAppend(&text, "model:     ", job.spec().display_name(), "\n");
  }
  absl::StrAppend(&text, "state:     ", v1::JobState_Name(job.state()), "\n");
  if (job.stage() != v1::STAGE_UNSPECIFIED) {
    absl::StrAppend(&text, "stage:     ", v1::Stage_Name(job.stage()), "\n");
  }
  absl::StrAppend(&text, absl::StrFormat("progress:  %.0f%%\n", job.progress()));
  absl::StrAppend(&text, "attempt:   ", job.attempt(), "\n");
  if (!job.worker().empty()) absl::StrAppend(&text, "worker:    ", job.worker(), "\n");
  if (!job.message().empty()) absl::StrAppend(&text, "message:   ", job.message(), "\n");
  absl::StrAppend(&text, "created:   ", FormatTimestamp(job.create_time()), "\n");
  if (job.has_end_time()) {
    absl::StrAppend(&text, "ended:     ", FormatTimestamp(job.end_time()), "\n");
  }
  if (job.has_error()) {
    absl::StrAppend(&text, "error:     ", job.error().code(), " ", job.error().reason(), ": ",
                    job.error().message(), "\n");
  }
  for (const v1::Artifact& artifact : job.artifacts()) {
    absl::StrAppend(&text, "artifact:  ", artifact.name(), " (", FormatBytes(artifact.size_bytes()),
                    ")\n");
  }
  return text;
}

std::string JobListToText(const std::vector<v1::Job>& jobs) {
  if (jobs.empty()) return "no jobs\n";
  std::string text = absl::StrFormat("%-28s %-11s %-16s %5s  %-24s %s\n", "NAME", "STATE", "STAGE",
                                     "PROG", "MODEL", "CREATED");
  for (const v1::Job& job : jobs) {
    std::string stage = job.stage() == v1::STAGE_UNSPECIFIED ? "-" : v1::Stage_Name(job.stage());
    absl::StrAppend(&text,
                    absl::StrFormat("%-28s %-11s %-16s %4.0f%%  %-24s %s\n", job.name(),
                                    v1::JobState_Name(job.state()), stage, job.progress(),
                                    job.spec().display_name(), FormatTimestamp(job.create_time())));
  }
  return text;
}

}  // namespace ompq::client
