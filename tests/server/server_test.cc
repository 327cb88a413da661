// The real Server on a free loopback port, driven through real gRPC stubs: blobs, job
// validation, listing, watching, the worker protocol, health and drain. --workers 0: the
// test itself plays the worker through WorkerService.
#include "server/server.h"

#include <arpa/inet.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/digest.h"
#include "ompq/v1/blob_service.grpc.pb.h"
#include "ompq/v1/quantization_service.grpc.pb.h"
#include "ompq/v1/worker_service.grpc.pb.h"
#include "server/job_manager.h"
#include "server/job_notifier.h"
#include "server/metrics.h"
#include "tests/server/postgres_test_util.h"
#include "tests/server/test_util.h"

namespace ompq {
namespace {

using ::ompq::testing::FakeClock;
using ::ompq::testing::FilesUnder;
using ::ompq::testing::MetricValue;
using ::ompq::testing::PostgresTestSchema;
using ::ompq::testing::TempDir;

constexpr int64_t kMaxBlobBytes = 4 << 20;  // Room for a blob of several 1 MiB download chunks.

// For the few things only observable from outside as they happen (a parked long poll, a
// departed watcher): poll with a generous bound; never a fixed sleep.
bool WaitFor(const std::function<bool()>& condition) {
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (!condition()) {
    if (absl::Now() > give_up) {
      return false;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// A deadline for every call, as clients must.
void SetDeadline(grpc::ClientContext& context, absl::Duration timeout = absl::Seconds(20)) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(Options()); }

  ServerOptions Options() {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.data_dir = dir_.path();
    options.workers = 0;
    options.max_blob_bytes = kMaxBlobBytes;
    options.lease_timeout = absl::Seconds(60);
    options.clock = clock_;
    return options;
  }

  void StartServer(ServerOptions options) {
    auto server = Server::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    jobs_ = v1::QuantizationService::NewStub(channel_);
    blobs_ = v1::BlobService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }

  // Uploads `data` in chunks of `chunk` bytes under `digest` (default: its own).
  grpc::Status Upload(const std::string& data, std::string digest = "", int64_t declared_size = -1,
                      size_t chunk = 7, v1::WriteBlobResponse* response_out = nullptr,
                      v1::BlobService::Stub* stub = nullptr) {
    if (digest.empty()) {
      digest = DigestOf(data);
    }
    grpc::ClientContext context;
    SetDeadline(context);
    v1::WriteBlobResponse response;
    auto writer = (stub != nullptr ? stub : blobs_.get())->Write(&context, &response);
    v1::WriteBlobRequest first;
    first.set_digest(digest);
    first.set_size_bytes(declared_size >= 0 ? declared_size : static_cast<int64_t>(data.size()));
    bool open = writer->Write(first);
    for (size_t at = 0; open && at < data.size(); at += chunk) {
      v1::WriteBlobRequest next;
      next.set_data(data.substr(at, chunk));
      open = writer->Write(next);
    }
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (response_out != nullptr) {
      *response_out = response;
    }
    return status;
  }

  absl::StatusOr<std::string> Download(const std::string& digest) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::ReadBlobRequest request;
    request.set_digest(digest);
    auto reader = blobs_->Read(&context, request);
    std::string data;
    v1::ReadBlobResponse chunk;
    while (reader->Read(&chunk)) {
      data += chunk.data();
    }
    grpc::Status status = reader->Finish();
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return data;
  }

  std::vector<std::string> Missing(const std::vector<std::string>& digests) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::FindMissingBlobsRequest request;
    for (const auto& d : digests) {
      request.add_digests(d);
    }
    v1::FindMissingBlobsResponse response;
    grpc::Status status = blobs_->FindMissingBlobs(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.missing_digests().begin(), response.missing_digests().end()};
  }

