#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <prometheus/exposer.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "server/auth.h"
#include "server/blob_service.h"
#include "server/blob_store.h"
#include "server/grpc_metrics_interceptor.h"
#include "server/job_manager.h"
#include "server/job_store.h"
#include "server/job_store_factory.h"
#include "server/lease_dispatcher.h"
#include "server/metrics.h"
#include "server/quantization_service.h"
#include "server/thread_pool.h"
#include "server/worker_service.h"
#include "server/worker_supervisor.h"

namespace ompq {
namespace {

namespace fs = std::filesystem;

// Uploads send chunks of at most 4 MiB; leave room for the envelope.
constexpr int kMaxReceiveMessageBytes = 8 << 20;
// Threads doing blob file I/O (one upload or download occupies one only while it touches
// the disk).
constexpr int kIoThreads = 4;

bool IsLoopbackListen(const std::string& listen);

absl::Status CheckOptions(const ServerOptions& options) {
  if (options.workers < 0) {
    return absl::InvalidArgumentError("--workers must be >= 0");
  }
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError("--max-attempts must be >= 1");
  }
  if (options.lease_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--lease-timeout must be positive, e.g. 60s");
  }
  if (options.default_job_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--default-job-timeout must be positive, e.g. 24h");
  }
  if (options.max_blob_bytes <= 0) {
    return absl::InvalidArgumentError("--max-blob-bytes must be positive, e.g. 2GiB");
  }
  if (options.max_queued_jobs <= 0) {
    return absl::InvalidArgumentError("--max-queued-jobs must be positive");
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: pass both or neither");
  }
  if (!options.client_ca.empty() && options.tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "--client-ca (mutual TLS) needs TLS: pass --tls-cert and --tls-key too");
  }
  if (options.tls_cert.empty() && !options.insecure && !IsLoopbackListen(options.listen)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to serve plaintext on --listen ", options.listen,
        ", which is not a loopback address: pass --tls-cert and --tls-key to serve TLS, "
        "--insecure to serve plaintext anyway, or listen on 127.0.0.1"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", flag, " '", path, "'"));
  }
  return text.str();
}

