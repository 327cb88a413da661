// WorkerSupervisor with stand-in worker programs (shell scripts): arguments, restart after
// an exit, SIGTERM on stop and SIGKILL for a child that ignores it.
#include "server/worker_supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/server/test_util.h"

namespace ompq {
namespace {

using ::ompq::testing::TempDir;

// Children are real processes, so waiting for them is real waiting: poll with a generous
// bound instead of sleeping a fixed time.
bool WaitFor(const std::function<bool()>& condition, absl::Duration limit = absl::Seconds(20)) {
  const absl::Time give_up = absl::Now() + limit;
  while (!condition()) {
    if (absl::Now() > give_up) {
      return false;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class WorkerSupervisorTest : public ::testing::Test {
 protected:
  // Writes an executable script standing in for ompq-worker.
  std::string Script(const std::string& body) {
    const std::string path = dir_.path() + "/fake-worker.sh";
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    ::chmod(path.c_str(), 0755);
    return path;
  }

  WorkerSupervisorOptions Options(const std::string& binary) {
    WorkerSupervisorOptions options;
    options.worker_binary = binary;
    options.server_address = "127.0.0.1:12345";
    options.work_root = dir_.path() + "/work";
    options.workers = 1;
    options.initial_backoff = absl::Milliseconds(10);
    options.max_backoff = absl::Milliseconds(40);
    options.stop_grace = absl::Seconds(5);
    return options;
  }

  TempDir dir_;
};

TEST_F(WorkerSupervisorTest, PassesArgumentsAndRestartsExitedChild) {
  const std::string log = dir_.path() + "/starts";
  WorkerSupervisor supervisor(Options(Script(absl::StrCat("echo \"$@\" >> ", log, "; exit 3"))));
  EXPECT_EQ(WorkerSupervisor::WorkerId(0), "local-0");
  EXPECT_EQ(supervisor.worker_ids(), std::set<std::string>{"local-0"});
  supervisor.Start();
  // Wait for what the children wrote, not for starts(): a child counted as started may
  // not have run its script yet when Stop() ends it.
  std::vector<std::string> lines;
  ASSERT_TRUE(WaitFor([&] {
    lines = absl::StrSplit(ReadFile(log), '\n', absl::SkipEmpty());
    return lines.size() >= 3;
  })) << "crashed child was not restarted; starts=" << supervisor.starts();
  supervisor.Stop();
  EXPECT_EQ(supervisor.running(), 0);
  EXPECT_GE(supervisor.starts(), 3);
  EXPECT_EQ(lines[0], absl::StrCat("--server 127.0.0.1:12345 --worker-id local-0 --work-dir ",
                                   dir_.path(), "/work/local-0"));
  EXPECT_TRUE(std::filesystem::is_directory(dir_.path() + "/work/local-0"));
}

TEST_F(WorkerSupervisorTest, StopTerminatesRunningChildren) {
  const std::string pids = dir_.path() + "/pids";
  WorkerSupervisorOptions options =
      Options(Script(absl::StrCat("echo $$ >> ", pids, "; exec sleep 1000")));
  options.workers = 2;
  WorkerSupervisor supervisor(options);
  supervisor.Start();
  ASSERT_TRUE(WaitFor([&] {
    return std::vector<std::string>(absl::StrSplit(ReadFile(pids), '\n', absl::SkipEmpty()))
               .size() == 2;
  }));
  EXPECT_EQ(supervisor.running(), 2);
  supervisor.Stop();
  EXPECT_EQ(supervisor.running(), 0);
  EXPECT_EQ(supervisor.starts(), 2) << "a child killed by Stop() must not be restarted";
  for (absl::string_view line : absl::StrSplit(ReadFile(pids), '\n', absl::SkipEmpty())) {
    int pid = 0;
    ASSERT_TRUE(absl::SimpleAtoi(line, &pid));
    EXPECT_EQ(::kill(pid, 0), -1) << "pid " << pid << " still exists";
    EXPECT_EQ(errno, ESRCH);
  }
}

TEST_F(WorkerSupervisorTest, ChildIgnoringSigtermIsKilledAfterGrace) {
  const std::string pids = dir_.path() + "/pids";
  WorkerSupervisorOptions options = Options(
      Script(absl::StrCat("trap '' TERM; echo $$ >> ", pids, "; while true; do sleep 0.05; done")));
  options.stop_grace = absl::Milliseconds(200);
  WorkerSupervisor supervisor(options);
  supervisor.Start();
  ASSERT_TRUE(WaitFor([&] { return !ReadFile(pids).empty(); }));
  supervisor.Stop();
  int pid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadFile(pids)), &pid));
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(supervisor.running(), 0);
}

TEST_F(WorkerSupervisorTest, MissingBinaryIsRetriedWithoutCrashing) {
  WorkerSupervisor supervisor(Options(dir_.path() + "/does-not-exist"));
  supervisor.Start();
  // exec fails in the child (exit 127), which counts as an exit and is restarted.
  ASSERT_TRUE(WaitFor([&] { return supervisor.starts() >= 2; }));
  supervisor.Stop();
  EXPECT_EQ(supervisor.running(), 0);
}

}  // namespace
}  // namespace ompq
