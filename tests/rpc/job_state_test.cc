// Tests of rpc/job_state.h.
#include "rpc/job_state.h"

#include <gtest/gtest.h>

#include <set>

namespace ompq {
namespace {

TEST(IsTerminal, OnlySucceededFailedAndCancelled) {
  const std::set<v1::JobState> terminal = {v1::SUCCEEDED, v1::FAILED, v1::CANCELLED};
  const google::protobuf::EnumDescriptor* states = v1::JobState_descriptor();
  for (int i = 0; i < states->value_count(); ++i) {
    const auto state = static_cast<v1::JobState>(states->value(i)->number());
    EXPECT_EQ(IsTerminal(state), terminal.count(state) == 1) << states->value(i)->name();
  }
}

}  // namespace
}  // namespace ompq
