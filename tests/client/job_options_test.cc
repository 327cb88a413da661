// Tests of ompqctl's job-option parsing (client/job_options.h).
#include "client/job_options.h"

#include <gtest/gtest.h>

namespace ompq::client {
namespace {

JobFlags MinimalFlags() {
  JobFlags flags;
  flags.model = "models/net.pt";
  flags.calib = "calib.pt";
  flags.size = "1.5MiB";
  return flags;
}

TEST(ParseBitsList, SortsAndChecksRange) {
  auto bits = ParseBitsList("8,2, 4");
  ASSERT_TRUE(bits.ok()) << bits.status();
  EXPECT_EQ(*bits, (std::vector<int>{2, 4, 8}));
  EXPECT_FALSE(ParseBitsList("2,17").ok());
  EXPECT_FALSE(ParseBitsList("0").ok());
  EXPECT_FALSE(ParseBitsList("2,,4").ok());
  EXPECT_FALSE(ParseBitsList("two").ok());
  EXPECT_EQ(ParseBitsList("4,4").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParsePinFirstLast, AcceptsBitsOrNone) {
  EXPECT_EQ(*ParsePinFirstLast("8"), 8);
  EXPECT_EQ(*ParsePinFirstLast("none"), 0);
  EXPECT_EQ(*ParsePinFirstLast("NONE"), 0);
  EXPECT_FALSE(ParsePinFirstLast("0").ok());
  EXPECT_FALSE(ParsePinFirstLast("eight").ok());
}

TEST(ParsePin, SplitsAtTheLastEquals) {
  auto pin = ParsePin("layer1\\..*=4");
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ(pin->name_regex(), "layer1\\..*");
  EXPECT_EQ(pin->bits(), 4);
  // A regex may itself contain '='.
  auto odd = ParsePin("a=b=6");
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->name_regex(), "a=b");
  EXPECT_EQ(odd->bits(), 6);
  EXPECT_FALSE(ParsePin("layer1").ok());
  EXPECT_FALSE(ParsePin("=4").ok());
  EXPECT_FALSE(ParsePin("conv=99").ok());
}

TEST(ParseLabel, NeedsKeyAndEquals) {
  auto label = ParseLabel("team=vision=2");
  ASSERT_TRUE(label.ok());
  EXPECT_EQ(label->first, "team");
  EXPECT_EQ(label->second, "vision=2");
  EXPECT_TRUE(ParseLabel("empty=").ok());
  EXPECT_FALSE(ParseLabel("team").ok());
  EXPECT_FALSE(ParseLabel("=x").ok());
}

TEST(ParseFinetuneMode, KnownModesOnly) {
  EXPECT_EQ(*ParseFinetuneMode("none"), v1::NONE);
  EXPECT_EQ(*ParseFinetuneMode("PTQ"), v1::PTQ);
  EXPECT_EQ(*ParseFinetuneMode("qat"), v1::QAT);
  EXPECT_FALSE(ParseFinetuneMode("adaround").ok());
}

TEST(NormalizeJobName, AddsPrefixOnce) {
  EXPECT_EQ(NormalizeJobName("abc"), "jobs/abc");
  EXPECT_EQ(NormalizeJobName("jobs/abc"), "jobs/abc");
  EXPECT_EQ(NormalizeJobName(" jobs/abc "), "jobs/abc");
}

TEST(ParseJobState, CaseInsensitive) {
  EXPECT_EQ(*ParseJobState("running"), v1::RUNNING);
  EXPECT_FALSE(ParseJobState("JOB_STATE_UNSPECIFIED").ok());
  EXPECT_FALSE(ParseJobState("done").ok());
}

TEST(BuildJobPlan, MinimalSpec) {
  auto plan = BuildJobPlan(MinimalFlags());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->model_path, "models/net.pt");
  EXPECT_EQ(plan->calib_path, "calib.pt");
  EXPECT_EQ(plan->spec.display_name(), "net.pt");
  ASSERT_TRUE(plan->spec.has_size_budget_bytes());
  EXPECT_EQ(plan->spec.size_budget_bytes(), 1572864);
  EXPECT_FALSE(plan->spec.has_bops_budget());
  EXPECT_FALSE(plan->spec.has_pin_first_last_bits());
  EXPECT_FALSE(plan->spec.has_beta());
  EXPECT_FALSE(plan->spec.has_timeout());
  // Not given: left for the server's default (finetuning is not implemented yet).
  EXPECT_EQ(plan->spec.finetune(), v1::FINETUNE_MODE_UNSPECIFIED);
  EXPECT_TRUE(plan->spec.weight_bits().empty());
  EXPECT_TRUE(plan->spec.model_digest().empty());
}

TEST(BuildJobPlan, EveryOption) {
  JobFlags flags = MinimalFlags();
  flags.size.clear();
  flags.bops = "75G";
  flags.weight_bits = "4,2,8";
  flags.act_bits = 4;
  flags.pin_first_last = "none";
  flags.pins = {"fc=8", "layer1\\..*=6"};
  flags.beta = "2.5";
  flags.finetune = "qat";
  flags.export_profile = "TensorRT";
  flags.epochs = 3;
  flags.lr = 0.01;
  flags.train = "train.npz";
  flags.eval = "eval.npz";
  flags.search_samples = 64;
  flags.seed = 7;
  flags.timeout = "1h30m";
  flags.request_id = "ci-123";
  flags.labels = {"team=vision", "run=1"};
  auto plan = BuildJobPlan(flags);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const v1::JobSpec& spec = plan->spec;
  EXPECT_FALSE(spec.has_size_budget_bytes());
  EXPECT_EQ(spec.bops_budget(), 75000000000);
  EXPECT_EQ(std::vector<int>(spec.weight_bits().begin(), spec.weight_bits().end()),
            (std::vector<int>{2, 4, 8}));
  EXPECT_EQ(spec.act_bits(), 4);
  ASSERT_TRUE(spec.has_pin_first_last_bits());
  EXPECT_EQ(spec.pin_first_last_bits(), 0);
  ASSERT_EQ(spec.pins_size(), 2);
  EXPECT_EQ(spec.pins(1).name_regex(), "layer1\\..*");
  EXPECT_EQ(spec.pins(1).bits(), 6);
  EXPECT_DOUBLE_EQ(spec.beta(), 2.5);
  EXPECT_EQ(spec.finetune(), v1::QAT);
  EXPECT_EQ(spec.export_profile(), v1::EXPORT_PROFILE_TENSORRT);
  EXPECT_EQ(spec.epochs(), 3);
  EXPECT_EQ(spec.search_samples(), 64);
  EXPECT_EQ(spec.seed(), 7);
  EXPECT_EQ(spec.timeout().seconds(), 5400);
  EXPECT_EQ(plan->request_id, "ci-123");
  EXPECT_EQ(plan->train_path, "train.npz");
  EXPECT_EQ(plan->eval_path, "eval.npz");
  EXPECT_EQ(spec.labels().at("team"), "vision");
  EXPECT_EQ(spec.labels().size(), 2u);
}

TEST(BuildJobPlan, RefusesBadInputNamingTheFlag) {
  struct Case {
    void (*mutate)(JobFlags&);
    const char* flag_in_message;
  };
  const Case cases[] = {
      {[](JobFlags& f) { f.calib.clear(); }, "--calib"},
      {[](JobFlags& f) { f.size.clear(); }, "--size"},
      {[](JobFlags& f) { f.size = "lots"; }, "--size"},
      {[](JobFlags& f) { f.bops = "75X"; }, "--bops"},
      {[](JobFlags& f) { f.act_bits = 32; }, "--act-bits"},
      {[](JobFlags& f) { f.act_bits = 1; }, "--act-bits: '1' is not a bit-width; use a whole "
                                            "number from 2"},
      {[](JobFlags& f) { f.beta = "-1"; }, "--beta"},
      {[](JobFlags& f) { f.finetune = "best"; }, "--finetune"},
      {[](JobFlags& f) { f.frontier_evals = 4; }, "--frontier-evals measures top-1 on the eval "
                                                  "data: pass --eval FILE"},
      {[](JobFlags& f) { f.frontier_evals = 99; }, "--frontier-evals must be in 0..24"},
      {[](JobFlags& f) { f.objective = "accuracy"; }, "--objective 'accuracy': use orthogonality or "
                                                      "distortion"},
      {[](JobFlags& f) { f.export_profile = "openvino"; },
       "--export-profile 'openvino': use default or tensorrt"},
      {[](JobFlags& f) { f.search_samples = 1; }, "--search-samples"},
      {[](JobFlags& f) { f.iters = -5; }, "--iters"},
      {[](JobFlags& f) { f.timeout = "soon"; }, "--timeout"},
      {[](JobFlags& f) { f.request_id = std::string(129, 'x'); }, "--request-id"},
      {[](JobFlags& f) { f.labels = {"novalue"}; }, "--label"},
      {[](JobFlags& f) { f.pins = {"fc"}; }, "--pin"},
  };
  for (const Case& c : cases) {
    JobFlags flags = MinimalFlags();
    c.mutate(flags);
    auto plan = BuildJobPlan(flags);
    ASSERT_FALSE(plan.ok()) << c.flag_in_message;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(plan.status().message().find(c.flag_in_message), std::string::npos)
        << plan.status().message();
  }
}

}  // namespace
}  // namespace ompq::client
