#include "server/worker_supervisor.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"

namespace ompq {
namespace {

// How often the supervisor thread looks for exited children.
constexpr absl::Duration kPollInterval = absl::Milliseconds(100);

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) {
    return absl::StrCat("exited with code ", WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return absl::StrCat("ended with status ", status);
}

}  // namespace

WorkerSupervisor::WorkerSupervisor(WorkerSupervisorOptions options)
    : options_(std::move(options)) {}

WorkerSupervisor::~WorkerSupervisor() { Stop(); }

std::string WorkerSupervisor::WorkerId(int index) { return absl::StrCat("local-", index); }

void WorkerSupervisor::Start() {
  children_.resize(static_cast<size_t>(std::max(options_.workers, 0)));
  for (Child& child : children_) {
    child.backoff = options_.initial_backoff;
  }
  thread_ = std::thread([this] { Run(); });
}

void WorkerSupervisor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

std::set<std::string> WorkerSupervisor::worker_ids() const {
  std::set<std::string> ids;
  for (int i = 0; i < options_.workers; ++i) {
    ids.insert(WorkerId(i));
  }
  return ids;
}

int WorkerSupervisor::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

int WorkerSupervisor::starts() const {
  absl::MutexLock lock(&mu_);
  return starts_;
}

void WorkerSupervisor::Run() {
  while (true) {
    const absl::Time now = absl::Now();
    for (size_t i = 0; i < children_.size(); ++i) {
      Child& child = children_[i];
      if (child.pid > 0) {
        Reap(static_cast<int>(i), child, /*stopping=*/false);
      }
      if (child.pid == 0 && now >= child.next_start) {
        Spawn(static_cast<int>(i), child);
      }
    }
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stop_), kPollInterval)) {
      break;
    }
  }
  StopChildren();
}

void WorkerSupervisor::Spawn(int index, Child& child) {
  const std::string id = WorkerId(index);
  const std::string work_dir = absl::StrCat(options_.work_root, "/", id);
  std::error_code ec;
  std::filesystem::create_directories(work_dir, ec);
  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls are allowed.
  std::vector<std::string> args = {
      options_.worker_binary, "--server", options_.server_address, "--worker-id", id,
      "--work-dir",           work_dir};
  // The server's --worker-memory-limit / --worker-job-time-limit, enforced by each child.
  if (options_.memory_limit_bytes > 0) {
    args.push_back("--memory-limit");
    args.push_back(absl::StrCat(options_.memory_limit_bytes));
  }
  if (options_.job_time_limit > absl::ZeroDuration()) {
    args.push_back("--job-time-limit");
    args.push_back(absl::FormatDuration(options_.job_time_limit));
  }
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& arg : args) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);
  // The environment, with the token (if any) as the only OMPQ_TOKEN.
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, "OMPQ_TOKEN=")) {
      env_storage.emplace_back(*e);
    }
  }
  if (!options_.token.empty()) {
    env_storage.push_back(absl::StrCat("OMPQ_TOKEN=", options_.token));
  }
  std::vector<char*> envp;
  envp.reserve(env_storage.size() + 1);
  for (std::string& entry : env_storage) {
    envp.push_back(entry.data());
  }
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid == 0) {
    // Die with the server, even when it is SIGKILLed.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) {
      ::_exit(1);
    }
    // Own process group: a Ctrl-C at the terminal reaches the server, which then stops
    // the children in order.
    ::setpgid(0, 0);
    // main() blocks SIGTERM/SIGINT to sigwait() for them; the worker must not inherit that.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  if (pid < 0) {
    OMPQ_LOG(ERROR) << "cannot start worker " << id << ": " << std::strerror(errno);
    child.next_start = absl::Now() + child.backoff;
    child.backoff = std::min(child.backoff * 2, options_.max_backoff);
    return;
  }
  child.pid = pid;
  child.started = absl::Now();
  OMPQ_LOG(INFO) << "started worker " << id << " (pid " << pid << ")";
  absl::MutexLock lock(&mu_);
  ++running_;
  ++starts_;
}

void WorkerSupervisor::Reap(int index, Child& child, bool stopping) {
  int status = 0;
  const pid_t done = ::waitpid(child.pid, &status, WNOHANG);
  if (done == 0) {
    return;  // Still running.
  }
  const absl::Time now = absl::Now();
  if (done < 0) {
    OMPQ_LOG(ERROR) << "lost track of worker " << WorkerId(index) << ": " << std::strerror(errno);
  } else if (!stopping) {
    if (now - child.started >= options_.stable_after) {
      child.backoff = options_.initial_backoff;
    }
    OMPQ_LOG(WARNING) << "worker " << WorkerId(index) << " (pid " << child.pid << ") "
                      << DescribeExit(status) << "; restarting in "
                      << absl::FormatDuration(child.backoff);
    child.next_start = now + child.backoff;
    child.backoff = std::min(child.backoff * 2, options_.max_backoff);
  } else {
    OMPQ_LOG(INFO) << "worker " << WorkerId(index) << " " << DescribeExit(status);
  }
  child.pid = 0;
  absl::MutexLock lock(&mu_);
  --running_;
}

void WorkerSupervisor::StopChildren() {
  for (const Child& child : children_) {
    if (child.pid > 0) {
      ::kill(child.pid, SIGTERM);
    }
  }
  const absl::Time kill_at = absl::Now() + options_.stop_grace;
  while (true) {
    bool any_alive = false;
    for (size_t i = 0; i < children_.size(); ++i) {
      if (children_[i].pid > 0) {
        Reap(static_cast<int>(i), children_[i], /*stopping=*/true);
      }
      any_alive = any_alive || children_[i].pid > 0;
    }
    if (!any_alive) {
      return;
    }
    if (absl::Now() >= kill_at) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  for (size_t i = 0; i < children_.size(); ++i) {
    Child& child = children_[i];
    if (child.pid <= 0) {
      continue;
    }
    OMPQ_LOG(WARNING) << "worker " << WorkerId(static_cast<int>(i))
                      << " ignored SIGTERM; killing it";
    ::kill(child.pid, SIGKILL);
    int status = 0;
    ::waitpid(child.pid, &status, 0);
    child.pid = 0;
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

}  // namespace ompq
