// Request validation: each bad field gets its own code and a message naming the field.
#include "server/job_validation.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>

#include "absl/strings/match.h"
#include "common/digest.h"

namespace ompq {
namespace {

v1::JobSpec ValidSpec() {
  v1::JobSpec spec;
  spec.set_model_digest(DigestOf("model"));
  spec.set_calib_digest(DigestOf("calib"));
  spec.set_size_budget_bytes(1 << 20);
  return spec;
}

TEST(JobValidationTest, FillsDefaults) {
  v1::JobSpec spec = ValidSpec();
  ASSERT_TRUE(ValidateAndFillSpec(&spec).ok());
  EXPECT_EQ(std::vector<int>(spec.weight_bits().begin(), spec.weight_bits().end()),
            (std::vector<int>{2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(spec.act_bits(), 8);
  ASSERT_TRUE(spec.has_pin_first_last_bits());
  EXPECT_EQ(spec.pin_first_last_bits(), 8);
  EXPECT_EQ(spec.search_samples(), 32);
  EXPECT_EQ(spec.calib_samples(), 1024);
  EXPECT_EQ(spec.finetune(), v1::PTQ);
  EXPECT_EQ(spec.objective(), kDefaultObjective);
  EXPECT_EQ(spec.export_profile(), v1::EXPORT_PROFILE_DEFAULT);
  ASSERT_TRUE(spec.has_frontier_evals());
  EXPECT_EQ(spec.frontier_evals(), spec.eval_digest().empty() ? 0 : 8);
}

TEST(JobValidationTest, KeepsGivenValues) {
  v1::JobSpec spec = ValidSpec();
  spec.add_weight_bits(4);
  spec.add_weight_bits(2);
  spec.set_act_bits(6);
  spec.set_pin_first_last_bits(0);  // 0: no pin, kept as 0.
  spec.set_search_samples(2);
  spec.set_finetune(v1::NONE);
  ASSERT_TRUE(ValidateAndFillSpec(&spec).ok());
  EXPECT_EQ(std::vector<int>(spec.weight_bits().begin(), spec.weight_bits().end()),
            (std::vector<int>{4, 2}));
  EXPECT_EQ(spec.act_bits(), 6);
  EXPECT_EQ(spec.pin_first_last_bits(), 0);
  EXPECT_EQ(spec.search_samples(), 2);
}

TEST(JobValidationTest, QatWithTrainingDataIsAccepted) {
  v1::JobSpec spec = ValidSpec();
  spec.set_finetune(v1::QAT);
  spec.set_train_digest(DigestOf("train"));
  spec.set_epochs(3);
  spec.set_lr(1e-3);
  absl::Status status = ValidateAndFillSpec(&spec);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(spec.finetune(), v1::QAT);
  EXPECT_EQ(spec.epochs(), 3);
  EXPECT_EQ(spec.lr(), 1e-3);
}

struct BadSpecCase {
  std::string name;
  std::function<void(v1::JobSpec&)> spoil;
  absl::StatusCode code;
  std::string field;  // Must appear in the message.
};

class BadSpecTest : public ::testing::TestWithParam<BadSpecCase> {};

TEST_P(BadSpecTest, IsRefusedNamingTheField) {
  v1::JobSpec spec = ValidSpec();
  GetParam().spoil(spec);
  absl::Status status = ValidateAndFillSpec(&spec);
  EXPECT_EQ(status.code(), GetParam().code) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), GetParam().field)) << status;
  EXPECT_EQ(status.message().find('\n'), absl::string_view::npos) << "one line";
}

const absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;

INSTANTIATE_TEST_SUITE_P(
    Fields, BadSpecTest,
    ::testing::Values(
        BadSpecCase{"NoModel", [](v1::JobSpec& s) { s.clear_model_digest(); }, kInvalid,
                    "spec.model_digest"},
        BadSpecCase{"BadModelDigest", [](v1::JobSpec& s) { s.set_model_digest("sha256:XYZ"); },
                    kInvalid, "spec.model_digest"},
        BadSpecCase{"NoCalib", [](v1::JobSpec& s) { s.clear_calib_digest(); }, kInvalid,
                    "spec.calib_digest"},
        BadSpecCase{"BadEvalDigest", [](v1::JobSpec& s) { s.set_eval_digest("md5:1"); }, kInvalid,
                    "spec.eval_digest"},
        BadSpecCase{"NoBudget", [](v1::JobSpec& s) { s.clear_size_budget_bytes(); }, kInvalid,
                    "size_budget_bytes"},
        BadSpecCase{"ZeroSize", [](v1::JobSpec& s) { s.set_size_budget_bytes(0); }, kInvalid,
                    "spec.size_budget_bytes"},
        BadSpecCase{"NegativeBops", [](v1::JobSpec& s) { s.set_bops_budget(-5); }, kInvalid,
                    "spec.bops_budget"},
        BadSpecCase{"WeightBitsZero", [](v1::JobSpec& s) { s.add_weight_bits(0); }, kInvalid,
                    "spec.weight_bits"},
        BadSpecCase{"WeightBits17", [](v1::JobSpec& s) { s.add_weight_bits(17); }, kInvalid,
                    "spec.weight_bits"},
        BadSpecCase{"WeightBitsTwice",
                    [](v1::JobSpec& s) {
                      s.add_weight_bits(4);
                      s.add_weight_bits(4);
                    },
                    kInvalid, "spec.weight_bits"},
        BadSpecCase{"ActBits17", [](v1::JobSpec& s) { s.set_act_bits(17); }, kInvalid,
                    "spec.act_bits"},
        // Activation quantizers need at least 2 bits: refused at submit, not after the search.
        BadSpecCase{"ActBits1", [](v1::JobSpec& s) { s.set_act_bits(1); }, kInvalid,
                    "spec.act_bits must be in 2..16"},
        BadSpecCase{"ActBitsNegative", [](v1::JobSpec& s) { s.set_act_bits(-1); }, kInvalid,
                    "spec.act_bits"},
        BadSpecCase{"PinFirstLast20", [](v1::JobSpec& s) { s.set_pin_first_last_bits(20); },
                    kInvalid, "spec.pin_first_last_bits"},
        BadSpecCase{"PinBadRegex",
                    [](v1::JobSpec& s) {
                      auto* pin = s.add_pins();
                      pin->set_name_regex("layer(1");
                      pin->set_bits(4);
                    },
                    kInvalid, "spec.pins[0].name_regex"},
        BadSpecCase{"PinEmptyRegex", [](v1::JobSpec& s) { s.add_pins()->set_bits(4); }, kInvalid,
                    "spec.pins[0].name_regex"},
        BadSpecCase{"PinBits0",
                    [](v1::JobSpec& s) {
                      auto* ok = s.add_pins();
                      ok->set_name_regex("fc");
                      ok->set_bits(8);
                      s.add_pins()->set_name_regex("conv.*");
                    },
                    kInvalid, "spec.pins[1].bits"},
        BadSpecCase{"SearchSamples1", [](v1::JobSpec& s) { s.set_search_samples(1); }, kInvalid,
                    "spec.search_samples"},
        BadSpecCase{"CalibSamplesNegative", [](v1::JobSpec& s) { s.set_calib_samples(-3); },
                    kInvalid, "spec.calib_samples"},
        BadSpecCase{"BetaNaN", [](v1::JobSpec& s) { s.set_beta(std::nan("")); }, kInvalid,
                    "spec.beta"},
        BadSpecCase{"TimeoutNegative", [](v1::JobSpec& s) { s.mutable_timeout()->set_seconds(-1); },
                    kInvalid, "spec.timeout"},
        BadSpecCase{"LabelKeyWithEquals",
                    [](v1::JobSpec& s) { (*s.mutable_labels())["a=b"] = "c"; }, kInvalid,
                    "spec.labels"},
        BadSpecCase{"LabelValueWithNewline",
                    [](v1::JobSpec& s) { (*s.mutable_labels())["a"] = "x\ny"; }, kInvalid,
                    "spec.labels"},
        BadSpecCase{"UnknownFinetune",
                    [](v1::JobSpec& s) { s.set_finetune(static_cast<v1::FinetuneMode>(42)); },
                    kInvalid, "spec.finetune"},
        BadSpecCase{"UnknownObjective",
                    [](v1::JobSpec& s) { s.set_objective(static_cast<v1::Objective>(7)); },
                    kInvalid, "use OBJECTIVE_ORTHOGONALITY or OBJECTIVE_DISTORTION"},
        BadSpecCase{"UnknownExportProfile",
                    [](v1::JobSpec& s) { s.set_export_profile(static_cast<v1::ExportProfile>(9)); },
                    kInvalid, "spec.export_profile 9 is not a known profile; use "
                              "EXPORT_PROFILE_DEFAULT or EXPORT_PROFILE_TENSORRT"},
        BadSpecCase{"FrontierEvalsWithoutEval",
                    [](v1::JobSpec& s) { s.set_frontier_evals(3); }, kInvalid,
                    "spec.frontier_evals: measuring the frontier's top-1 needs eval data"},
        BadSpecCase{"FrontierEvalsNegative",
                    [](v1::JobSpec& s) { s.set_frontier_evals(-1); }, kInvalid,
                    "spec.frontier_evals must be in 0..24"},
        BadSpecCase{"QatWithoutTrainData", [](v1::JobSpec& s) { s.set_finetune(v1::QAT); },
                    kInvalid, "--finetune qat trains on labelled data: pass --train FILE"},
        BadSpecCase{"TrainDataWithoutQat",
                    [](v1::JobSpec& s) { s.set_train_digest(DigestOf("train")); }, kInvalid,
                    "training data is only used by --finetune qat"},
        BadSpecCase{"TrainDataWithNone",
                    [](v1::JobSpec& s) {
                      s.set_finetune(v1::NONE);
                      s.set_train_digest(DigestOf("train"));
                    },
                    kInvalid, "spec.train_digest"},
        BadSpecCase{"QatBadTrainDigest",
                    [](v1::JobSpec& s) {
                      s.set_finetune(v1::QAT);
                      s.set_train_digest("sha256:nothex");
                    },
                    kInvalid, "spec.train_digest"},
        BadSpecCase{"QatNegativeEpochs",
                    [](v1::JobSpec& s) {
                      s.set_finetune(v1::QAT);
                      s.set_train_digest(DigestOf("train"));
                      s.set_epochs(-1);
                    },
                    kInvalid, "spec.epochs"},
        BadSpecCase{"QatLrInf",
                    [](v1::JobSpec& s) {
                      s.set_finetune(v1::QAT);
                      s.set_train_digest(DigestOf("train"));
                      s.set_lr(std::numeric_limits<double>::infinity());
                    },
                    kInvalid, "spec.lr"}),
    [](const ::testing::TestParamInfo<BadSpecCase>& info) { return info.param.name; });

TEST(JobValidationTest, RequestIdIsBounded) {
  EXPECT_TRUE(ValidateRequestId("").ok());
  EXPECT_TRUE(ValidateRequestId("3f2c-uuid").ok());
  absl::Status long_id = ValidateRequestId(std::string(129, 'x'));
  EXPECT_EQ(long_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(long_id.message(), "request_id"));
}

TEST(JobValidationTest, JobNames) {
  EXPECT_TRUE(ValidateJobName("jobs/0123abcd").ok());
  for (const char* bad : {"", "jobs/", "0123", "jobs/../x", "jobs/a b", "tasks/1"}) {
    absl::Status status = ValidateJobName(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(status.message(), "name")) << status;
  }
}

TEST(JobValidationTest, ListRequests) {
  v1::ListJobsRequest request;
  EXPECT_TRUE(ValidateListRequest(request).ok());
  request.set_page_size(-1);
  absl::Status negative = ValidateListRequest(request);
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(negative.message(), "page_size"));
  request.set_page_size(10);
  request.set_label("no-equals-sign");
  absl::Status label = ValidateListRequest(request);
  EXPECT_EQ(label.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(label.message(), "label"));
  auto filter = ParseLabelFilter("team=a=b");
  ASSERT_TRUE(filter.ok());
  EXPECT_EQ(filter->key, "team");
  EXPECT_EQ(filter->value, "a=b");
}

}  // namespace
}  // namespace ompq