  v1::CreateJobRequest ValidRequest() {
    if (model_.empty()) {
      EXPECT_TRUE(Upload("torchscript archive bytes").ok());
      EXPECT_TRUE(Upload("calibration tensor bytes").ok());
      model_ = DigestOf("torchscript archive bytes");
      calib_ = DigestOf("calibration tensor bytes");
    }
    v1::CreateJobRequest request;
    request.mutable_spec()->set_model_digest(model_);
    request.mutable_spec()->set_calib_digest(calib_);
    request.mutable_spec()->set_size_budget_bytes(1500000);
    request.mutable_spec()->set_finetune(v1::NONE);
    return request;
  }

  grpc::Status CreateJob(const v1::CreateJobRequest& request, v1::Job* job) {
    grpc::ClientContext context;
    SetDeadline(context);
    return jobs_->CreateJob(&context, request, job);
  }

  v1::Job MustCreate(v1::CreateJobRequest request) {
    v1::Job job;
    grpc::Status status = CreateJob(request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  grpc::Status GetJob(const std::string& name, v1::Job* job) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::GetJobRequest request;
    request.set_name(name);
    return jobs_->GetJob(&context, request, job);
  }

  v1::LeaseJobResponse Lease(absl::Duration wait = absl::Seconds(5)) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::LeaseJobRequest request;
    request.set_worker_id("test-worker");
    request.set_device("cpu");
    request.mutable_wait()->set_seconds(absl::ToInt64Seconds(wait));
    request.mutable_wait()->set_nanos(
        static_cast<int32_t>(absl::ToInt64Nanoseconds(wait % absl::Seconds(1))));
    v1::LeaseJobResponse response;
    grpc::Status status = workers_->LeaseJob(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  grpc::Status Heartbeat(const v1::LeaseJobResponse& lease, v1::Stage stage, double progress,
                         v1::HeartbeatResponse* response) {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::HeartbeatRequest request;
    request.set_lease_id(lease.lease_id());
    request.set_job(lease.job().name());
    request.set_stage(stage);
    request.set_progress(progress);
    return workers_->Heartbeat(&context, request, response);
  }

  grpc::Status Complete(const v1::CompleteJobRequest& request, v1::CompleteJobResponse* out) {
    grpc::ClientContext context;
    SetDeadline(context);
    return workers_->CompleteJob(&context, request, out);
  }

  TempDir dir_;
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::QuantizationService::Stub> jobs_;
  std::unique_ptr<v1::BlobService::Stub> blobs_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  std::string model_;
  std::string calib_;
};

TEST_F(ServerTest, HealthIsServing) {
  grpc::GenericStub stub(channel_);
  grpc::ClientContext context;
  SetDeadline(context);
  grpc::Slice no_bytes(std::string{});  // HealthCheckRequest{service: ""} encodes to none.
  grpc::ByteBuffer request(&no_bytes, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& slice : slices) {
    bytes += std::string(slice.begin(), slice.end());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << "HealthCheckResponse{status: SERVING}";
}

TEST_F(ServerTest, UploadFindAndDownloadBlob) {
  const std::string data(100000, 'q');
  const std::string digest = DigestOf(data);
  EXPECT_EQ(Missing({digest}), std::vector<std::string>{digest});
  v1::WriteBlobResponse response;
  grpc::Status status = Upload(data, "", -1, 32 * 1024, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.digest(), digest);
  EXPECT_EQ(response.size_bytes(), 100000);
  EXPECT_FALSE(response.already_existed());
  EXPECT_TRUE(Missing({digest}).empty());
  auto downloaded = Download(digest);
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_EQ(*downloaded, data);
  // A second upload of the same bytes is recognised and discarded.
  ASSERT_TRUE(Upload(data, "", -1, 32 * 1024, &response).ok());
  EXPECT_TRUE(response.already_existed());
  EXPECT_EQ(MetricValue(*server_->metrics().registry(), "ompq_blob_bytes_written_total"), 100000);
  EXPECT_EQ(MetricValue(*server_->metrics().registry(), "ompq_blob_bytes_read_total"), 100000);
}

// Several MiB in both directions: the upload queues messages while earlier ones are
// stored, the download reads the next MiB while the previous one is sent; bytes and order
// must survive both.
TEST_F(ServerTest, MultiMegabyteBlobRoundTripsInOrder) {
  std::string data(3 * (1 << 20) + 12345, '\0');
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<char>((i * 2654435761u) >> 13);
  }
  ASSERT_TRUE(Upload(data, "", -1, 64 * 1024).ok());
  auto downloaded = Download(DigestOf(data));
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_EQ(downloaded->size(), data.size());
  EXPECT_TRUE(*downloaded == data);
  // Too many bytes, found while later messages are still queued: refused, nothing left.
  const std::string other = data.substr(1);
  EXPECT_EQ(Upload(other, "", 1 << 20, 64 * 1024).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Missing({DigestOf(other)}) == std::vector<std::string>{DigestOf(other)});
}

// The server writes uploads from gRPC's receive buffers (a raw method): a client that
// compresses its messages must be read the same (gRPC inflates them before the service).
TEST_F(ServerTest, CompressedUploadIsStoredAsSent) {
  std::string data(2 * (1 << 20) + 7, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i / 3) % 251);
  grpc::ChannelArguments args;
  args.SetCompressionAlgorithm(GRPC_COMPRESS_GZIP);
  auto stub = v1::BlobService::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials(), args));
  v1::WriteBlobResponse response;
  grpc::Status status = Upload(data, "", -1, 1 << 20, &response, stub.get());
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.already_existed());
  EXPECT_EQ(response.digest(), DigestOf(data));
  auto downloaded = Download(DigestOf(data));
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_TRUE(*downloaded == data);
}

