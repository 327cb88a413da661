// A small client for ompq-server: jobs (QuantizationService) and blobs (BlobService).
// Every call carries a deadline and the bearer token; errors come back as absl::Status
// with the server's code and message.
#ifndef OMPQ_CLIENT_CLIENT_H_
#define OMPQ_CLIENT_CLIENT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "health.grpc.pb.h"
#include "ompq/v1/blob_service.grpc.pb.h"
#include "ompq/v1/quantization_service.grpc.pb.h"
#include "rpc/blob_transfer.h"
#include "rpc/channel.h"

namespace ompq::client {

/// How to reach the server and how long calls may take.
struct ClientOptions {
  rpc::ConnectionOptions connection;
  absl::Duration rpc_timeout = absl::Seconds(30);  // Deadline of every unary call.
  rpc::TransferLimits transfer;                    // Deadlines of uploads and downloads.
};

/// How a Watch() ended without an error.
enum class WatchEnd {
  kTerminal,  // The job reached SUCCEEDED, FAILED or CANCELLED.
  kTimedOut,  // WatchOptions::deadline passed first.
  kStopped,   // WatchOptions::stop was set, or the callback returned false.
};

/// Bounds of a Watch().
struct WatchOptions {
  absl::Time deadline = absl::InfiniteFuture();         // Give up (kTimedOut) at this time.
  const std::atomic<bool>* stop = nullptr;              // Checked often; set from e.g. SIGINT.
  absl::Duration stream_lifetime = absl::Minutes(5);    // Each stream's own deadline.
  absl::Duration reconnect_window = absl::Seconds(60);  // How long to retry a lost server.
};

/// Client over one channel; thread-compatible (one caller at a time per method call).
class Client {
 public:
  /// Opens a channel as `options.connection` says (no RPC is made yet).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options);

  /// Uses an existing channel (e.g. an in-process one in tests).
  Client(const std::shared_ptr<grpc::ChannelInterface>& channel, ClientOptions options);

  const ClientOptions& options() const { return options_; }

  /// Uploads a local file unless the server already has it (see rpc/blob_transfer.h).
  absl::StatusOr<rpc::UploadResult> UploadFile(const std::string& path);
  /// Downloads blob `digest` to `path`; `size_hint` in bytes or -1.
  absl::Status Download(const std::string& digest, int64_t size_hint, const std::string& path);

  absl::StatusOr<v1::Job> CreateJob(const v1::JobSpec& spec, const std::string& request_id);
  absl::StatusOr<v1::Job> GetJob(const std::string& name);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> CancelJob(const std::string& name);

  /// Asks grpc.health.v1.Health/Check for `service` ("" is the whole server) within
  /// `timeout`. The status it answers (SERVING, NOT_SERVING while draining, ...), or the
  /// call's error (UNAVAILABLE when unreachable, DEADLINE_EXCEEDED, UNAUTHENTICATED, ...).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
      const std::string& service, absl::Duration timeout);

  /// Streams job `name` to `on_update` (current state first, then every change) until it
  /// is terminal, the deadline passes, or a stop is requested; `on_update` returning
  /// false stops too. Reconnects when an established stream is lost (UNAVAILABLE) or
  /// reaches its own lifetime. Errors: the server's (NOT_FOUND, UNAVAILABLE when it
  /// cannot be reached at all or stays away past the reconnect window, ...).
  absl::StatusOr<WatchEnd> Watch(const std::string& name, const WatchOptions& options,
                                 const std::function<bool(const v1::Job&)>& on_update);

 private:
  ClientOptions options_;
  std::unique_ptr<v1::QuantizationService::StubInterface> jobs_;
  std::unique_ptr<v1::BlobService::StubInterface> blobs_;
  std::unique_ptr<grpc::health::v1::Health::StubInterface> health_;
};

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_CLIENT_H_