// TLS (mutual when --client-ca is given) or plaintext credentials for --listen.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(
    const ServerOptions& options) {
  if (options.tls_cert.empty()) {
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPemFile(options.tls_cert, "--tls-cert"));
  ASSIGN_OR_RETURN(pair.private_key, ReadPemFile(options.tls_key, "--tls-key"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.client_ca.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(options.client_ca, "--client-ca"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// ompq-worker beside this executable, or the one given.
absl::StatusOr<std::string> FindWorkerBinary(const std::string& given) {
  std::string path = given;
  if (path.empty()) {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) {
      return absl::FailedPreconditionError("cannot find this executable's directory");
    }
    path = (self.parent_path() / "ompq-worker").string();
  }
  if (::access(path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker binary '", path,
                     "' is missing or not executable: build ompq-worker, pass "
                     "--worker-binary PATH, or run with --workers 0"));
  }
  return path;
}

// True for 127.0.0.0/8, ::1 and localhost: only this machine can connect.
bool IsLoopbackListen(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  return absl::StartsWith(host, "127.") || host == "::1" || host == "localhost";
}

// Where local workers reach this server: loopback unless bound to a specific address.
std::string LocalAddress(const std::string& listen, int port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "*") {
    host = "127.0.0.1";
  }
  return absl::StrCat(host, ":", port);
}

// Written to a temporary name and renamed, so a reader never sees half a number.
absl::Status WritePortFile(const std::string& path, int port) {
  const std::string temp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(temp, std::ios::trunc);
    out << port << "\n";
    if (!out.flush()) {
      return absl::UnavailableError(absl::StrCat("cannot write --port-file '", path, "'"));
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot write --port-file '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

// Members are destroyed bottom-up: the gRPC server goes first, the stores last.
struct Server::State {
  ServerOptions options;
  std::shared_ptr<const Clock> clock;
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<JobStore> store;
  std::unique_ptr<BlobStore> blobs;
  std::unique_ptr<JobManager> manager;
  std::unique_ptr<LeaseDispatcher> dispatcher;
  std::unique_ptr<ThreadPool> io;
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<QuantizationServiceImpl> quantization_service;
  std::unique_ptr<BlobServiceImpl> blob_service;
  std::unique_ptr<WorkerServiceImpl> worker_service;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<prometheus::Exposer> exposer;
  std::unique_ptr<WorkerSupervisor> supervisor;
  int port = 0;
  int local_worker_port = 0;  // Plaintext loopback port of the children when TLS is on.
  int metrics_port = 0;

  absl::Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
  bool stop_housekeeping ABSL_GUARDED_BY(mu) = false;
  std::thread housekeeping;

  // Lease expiry, timeouts and gauges, once per interval until shutdown.
  void Housekeep() {
    while (true) {
      absl::StatusOr<int> reaped = manager->ReapOverdueJobs();
      if (!reaped.ok()) {
        OMPQ_LOG(WARNING) << "lease expiry: " << reaped.status().ToString();
      }
      absl::Status refreshed = manager->RefreshMetrics(dispatcher->waiting());
      if (!refreshed.ok()) {
        OMPQ_LOG(WARNING) << "metrics: " << refreshed.ToString();
      }
      metrics->SetBlobStoreBytes(blobs->TotalBytes());
      absl::MutexLock lock(&mu);
      if (mu.AwaitWithTimeout(absl::Condition(&stop_housekeeping), options.housekeeping_interval)) {
        return;
      }
    }
  }
};

Server::Server(std::unique_ptr<State> state) : state_(std::move(state)) {}

Server::~Server() { Shutdown(absl::Seconds(2)); }

int Server::port() const { return state_->port; }
int Server::metrics_port() const { return state_->metrics_port; }
int64_t Server::idle_workers() const { return state_->dispatcher->waiting(); }
Metrics& Server::metrics() { return *state_->metrics; }
JobManager& Server::job_manager() { return *state_->manager; }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options) {
  RETURN_IF_ERROR(CheckOptions(options));
  auto state = std::make_unique<State>();
  state->clock = options.clock != nullptr ? options.clock : std::make_shared<RealClock>();
  std::error_code ec;
  fs::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create --data-dir '", options.data_dir, "': ", ec.message()));
  }
  if (options.database.empty()) {
    options.database = absl::StrCat("sqlite://", options.data_dir, "/jobs.db");
  }
  if (options.blob_dir.empty()) {
    options.blob_dir = absl::StrCat(options.data_dir, "/blobs");
  }
  state->options = options;
  std::string worker_binary;
  if (options.workers > 0) {
    ASSIGN_OR_RETURN(worker_binary, FindWorkerBinary(options.worker_binary));
  }

  // ---- Security: credentials, tokens, and the children's own token ----
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, MakeCredentials(options));
  std::vector<TokenEntry> tokens;
  if (!options.auth_tokens.empty()) {
    ASSIGN_OR_RETURN(tokens, LoadTokensFile(options.auth_tokens));
  }
  // Local workers get a fresh secret each start, held only in memory and in their
  // environment; it works on every port and only for WorkerService and blobs.
  const std::string worker_token = options.workers > 0 ? NewInternalToken() : std::string();
  const bool tls = !options.tls_cert.empty();
  state->auth = std::make_unique<Authenticator>(!options.auth_tokens.empty(), std::move(tokens),
                                                worker_token, tls);

  state->metrics = std::make_unique<Metrics>();
  ASSIGN_OR_RETURN(state->store, OpenJobStore(options.database));
  ASSIGN_OR_RETURN(state->blobs, BlobStore::Open(options.blob_dir));
  JobManagerOptions manager_options;
  manager_options.lease_timeout = options.lease_timeout;
  manager_options.max_attempts = options.max_attempts;
  manager_options.max_queued_jobs = options.max_queued_jobs;
  manager_options.default_job_timeout = options.default_job_timeout;
  manager_options.per_tenant_blobs = state->auth->enabled();
  state->manager =
      std::make_unique<JobManager>(state->store.get(), state->blobs.get(), state->metrics.get(),
                                   state->clock.get(), manager_options);
  state->dispatcher = std::make_unique<LeaseDispatcher>(state->manager.get());
  LeaseDispatcher* dispatcher = state->dispatcher.get();
  state->manager->notifier().AddQueuedListener([dispatcher] { dispatcher->Wake(); });
  state->io = std::make_unique<ThreadPool>(kIoThreads);
  state->quantization_service = std::make_unique<QuantizationServiceImpl>(state->manager.get(),
                                                                        state->auth.get());
  state->blob_service = std::make_unique<BlobServiceImpl>(state->blobs.get(), state->metrics.get(),
                                                          state->io.get(), options.max_blob_bytes,
                                                          state->auth.get());
  state->worker_service = std::make_unique<WorkerServiceImpl>(
      state->manager.get(), state->dispatcher.get(), options.max_lease_wait, state->auth.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &state->port);
  if (tls && options.workers > 0) {
    // The children connect here: plaintext, loopback only, and only their own token is
    // accepted (Authenticator). This keeps them independent of the certificate's names.
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &state->local_worker_port);
  }
  builder.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  builder.RegisterService(state->quantization_service.get());
  builder.RegisterService(state->blob_service.get());
  builder.RegisterService(state->worker_service.get());
  builder.experimental().SetInterceptorCreators(MakeGrpcMetricsInterceptors(state->metrics.get()));
  state->grpc_server = builder.BuildAndStart();
  if (state->grpc_server == nullptr || state->port == 0 ||
      (tls && options.workers > 0 && state->local_worker_port == 0)) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on --listen ", options.listen,
        ": the address is in use or invalid; pick another, or port 0 for any free port"));
  }
  state->grpc_server->GetHealthCheckService()->SetServingStatus(true);

  if (!options.metrics_listen.empty()) {
    try {
      state->exposer = std::make_unique<prometheus::Exposer>(options.metrics_listen);
      state->exposer->RegisterCollectable(state->metrics->registry());
      const std::vector<int> ports = state->exposer->GetListeningPorts();
      state->metrics_port = ports.empty() ? 0 : ports.front();
    } catch (const std::exception& e) {
      state->grpc_server->Shutdown();
      return absl::UnavailableError(absl::StrCat(
          "cannot serve metrics on --metrics-listen ", options.metrics_listen, ": ", e.what(),
          "; pick another address, or pass --metrics-listen '' to turn metrics off"));
    }
  }

  state->housekeeping = std::thread([s = state.get()] { s->Housekeep(); });
  if (options.workers > 0) {
    WorkerSupervisorOptions supervisor_options;
    supervisor_options.worker_binary = worker_binary;
    supervisor_options.server_address =
        tls ? absl::StrCat("127.0.0.1:", state->local_worker_port)
            : LocalAddress(options.listen, state->port);
    supervisor_options.token = worker_token;
    supervisor_options.work_root = fs::absolute(fs::path(options.data_dir) / "work").string();
    supervisor_options.workers = options.workers;
    supervisor_options.stop_grace = options.worker_stop_grace;
    supervisor_options.memory_limit_bytes = options.worker_memory_limit_bytes;
    supervisor_options.job_time_limit = options.worker_job_time_limit;
    state->supervisor = std::make_unique<WorkerSupervisor>(supervisor_options);
    state->supervisor->Start();
  }
  // With a shared store (PostgreSQL), other replicas' writes are published here too, so
  // this server's watchers and parked long polls hear of them. Stopped in Shutdown().
  state->store->SetChangeListener([manager = state->manager.get(),
                                   dispatcher](const std::string& name) {
    if (name.empty()) {
      dispatcher->Wake();  // Changes may have been missed: look for queued jobs.
      return;
    }
    absl::StatusOr<JobRecord> record = manager->GetJob(name);
    if (record.ok()) {
      manager->notifier().Publish(*record);
    } else if (!absl::IsNotFound(record.status())) {
      OMPQ_LOG(WARNING) << "reading a job another server changed: " << record.status().ToString();
    }
  });
  std::unique_ptr<Server> server(new Server(std::move(state)));
  if (!options.port_file.empty()) {
    absl::Status written = WritePortFile(options.port_file, server->port());
    if (!written.ok()) {
      return written;  // ~Server shuts everything down.
    }
  }
  OMPQ_LOG(INFO) << "ompq-server listening on " << LocalAddress(options.listen, server->port())
                 << (server->metrics_port() > 0
                         ? absl::StrCat(", metrics on port ", server->metrics_port())
                         : std::string())
                 << ", " << options.workers << " local worker(s), data in " << options.data_dir
                 << ", jobs in " << RedactDatabaseUrl(options.database)
                 << (tls ? (options.client_ca.empty() ? ", TLS" : ", mutual TLS") : ", plaintext")
                 << (server->state_->auth->enabled() ? ", tokens required" : ", open (no tokens)");
  return server;
}