// A client that goes away mid-upload leaves no blob and no temporary file.
TEST_F(ServerTest, CancelledUploadLeavesNothing) {
  const std::string data(2 << 20, 'c');
  grpc::ClientContext context;
  SetDeadline(context);
  v1::WriteBlobResponse response;
  auto writer = blobs_->Write(&context, &response);
  v1::WriteBlobRequest first;
  first.set_digest(DigestOf(data));
  first.set_size_bytes(static_cast<int64_t>(data.size()));
  first.set_data(data.substr(0, 1 << 20));
  ASSERT_TRUE(writer->Write(first));
  context.TryCancel();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The server notices the cancellation on its own threads.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!FilesUnder(dir_.path() + "/blobs").empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(FilesUnder(dir_.path() + "/blobs").empty());
  EXPECT_EQ(Missing({DigestOf(data)}), std::vector<std::string>{DigestOf(data)});
}

TEST_F(ServerTest, UploadWithWrongDigestIsRefusedAndLeavesNothing) {
  const std::string data = "bytes that do not match";
  const std::string claimed = DigestOf("something else");
  grpc::Status status = Upload(data, claimed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), claimed)) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), DigestOf(data))) << status.error_message();
  EXPECT_EQ(Missing({claimed, DigestOf(data)}).size(), 2u);
  EXPECT_TRUE(FilesUnder(dir_.path() + "/blobs").empty());
}

TEST_F(ServerTest, UploadOverTheLimitIsResourceExhausted) {
  const std::string data(kMaxBlobBytes + 1, 'x');
  grpc::Status status = Upload(data, "", -1, 1 << 20);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "--max-blob-bytes"));
  EXPECT_TRUE(FilesUnder(dir_.path() + "/blobs").empty());
}

TEST_F(ServerTest, UploadWithWrongSizeOrBadDigestIsInvalid) {
  EXPECT_EQ(Upload("12345", "", 4).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Upload("12345", "", 6).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::Status bad = Upload("12345", "sha256:nothex");
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(bad.error_message(), "digest"));
  EXPECT_TRUE(FilesUnder(dir_.path() + "/blobs").empty());
}

