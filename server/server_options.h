// ServerOptions: everything ompq-server can be told. main.cc copies its flags here; the
// library never reads flags. Defaults are the embedded, no-flags setup of PRODUCT.md.
#ifndef OMPQ_SERVER_SERVER_OPTIONS_H_
#define OMPQ_SERVER_SERVER_OPTIONS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "server/clock.h"

namespace ompq {

/// Configuration of one Server.
struct ServerOptions {
  std::string listen = "127.0.0.1:50051";         // gRPC address; port 0 picks a free one.
  std::string port_file;                          // If set, the bound port is written here.
  std::string metrics_listen = "127.0.0.1:9464";  // Prometheus /metrics; empty: none.
  std::string data_dir = "./ompq-data";           // State directory.
  std::string database;       // Job store URL; empty: sqlite://DATA_DIR/jobs.db.
  std::string blob_dir;       // Blob directory; empty: DATA_DIR/blobs.
  int workers = 1;            // Local worker processes; 0: remote only.
  std::string worker_binary;  // Empty: ompq-worker beside this executable.
  absl::Duration lease_timeout = absl::Seconds(60);         // Lease lapses without a heartbeat.
  int max_attempts = 3;                                     // Starts before WORKER_LOST.
  int64_t max_blob_bytes = int64_t{2} << 30;                // Largest upload accepted (2 GiB).
  int64_t max_queued_jobs = 10000;                          // CreateJob refuses beyond this.
  absl::Duration default_job_timeout = absl::Hours(24);     // Run limit when a spec sets none.
  absl::Duration max_lease_wait = absl::Seconds(30);        // Cap on a LeaseJob long poll.
  absl::Duration housekeeping_interval = absl::Seconds(1);  // Lease expiry and gauge refresh.
  absl::Duration worker_stop_grace = absl::Seconds(10);     // SIGTERM..SIGKILL for children.
  int64_t worker_memory_limit_bytes = 0;  // Local children's --memory-limit; 0: none.
  absl::Duration worker_job_time_limit = absl::ZeroDuration();  // Their --job-time-limit; 0: none.
  // ---- Security ----
  std::string tls_cert;     // PEM certificate chain: serve TLS (with tls_key).
  std::string tls_key;      // PEM private key of tls_cert.
  std::string client_ca;    // PEM CA: require client certificates signed by it (mutual TLS).
  std::string auth_tokens;  // Tokens file (auth.h); empty: open, one implicit tenant.
  bool insecure = false;    // Allow plaintext on a non-loopback address.
  std::shared_ptr<const Clock> clock;  // Time of job logic; null: the wall clock (tests fake it).
};

}  // namespace ompq

#endif  // OMPQ_SERVER_SERVER_OPTIONS_H_
