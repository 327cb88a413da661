// GrpcMetricsInterceptorFactory: the one place gRPC server metrics are recorded. A server
// interceptor sees every RPC of every service (unary and streaming, callback API
// included) and, when its status is sent, counts grpc_server_handled_total{grpc_method,
// grpc_code} and observes grpc_server_handling_seconds{grpc_method} on the families owned
// by Metrics. grpc_method is the full method name, e.g. /ompq.v1.QuantizationService/GetJob.
//
//   builder.experimental().SetInterceptorCreators(MakeGrpcMetricsInterceptors(&metrics));
#ifndef OMPQ_SERVER_GRPC_METRICS_INTERCEPTOR_H_
#define OMPQ_SERVER_GRPC_METRICS_INTERCEPTOR_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <vector>

#include "server/metrics.h"

namespace ompq {

/// Creates one metrics interceptor per RPC.
class GrpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  /// `metrics` must outlive the server.
  explicit GrpcMetricsInterceptorFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  Metrics* const metrics_;
};

/// The interceptor list for ServerBuilder::experimental().SetInterceptorCreators().
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeGrpcMetricsInterceptors(Metrics* metrics);

/// The canonical name of a gRPC status code ("OK", "NOT_FOUND", ...), as the
/// grpc_code label spells it.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace ompq

#endif  // OMPQ_SERVER_GRPC_METRICS_INTERCEPTOR_H_
