// ompq-server: the gRPC front end. Flags live here only; they are copied into
// ServerOptions and the Server library does the rest.
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/command_line.h"
#include "common/logging.h"
#include "common/units.h"
#include "server/server.h"
#include "server/server_options.h"

namespace {

const ompq::ServerOptions kDefaults;

}  // namespace

ABSL_FLAG(std::string, listen, kDefaults.listen,
          "gRPC address, host:port; port 0 picks a free port");
ABSL_FLAG(std::string, port_file, "", "write the bound gRPC port to this file once serving");
ABSL_FLAG(std::string, metrics_listen, kDefaults.metrics_listen,
          "Prometheus /metrics address, host:port; empty turns metrics off");
ABSL_FLAG(std::string, data_dir, kDefaults.data_dir, "directory for the server's state");
ABSL_FLAG(std::string, database, "",
          "job store URL: sqlite://PATH (default sqlite://DATA_DIR/jobs.db), or "
          "postgresql://USER[:PASSWORD]@HOST:PORT/DB for several server replicas");
ABSL_FLAG(std::string, blob_dir, "", "blob directory (default DATA_DIR/blobs)");
ABSL_FLAG(int, workers, kDefaults.workers,
          "local worker processes started and supervised by the server; 0: remote only");
ABSL_FLAG(std::string, worker_binary, "",
          "ompq-worker executable for local workers (default: beside ompq-server)");
ABSL_FLAG(std::string, worker_memory_limit, "0",
          "address-space limit of each local worker process (its --memory-limit), e.g. 8GiB; "
          "0: none");
ABSL_FLAG(absl::Duration, worker_job_time_limit, absl::ZeroDuration(),
          "run-time limit of one job on a local worker (its --job-time-limit), e.g. 30m; 0: none");
ABSL_FLAG(absl::Duration, lease_timeout, kDefaults.lease_timeout,
          "a job's lease lapses this long after its worker's last heartbeat");
ABSL_FLAG(int, max_attempts, kDefaults.max_attempts,
          "starts of a job before a lost worker fails it with WORKER_LOST");
ABSL_FLAG(std::string, max_blob_bytes, "2GiB", "largest upload accepted, e.g. 2GiB or 500MB");
ABSL_FLAG(int64_t, max_queued_jobs, kDefaults.max_queued_jobs,
          "CreateJob answers RESOURCE_EXHAUSTED while this many jobs are queued");
ABSL_FLAG(absl::Duration, default_job_timeout, kDefaults.default_job_timeout,
          "run-time limit of one attempt of a job whose spec sets no timeout");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (with --tls-key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, client_ca, "",
          "PEM CA: require client certificates signed by it (mutual TLS; needs --tls-cert)");
ABSL_FLAG(std::string, auth_tokens, "",
          "tokens file, one \"TOKEN TENANT client|worker\" per line; empty: no tokens needed "
          "(one implicit tenant)");
ABSL_FLAG(bool, insecure, false, "allow plaintext on a non-loopback --listen address");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "on SIGTERM/SIGINT, how long in-flight RPCs get to finish");

int main(int argc, char** argv) {
  // SIGTERM/SIGINT are blocked in every thread (threads inherit the mask, so this comes
  // before anything starts one) and taken with sigwait() at the end: draining runs as
  // ordinary code, not in a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Debian's abseil checks every absl::Mutex acquisition for lock-order cycles (a debug
  // aid, ~2% of the server's CPU per GetJob in perf); the tests run with it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  absl::SetProgramUsageMessage(
      "mixed-precision quantization service.\n"
      "With no flags: gRPC on 127.0.0.1:50051, metrics on 127.0.0.1:9464/metrics, state in\n"
      "./ompq-data, one local worker.\n"
      "Flags are listed below with '_'; type them with '-' as documented (--data-dir,\n"
      "--port-file) or with '_' (--data_dir): both work.");
  ompq::ParseDashedCommandLine(argc, argv, "server/main.cc");

  ompq::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.port_file = absl::GetFlag(FLAGS_port_file);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.database = absl::GetFlag(FLAGS_database);
  options.blob_dir = absl::GetFlag(FLAGS_blob_dir);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.worker_binary = absl::GetFlag(FLAGS_worker_binary);
  const std::string worker_memory_limit = absl::GetFlag(FLAGS_worker_memory_limit);
  if (worker_memory_limit != "0" && !worker_memory_limit.empty()) {
    absl::StatusOr<int64_t> bytes = ompq::ParseSize(worker_memory_limit);
    if (!bytes.ok()) {
      std::fprintf(stderr, "ompq-server: --worker-memory-limit: %s\n",
                   std::string(bytes.status().message()).c_str());
      return 2;
    }
    options.worker_memory_limit_bytes = *bytes;
  }
  options.worker_job_time_limit = absl::GetFlag(FLAGS_worker_job_time_limit);
  if (options.worker_job_time_limit < absl::ZeroDuration()) {
    std::fprintf(stderr, "ompq-server: --worker-job-time-limit must not be negative\n");
    return 2;
  }
  options.lease_timeout = absl::GetFlag(FLAGS_lease_timeout);
  options.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  absl::StatusOr<int64_t> max_blob_bytes = ompq::ParseSize(absl::GetFlag(FLAGS_max_blob_bytes));
  if (!max_blob_bytes.ok()) {
    std::fprintf(stderr, "ompq-server: --max-blob-bytes: %s\n",
                 std::string(max_blob_bytes.status().message()).c_str());
    return 2;
  }
  options.max_blob_bytes = *max_blob_bytes;
  options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  options.default_job_timeout = absl::GetFlag(FLAGS_default_job_timeout);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.client_ca = absl::GetFlag(FLAGS_client_ca);
  options.auth_tokens = absl::GetFlag(FLAGS_auth_tokens);
  options.insecure = absl::GetFlag(FLAGS_insecure);

  auto server = ompq::Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "ompq-server: %s\n", std::string(server.status().message()).c_str());
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  OMPQ_LOG(INFO) << "received " << (signal_number == SIGINT ? "SIGINT" : "SIGTERM") << "; draining";
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  return 0;
}
