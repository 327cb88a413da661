// Fuzzes request validation (server/job_validation.h) with bytes parsed as the protos
// clients send: CreateJobRequest (spec and request_id), ListJobsRequest, job names.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "google/protobuf/util/message_differencer.h"
#include "ompq/v1/quantization_service.pb.h"
#include "server/job_validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int length = static_cast<int>(size);
  ompq::v1::CreateJobRequest create;
  if (create.ParseFromArray(data, length)) {
    (void)ompq::ValidateRequestId(create.request_id());
    ompq::v1::JobSpec spec = create.spec();
    absl::Status status = ompq::ValidateAndFillSpec(&spec);
    if (status.ok()) {
      // A filled spec is complete and valid: validating it again changes nothing.
      // (Compared field by field: map entries serialize in no fixed order.)
      ompq::v1::JobSpec again = spec;
      if (!ompq::ValidateAndFillSpec(&again).ok() ||
          !google::protobuf::util::MessageDifferencer::Equals(again, spec)) {
        std::abort();
      }
    } else if (status.code() != absl::StatusCode::kInvalidArgument &&
               status.code() != absl::StatusCode::kUnimplemented) {
      std::abort();
    }
  }
  ompq::v1::ListJobsRequest list;
  if (list.ParseFromArray(data, length)) {
    (void)ompq::ValidateListRequest(list);
    absl::StatusOr<ompq::LabelFilter> filter = ompq::ParseLabelFilter(list.label());
    (void)filter;
    (void)ompq::ValidateJobName(list.page_token());
  }
  return 0;
}
