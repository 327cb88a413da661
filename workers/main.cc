// ompq-worker: pulls quantization jobs from ompq-server (WorkerService) and runs them.
// Flags live here only; the loop is in worker.h.
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/units.h"
#include "workers/worker.h"

namespace {
const ompq::worker::WorkerOptions kDefaults;
}  // namespace

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "ompq-server address, host:port");
ABSL_FLAG(std::string, worker_id, "", "Stable worker id (default: <hostname>-<pid>)");
ABSL_FLAG(std::string, work_dir, "", "Folder for job files (default: /tmp/ompq-worker-<pid>)");
ABSL_FLAG(std::string, device, kDefaults.device, "Compute device: auto, cpu, cuda or cuda:N");
ABSL_FLAG(std::string, token, "", "Bearer token of a worker role (default: $OMPQ_TOKEN)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA file: connect with TLS (default plaintext)");
ABSL_FLAG(absl::Duration, shutdown_grace, kDefaults.shutdown_grace,
          "On SIGTERM, time a running job gets to finish before it is given back");
ABSL_FLAG(std::string, memory_limit, "0",
          "Address-space limit of this process (setrlimit RLIMIT_AS), e.g. 8GiB; 0: none. "
          "A job that runs out fails with RESOURCE_EXHAUSTED");
ABSL_FLAG(absl::Duration, job_time_limit, absl::ZeroDuration(),
          "Longest run of one job on this worker, e.g. 30m; 0: none. A job past it fails "
          "with DEADLINE_EXCEEDED (not retried)");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus /metrics on this host:port (port 0 picks one, logged); empty: "
          "off");

// civetweb, the HTTP server behind prometheus-cpp's /metrics, starts its threads with a
// fixed 100 KiB stack (Debian builds it so). glibc refuses a stack that cannot also hold
// the static TLS of every loaded library, and LibTorch + OpenBLAS + glog need more than
// that, so --metrics-listen would fail with "null context when constructing CivetServer".
// Requests for less than 1 MiB are raised to 1 MiB here (the executable's definition
// wins over libc's; CMake exports it); more stack harms no caller.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) noexcept {
  using SetStackSize = int (*)(pthread_attr_t*, size_t);
  static const auto real =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  constexpr size_t kMinStack = size_t{1} << 20;
  return real(attr, std::max(size, kMinStack));
}

namespace {

std::string DefaultWorkerId() {
  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "worker", "-", getpid());
}

// Written to by the signal handler (async-signal-safe), read by the stopper thread.
int stop_pipe[2] = {-1, -1};

void OnStopSignal(int /*signal*/) {
  const char byte = 1;
  // Nothing useful can be done about a failed write inside a handler.
  [[maybe_unused]] ssize_t written = write(stop_pipe[1], &byte, 1);
}

bool IsValidDevice(const std::string& device) {
  return device == "auto" || device == "cpu" || device == "cuda" ||
         absl::StartsWith(device, "cuda:");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "runs ompq quantization jobs for an ompq-server.\n"
      "Flags are listed below with '_'; type them with '-' as documented (--work-dir,\n"
      "--metrics-listen) or with '_' (--work_dir): both work.");
  ompq::ParseDashedCommandLine(argc, argv, "workers/main.cc");

  ompq::worker::WorkerOptions options;
  options.connection.server = absl::GetFlag(FLAGS_server);
  options.connection.token = absl::GetFlag(FLAGS_token);
  if (options.connection.token.empty() && std::getenv("OMPQ_TOKEN") != nullptr) {
    options.connection.token = std::getenv("OMPQ_TOKEN");
  }
  options.connection.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (options.worker_id.empty()) options.worker_id = DefaultWorkerId();
  options.work_dir = absl::GetFlag(FLAGS_work_dir);
  if (options.work_dir.empty()) options.work_dir = absl::StrCat("/tmp/ompq-worker-", getpid());
  options.device = absl::GetFlag(FLAGS_device);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  const std::string memory_limit = absl::GetFlag(FLAGS_memory_limit);
  if (memory_limit != "0" && !memory_limit.empty()) {
    absl::StatusOr<int64_t> bytes = ompq::ParseSize(memory_limit);
    if (!bytes.ok()) {
      std::cerr << "ompq-worker: --memory-limit: " << bytes.status().message() << std::endl;
      return 2;
    }
    options.memory_limit_bytes = *bytes;
  }
  options.job_time_limit = absl::GetFlag(FLAGS_job_time_limit);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (options.job_time_limit < absl::ZeroDuration()) {
    std::cerr << "ompq-worker: --job-time-limit must not be negative" << std::endl;
    return 2;
  }
  if (!IsValidDevice(options.device)) {
    std::cerr << "ompq-worker: --device '" << options.device
              << "' is not one of auto, cpu, cuda, cuda:N" << std::endl;
    return 2;
  }

  if (options.memory_limit_bytes > 0) {
    // The whole process's address space: an allocation past it fails (std::bad_alloc,
    // or LibTorch's allocator error) and the job fails with RESOURCE_EXHAUSTED instead
    // of the host's OOM killer taking the worker or its neighbours.
    struct rlimit limit = {};
    limit.rlim_cur = static_cast<rlim_t>(options.memory_limit_bytes);
    limit.rlim_max = static_cast<rlim_t>(options.memory_limit_bytes);
    if (setrlimit(RLIMIT_AS, &limit) != 0) {
      std::cerr << "ompq-worker: cannot apply --memory-limit " << memory_limit << ": "
                << std::strerror(errno) << std::endl;
      return 2;
    }
  }

  auto worker = ompq::worker::Worker::Create(options);
  if (!worker.ok()) {
    std::cerr << "ompq-worker: " << worker.status().message() << std::endl;
    return 2;
  }
  // SIGTERM/SIGINT: finish (or give back) the current job and exit 0. A handler and a
  // pipe rather than sigwait(): libraries start threads before main() (LibTorch does), so
  // a signal mask set here would not cover every thread.
  if (pipe(stop_pipe) != 0) {
    std::cerr << "ompq-worker: cannot create the signal pipe" << std::endl;
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  std::thread([w = worker->get()] {
    char byte = 0;
    while (read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    w->Stop();
  }).detach();

  absl::Status status = (*worker)->Run();
  // Job folders are removed after each job; drop the then-empty work folders too
  // (remove() leaves anything non-empty alone).
  std::error_code ignored;
  std::filesystem::remove(std::filesystem::path(options.work_dir) / "jobs", ignored);
  std::filesystem::remove(options.work_dir, ignored);
  if (!status.ok()) {
    std::cerr << "ompq-worker: " << status.message() << std::endl;
    return 1;
  }
  return 0;
}
