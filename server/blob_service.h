// BlobService: gRPC front of the BlobStore (FindMissingBlobs, streaming Write and Read).
// File I/O runs on a ThreadPool, never inside a gRPC reaction.
#ifndef OMPQ_SERVER_BLOB_SERVICE_H_
#define OMPQ_SERVER_BLOB_SERVICE_H_

#include <cstdint>

#include "ompq/v1/blob_service.grpc.pb.h"
#include "server/auth.h"
#include "server/blob_store.h"
#include "server/metrics.h"
#include "server/thread_pool.h"

namespace ompq {

/// The BlobService implementation. Write is a raw method: the uploaded bytes are written
/// from gRPC's receive buffers, not parsed into a WriteBlobRequest (write_blob_chunk.h).
class BlobServiceImpl final
    : public v1::BlobService::WithRawCallbackMethod_Write<v1::BlobService::CallbackService> {
 public:
  /// Pointers must outlive the service. Uploads declaring more than `max_blob_bytes` are
  /// refused with RESOURCE_EXHAUSTED.
  BlobServiceImpl(BlobStore* store, Metrics* metrics, ThreadPool* io, int64_t max_blob_bytes,
                  const Authenticator* auth);

  grpc::ServerUnaryReactor* FindMissingBlobs(grpc::CallbackServerContext* context,
                                             const v1::FindMissingBlobsRequest* request,
                                             v1::FindMissingBlobsResponse* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* Write(grpc::CallbackServerContext* context,
                                                   grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<v1::ReadBlobResponse>* Read(grpc::CallbackServerContext* context,
                                                       const v1::ReadBlobRequest* request) override;

 private:
  BlobStore* const store_;
  Metrics* const metrics_;
  ThreadPool* const io_;
  const int64_t max_blob_bytes_;
  const Authenticator* const auth_;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_BLOB_SERVICE_H_
