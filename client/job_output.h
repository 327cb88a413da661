// How ompqctl prints jobs: protobuf's JSON mapping for --output json, short text otherwise.
#ifndef OMPQ_CLIENT_JOB_OUTPUT_H_
#define OMPQ_CLIENT_JOB_OUTPUT_H_

#include <string>
#include <vector>

#include "ompq/v1/job.pb.h"

namespace ompq::client {

/// --output text|json.
enum class OutputFormat { kText, kJson };

/// The Job as one JSON document (protobuf JSON mapping, lowerCamelCase names). Scalar
/// fields are always printed, so `name`, `state`, `stage`, `progress` and `attempt` are
/// present even at their defaults.
std::string JobToJson(const v1::Job& job);

/// {"jobs": [...]} for `list`.
std::string JobListToJson(const std::vector<v1::Job>& jobs);

/// A few lines: name, state, stage, progress, attempt, error, artifacts.
std::string JobToText(const v1::Job& job);

/// One row per job: NAME STATE STAGE PROGRESS MODEL CREATED.
std::string JobListToText(const std::vector<v1::Job>& jobs);

/// "FAILED: INVALID_MODEL: <message>" style line for a job that did not succeed.
std::string JobFailureLine(const v1::Job& job);

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_JOB_OUTPUT_H_
