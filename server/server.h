// Server: ompq-server as a library. Owns the job and blob stores, the state machine, the
// three gRPC services (plus health and reflection), /metrics, the housekeeping thread and
// the local worker processes.
//
//   auto server = Server::Start(options);   // serving once this returns
//   server.value()->port();                 // the bound port (for --listen ...:0)
//   server.value()->Shutdown(deadline);     // drain: NOT_SERVING, stop workers, finish RPCs
#ifndef OMPQ_SERVER_SERVER_H_
#define OMPQ_SERVER_SERVER_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/server_options.h"

namespace ompq {

class Metrics;
class JobManager;

/// A running ompq-server.
class Server {
 public:
  /// Opens the stores, binds the ports, starts the workers and returns a serving server.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options);
  /// Shuts down (with a short grace period) if Shutdown() was not called.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// The bound gRPC port.
  int port() const;
  /// The bound /metrics port, or 0 when metrics are off.
  int metrics_port() const;
  /// Drains: health NOT_SERVING, no more leases, local workers stopped and their jobs
  /// requeued, open watches ended, then in-flight RPCs get until `grace` to finish.
  /// Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(10));

  /// LeaseJob calls parked waiting for a job.
  int64_t idle_workers() const;
  /// The metrics (tests read them).
  Metrics& metrics();
  /// The state machine (tests drive housekeeping through it).
  JobManager& job_manager();

 private:
  struct State;
  explicit Server(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_SERVER_H_