TEST_F(ServerTest, DownloadOfMissingBlobIsNotFound) {
  EXPECT_EQ(Download(DigestOf("absent")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Download("garbage").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServerTest, CreateJobNamesEachBadField) {
  struct Case {
    std::function<void(v1::CreateJobRequest&)> spoil;
    grpc::StatusCode code;
    std::string mention;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.mutable_spec()->clear_model_digest(); }, grpc::INVALID_ARGUMENT,
       "spec.model_digest"},
      {[](auto& r) { r.mutable_spec()->set_calib_digest("sha256:abc"); }, grpc::INVALID_ARGUMENT,
       "spec.calib_digest"},
      {[](auto& r) { r.mutable_spec()->clear_size_budget_bytes(); }, grpc::INVALID_ARGUMENT,
       "budget"},
      {[](auto& r) { r.mutable_spec()->add_weight_bits(33); }, grpc::INVALID_ARGUMENT,
       "spec.weight_bits"},
      {[](auto& r) { r.mutable_spec()->set_act_bits(99); }, grpc::INVALID_ARGUMENT,
       "spec.act_bits"},
      {[](auto& r) {
         auto* pin = r.mutable_spec()->add_pins();
         pin->set_name_regex("[unclosed");
         pin->set_bits(4);
       },
       grpc::INVALID_ARGUMENT, "spec.pins[0].name_regex"},
      {[](auto& r) { r.mutable_spec()->set_search_samples(1); }, grpc::INVALID_ARGUMENT,
       "spec.search_samples"},
      {[](auto& r) { (*r.mutable_spec()->mutable_labels())["bad key"] = "v"; },
       grpc::INVALID_ARGUMENT, "spec.labels"},
      {[](auto& r) { r.set_request_id(std::string(500, 'r')); }, grpc::INVALID_ARGUMENT,
       "request_id"},
      {[](auto& r) { r.mutable_spec()->set_finetune(v1::QAT); }, grpc::INVALID_ARGUMENT,
       "pass --train FILE"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    v1::CreateJobRequest request = ValidRequest();
    cases[i].spoil(request);
    v1::Job job;
    grpc::Status status = CreateJob(request, &job);
    EXPECT_EQ(status.error_code(), cases[i].code) << "case " << i << ": " << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), cases[i].mention))
        << "case " << i << ": " << status.error_message();
  }
  // Nothing was stored.
  grpc::ClientContext context;
  SetDeadline(context);
  v1::ListJobsResponse list;
  ASSERT_TRUE(jobs_->ListJobs(&context, v1::ListJobsRequest(), &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
}

TEST_F(ServerTest, CreateJobWithMissingBlobNamesTheDigest) {
  v1::CreateJobRequest request = ValidRequest();
  const std::string missing = DigestOf("model never uploaded");
  request.mutable_spec()->set_model_digest(missing);
  v1::Job job;
  grpc::Status status = CreateJob(request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(status.error_message(), missing)) << status.error_message();
}

TEST_F(ServerTest, CreateJobReturnsAtOnceAndIsIdempotent) {
  v1::CreateJobRequest request = ValidRequest();
  request.set_request_id("retry-me");
  (*request.mutable_spec()->mutable_labels())["team"] = "vision";
  v1::Job first = MustCreate(request);
  EXPECT_EQ(first.state(), v1::QUEUED);
  EXPECT_EQ(first.spec().act_bits(), 8);
  EXPECT_EQ(first.spec().labels().at("team"), "vision");
  v1::Job second = MustCreate(request);
  EXPECT_EQ(second.name(), first.name());
  v1::Job got;
  ASSERT_TRUE(GetJob(first.name(), &got).ok());
  EXPECT_EQ(got.name(), first.name());
  EXPECT_EQ(got.request_id(), "retry-me");
}

TEST_F(ServerTest, UnknownJobIsNotFoundAndBadNameIsInvalid) {
  v1::Job job;
  EXPECT_EQ(GetJob("jobs/0000000000000000", &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetJob("not-a-name", &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::CancelJobRequest request;
    request.set_name("jobs/0000000000000000");
    EXPECT_EQ(jobs_->CancelJob(&context, request, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::DeleteJobRequest request;
    request.set_name("jobs/0000000000000000");
    google::protobuf::Empty empty;
    EXPECT_EQ(jobs_->DeleteJob(&context, request, &empty).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::WatchJobRequest request;
    request.set_name("jobs/0000000000000000");
    auto reader = jobs_->WatchJob(&context, request);
    v1::Job update;
    EXPECT_FALSE(reader->Read(&update));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(ServerTest, ListJobsPagesNewestFirstAndFilters) {
  std::vector<std::string> created;
  for (int i = 0; i < 5; ++i) {
    v1::CreateJobRequest request = ValidRequest();
    (*request.mutable_spec()->mutable_labels())["parity"] = i % 2 == 0 ? "even" : "odd";
    created.insert(created.begin(), MustCreate(request).name());  // Newest first.
  }
  std::vector<std::string> listed;
  v1::ListJobsRequest request;
  request.set_page_size(2);
  int pages = 0;
  do {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::ListJobsResponse response;
    ASSERT_TRUE(jobs_->ListJobs(&context, request, &response).ok());
    ASSERT_LE(response.jobs_size(), 2);
    for (const auto& job : response.jobs()) {
      listed.push_back(job.name());
    }
    request.set_page_token(response.next_page_token());
    ++pages;
  } while (!request.page_token().empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(listed, created);

  v1::ListJobsRequest odd;
  odd.set_label("parity=odd");
  grpc::ClientContext context;
  SetDeadline(context);
  v1::ListJobsResponse response;
  ASSERT_TRUE(jobs_->ListJobs(&context, odd, &response).ok());
  ASSERT_EQ(response.jobs_size(), 2);
  EXPECT_EQ(response.jobs(0).name(), created[1]);
  EXPECT_EQ(response.jobs(1).name(), created[3]);

  v1::ListJobsRequest running;
  running.set_state(v1::RUNNING);
  grpc::ClientContext context2;
  SetDeadline(context2);
  ASSERT_TRUE(jobs_->ListJobs(&context2, running, &response).ok());
  EXPECT_EQ(response.jobs_size(), 0);

  v1::ListJobsRequest negative;
  negative.set_page_size(-1);
  grpc::ClientContext context3;
  SetDeadline(context3);
  grpc::Status status = jobs_->ListJobs(&context3, negative, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "page_size"));
}

TEST_F(ServerTest, WatchJobStreamsEveryTransitionWhileATestWorkerRunsIt) {
  const v1::Job created = MustCreate(ValidRequest());
  grpc::ClientContext watch_context;
  SetDeadline(watch_context, absl::Seconds(60));
  v1::WatchJobRequest watch;
  watch.set_name(created.name());
  auto stream = jobs_->WatchJob(&watch_context, watch);
  v1::Job update;
  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.state(), v1::QUEUED) << "the current state comes first";

  v1::LeaseJobResponse lease = Lease();
  ASSERT_EQ(lease.job().name(), created.name());
  EXPECT_FALSE(lease.lease_id().empty());
  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.state(), v1::RUNNING);
  EXPECT_EQ(update.attempt(), 1);

  v1::HeartbeatResponse beat;
  ASSERT_TRUE(Heartbeat(lease, v1::ANALYZING, 10, &beat).ok());
  EXPECT_FALSE(beat.cancel_requested());
  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.stage(), v1::ANALYZING);
  EXPECT_DOUBLE_EQ(update.progress(), 10);

  ASSERT_TRUE(Heartbeat(lease, v1::EXPORTING, 90, &beat).ok());
  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.stage(), v1::EXPORTING);

  ASSERT_TRUE(Upload("{\"report\": true}").ok());
  v1::CompleteJobRequest complete;
  complete.set_lease_id(lease.lease_id());
  complete.set_job(created.name());
  complete.mutable_result()->set_size_bytes(1400000);
  auto* artifact = complete.add_artifacts();
  artifact->set_name("report.json");
  artifact->set_digest(DigestOf("{\"report\": true}"));
  artifact->set_size_bytes(16);
  v1::CompleteJobResponse completed;
  grpc::Status status = Complete(complete, &completed);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(completed.job().state(), v1::SUCCEEDED);

  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.state(), v1::SUCCEEDED);
  EXPECT_EQ(update.artifacts_size(), 1);
  EXPECT_FALSE(stream->Read(&update)) << "the stream ends after a terminal state";
  grpc::Status end = stream->Finish();
  EXPECT_TRUE(end.ok()) << end.error_message();
}

TEST_F(ServerTest, WatchSurvivesTheClientGoingAway) {
  const v1::Job created = MustCreate(ValidRequest());
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::WatchJobRequest watch;
    watch.set_name(created.name());
    auto stream = jobs_->WatchJob(&context, watch);
    v1::Job update;
    ASSERT_TRUE(stream->Read(&update));
    context.TryCancel();
    stream->Finish();
  }
  // Changes after the watcher left must not reach it (or crash the server).
  grpc::ClientContext context;
  SetDeadline(context);
  v1::CancelJobRequest cancel;
  cancel.set_name(created.name());
  v1::Job cancelled;
  ASSERT_TRUE(jobs_->CancelJob(&context, cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);
  EXPECT_TRUE(WaitFor([this] { return server_->job_manager().notifier().watcher_count() == 0; }))
      << "the departed watcher is still subscribed";
  v1::Job got;
  EXPECT_TRUE(GetJob(created.name(), &got).ok());
}

TEST_F(ServerTest, CancelRunningJobReachesTheWorker) {
  const v1::Job created = MustCreate(ValidRequest());
  v1::LeaseJobResponse lease = Lease();
  ASSERT_EQ(lease.job().name(), created.name());
  grpc::ClientContext context;
  SetDeadline(context);
  v1::CancelJobRequest cancel;
  cancel.set_name(created.name());
  v1::Job job;
  ASSERT_TRUE(jobs_->CancelJob(&context, cancel, &job).ok());
  EXPECT_EQ(job.state(), v1::CANCELLING);
  v1::HeartbeatResponse beat;
  ASSERT_TRUE(Heartbeat(lease, v1::SOLVING, 50, &beat).ok());
  EXPECT_TRUE(beat.cancel_requested());
  v1::CompleteJobRequest complete;
  complete.set_lease_id(lease.lease_id());
  complete.set_job(created.name());
  complete.mutable_error()->set_reason("CANCELLED");
  v1::CompleteJobResponse completed;
  ASSERT_TRUE(Complete(complete, &completed).ok());
  EXPECT_EQ(completed.job().state(), v1::CANCELLED);
  grpc::ClientContext again;
  SetDeadline(again);
  EXPECT_EQ(jobs_->CancelJob(&again, cancel, &job).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServerTest, LongPollIsAnsweredWhenAJobArrives) {
  v1::LeaseJobResponse leased;
  // The poll waits up to 20 s; a job queued meanwhile must end it early with that job.
  std::thread worker([&] { leased = Lease(absl::Seconds(20)); });
  // Create only once the poll is parked, so this tests the wake-up, not a lucky order.
  ASSERT_TRUE(WaitFor([this] { return server_->idle_workers() == 1; }));
  const v1::Job created = MustCreate(ValidRequest());
  worker.join();
  EXPECT_EQ(leased.job().name(), created.name());
  EXPECT_EQ(leased.job().state(), v1::RUNNING);
}

TEST_F(ServerTest, LongPollWithoutJobsAnswersEmpty) {
  v1::LeaseJobResponse leased = Lease(absl::Milliseconds(50));
  EXPECT_FALSE(leased.has_job());
  EXPECT_TRUE(leased.lease_id().empty());
}

TEST_F(ServerTest, StaleLeaseIsAbortedAfterExpiry) {
  const v1::Job created = MustCreate(ValidRequest());
  v1::LeaseJobResponse lease = Lease();
  clock_->Advance(absl::Seconds(61));
  auto reaped = server_->job_manager().ReapOverdueJobs();
  ASSERT_TRUE(reaped.ok());
  EXPECT_EQ(*reaped, 1);
  v1::HeartbeatResponse beat;
  EXPECT_EQ(Heartbeat(lease, v1::SOLVING, 50, &beat).error_code(), grpc::StatusCode::ABORTED);
  v1::Job got;
  ASSERT_TRUE(GetJob(created.name(), &got).ok());
  EXPECT_EQ(got.state(), v1::QUEUED);
  EXPECT_EQ(got.attempt(), 1);
  v1::LeaseJobResponse second = Lease();
  EXPECT_EQ(second.job().attempt(), 2);
}

TEST_F(ServerTest, FullQueueIsResourceExhausted) {
  server_.reset();
  ServerOptions options = Options();
  options.max_queued_jobs = 1;
  StartServer(options);
  MustCreate(ValidRequest());
  v1::Job job;
  grpc::Status status = CreateJob(ValidRequest(), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "queue is full"));
}

TEST_F(ServerTest, ShutdownEndsWatchesAndRefusesNewLeases) {
  const v1::Job created = MustCreate(ValidRequest());
  grpc::ClientContext context;
  SetDeadline(context);
  v1::WatchJobRequest watch;
  watch.set_name(created.name());
  auto stream = jobs_->WatchJob(&context, watch);
  v1::Job update;
  ASSERT_TRUE(stream->Read(&update));
  server_->Shutdown(absl::Seconds(5));
  EXPECT_FALSE(stream->Read(&update));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(server_->job_manager().TryLeaseJob("w", "cpu").value().has_value());
}

TEST_F(ServerTest, PortFileAndMetricsEndpoint) {
  server_.reset();
  ServerOptions options = Options();
  options.port_file = dir_.path() + "/port";
  options.metrics_listen = "127.0.0.1:0";
  StartServer(options);
  std::ifstream port_file(options.port_file);
  int written = 0;
  port_file >> written;
  EXPECT_EQ(written, server_->port());
  ASSERT_GT(server_->metrics_port(), 0);

  // A plain HTTP GET of /metrics.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(server_->metrics_port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string get = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  ASSERT_EQ(::write(fd, get.data(), get.size()), static_cast<ssize_t>(get.size()));
  std::string body;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) {
    body.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  EXPECT_TRUE(absl::StrContains(body, "ompq_jobs_submitted_total")) << body.substr(0, 500);
  EXPECT_TRUE(absl::StrContains(body, "ompq_blob_store_bytes"));
}

// gRPC server metrics come from one interceptor, for unary and streaming methods alike.
TEST_F(ServerTest, GrpcMetricsCountEveryCallByMethodAndCode) {
  const prometheus::Registry& registry = *server_->metrics().registry();
  const std::string get_job = "/ompq.v1.QuantizationService/GetJob";
  const std::string watch_job = "/ompq.v1.QuantizationService/WatchJob";
  // -1: no such series yet.
  auto handled = [&](const std::string& method, const std::string& code) {
    return std::max(0.0, MetricValue(registry, "grpc_server_handled_total",
                                     {{"grpc_method", method}, {"grpc_code", code}}));
  };
  const double not_found_before = handled(get_job, "NOT_FOUND");
  const double ok_before = handled(get_job, "OK");
  const double timed_before = std::max(
      0.0, MetricValue(registry, "grpc_server_handling_seconds", {{"grpc_method", get_job}}));

  v1::Job job;
  EXPECT_EQ(GetJob("jobs/unknown", &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(handled(get_job, "NOT_FOUND"), not_found_before + 1);
  EXPECT_EQ(handled(get_job, "OK"), ok_before);
  EXPECT_EQ(MetricValue(registry, "grpc_server_handling_seconds", {{"grpc_method", get_job}}),
            timed_before + 1);

  const v1::Job created = MustCreate(ValidRequest());
  ASSERT_TRUE(GetJob(created.name(), &job).ok());
  EXPECT_EQ(handled(get_job, "OK"), ok_before + 1);

  // A server stream is counted once, with the status it ended with.
  const double watch_before = handled(watch_job, "NOT_FOUND");
  grpc::ClientContext context;
  SetDeadline(context);
  v1::WatchJobRequest watch;
  watch.set_name("jobs/unknown");
  auto stream = jobs_->WatchJob(&context, watch);
  v1::Job update;
  EXPECT_FALSE(stream->Read(&update));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(handled(watch_job, "NOT_FOUND"), watch_before + 1);
}

// Two servers on one PostgreSQL database and one blob directory, as replicas run.
class ReplicaServerTest : public ServerTest {
 protected:
  void SetUp() override {
    std::string base_url;
    OMPQ_REQUIRE_TEST_POSTGRES(base_url);
    schema_ = std::make_unique<PostgresTestSchema>(base_url);
    ASSERT_EQ(schema_->error(), "");
    // Server A is the fixture's server_ (and its stubs); B is the other replica.
    StartServer(ReplicaOptions("a"));
    auto other = Server::Start(ReplicaOptions("b"));
    ASSERT_TRUE(other.ok()) << other.status();
    other_ = std::move(other).value();
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", other_->port()),
                                       grpc::InsecureChannelCredentials());
    other_jobs_ = v1::QuantizationService::NewStub(channel);
  }

  // Both servers stop before their schema is dropped.
  void TearDown() override {
    other_.reset();
    server_.reset();
  }

  ServerOptions ReplicaOptions(const std::string& name) {
    ServerOptions options = Options();
    options.data_dir = absl::StrCat(dir_.path(), "/", name);
    options.database = schema_->url();
    options.blob_dir = dir_.path() + "/blobs";
    return options;
  }

  std::unique_ptr<PostgresTestSchema> schema_;
  std::unique_ptr<Server> other_;
  std::unique_ptr<v1::QuantizationService::Stub> other_jobs_;
};

TEST_F(ReplicaServerTest, LongPollOnOneServerIsAnsweredByAJobSubmittedToTheOther) {
  v1::LeaseJobResponse leased;
  std::thread worker([&] { leased = Lease(absl::Seconds(20)); });
  // Submit only once the poll is parked on A, so this tests the cross-server wake-up.
  ASSERT_TRUE(WaitFor([this] { return server_->idle_workers() == 1; }));
  grpc::ClientContext context;
  SetDeadline(context);
  v1::Job created;
  grpc::Status status = other_jobs_->CreateJob(&context, ValidRequest(), &created);
  ASSERT_TRUE(status.ok()) << status.error_message();
  worker.join();
  EXPECT_EQ(leased.job().name(), created.name());
  EXPECT_EQ(leased.job().state(), v1::RUNNING);
}

TEST_F(ReplicaServerTest, WatchOnOneServerSeesAChangeMadeOnTheOther) {
  const v1::Job created = MustCreate(ValidRequest());
  grpc::ClientContext watch_context;
  SetDeadline(watch_context, absl::Seconds(60));
  v1::WatchJobRequest watch;
  watch.set_name(created.name());
  auto stream = jobs_->WatchJob(&watch_context, watch);
  v1::Job update;
  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.state(), v1::QUEUED);

  grpc::ClientContext cancel_context;
  SetDeadline(cancel_context);
  v1::CancelJobRequest cancel;
  cancel.set_name(created.name());
  v1::Job cancelled;
  ASSERT_TRUE(other_jobs_->CancelJob(&cancel_context, cancel, &cancelled).ok());
  ASSERT_TRUE(stream->Read(&update));
  EXPECT_EQ(update.state(), v1::CANCELLED);
  EXPECT_FALSE(stream->Read(&update)) << "the stream ends after a terminal state";
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace ompq