void Server::Shutdown(absl::Duration grace) {
  State& s = *state_;
  {
    absl::MutexLock lock(&s.mu);
    if (s.shut_down) {
      return;
    }
    s.shut_down = true;
  }
  OMPQ_LOG(INFO) << "shutting down";
  s.grpc_server->GetHealthCheckService()->SetServingStatus(false);
  s.manager->StopLeasing();
  s.dispatcher->Stop();
  if (s.supervisor != nullptr) {
    // Children may still report their jobs while they stop; what they leave is requeued at
    // once, since nobody holds those leases any more.
    s.supervisor->Stop();
    absl::StatusOr<int> requeued = s.manager->RequeueJobsOfWorkers(s.supervisor->worker_ids());
    if (!requeued.ok()) {
      OMPQ_LOG(WARNING) << "requeueing local workers' jobs: " << requeued.status().ToString();
    } else if (*requeued > 0) {
      OMPQ_LOG(INFO) << "requeued " << *requeued << " job(s) of local workers";
    }
  }
  s.store->SetChangeListener(nullptr);
  s.manager->notifier().Shutdown();
  s.grpc_server->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  {
    absl::MutexLock lock(&s.mu);
    s.stop_housekeeping = true;
  }
  if (s.housekeeping.joinable()) {
    s.housekeeping.join();
  }
  s.exposer.reset();
  OMPQ_LOG(INFO) << "shut down";
}

}  // namespace ompq
