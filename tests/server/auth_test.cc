// Security of the real Server over loopback gRPC: the authentication matrix (tokens,
// roles, tenants), per-tenant blobs, TLS and mutual TLS, the non-loopback refusal, and
// that tokens never reach the log. Certificates are made at test time with the openssl
// CLI; no key is ever committed.
#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/digest.h"
#include "ompq/v1/blob_service.grpc.pb.h"
#include "ompq/v1/quantization_service.grpc.pb.h"
#include "ompq/v1/worker_service.grpc.pb.h"
#include "server/auth.h"
#include "server/server.h"
#include "tests/server/test_util.h"

namespace ompq {
namespace {

using ::ompq::testing::TempDir;

constexpr char kTokenA[] = "tok-alice-client-6b1f0c";
constexpr char kTokenB[] = "tok-bob-client-93ad2e";
constexpr char kWorkerToken[] = "tok-worker-shared-51c7aa";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

// A call context with a deadline and, if given, a bearer token.
std::unique_ptr<grpc::ClientContext> Context(const std::string& token) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  if (!token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }
  return context;
}

// ---- Token file parsing ----

TEST(ParseTokensTest, ReadsLinesSkipsCommentsAndNeverEchoesTokens) {
  auto entries = ParseTokens("# comment\n\nsecretA  acme client\nsecretW,acme,worker\n", "f");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].token, "secretA");
  EXPECT_EQ((*entries)[0].tenant, "acme");
  EXPECT_EQ((*entries)[0].role, Role::kClient);
  EXPECT_EQ((*entries)[1].role, Role::kWorker);

  auto bad_role = ParseTokens("secretX acme admin\n", "f");
  ASSERT_FALSE(bad_role.ok());
  EXPECT_TRUE(absl::StrContains(bad_role.status().message(), "line 1"));
  EXPECT_FALSE(absl::StrContains(bad_role.status().message(), "secretX"));
  auto duplicate = ParseTokens("secretY a client\nsecretY b client\n", "f");
  ASSERT_FALSE(duplicate.ok());
  EXPECT_FALSE(absl::StrContains(duplicate.status().message(), "secretY"));
  EXPECT_FALSE(ParseTokens("secretZ ../etc client\n", "f").ok());
  EXPECT_FALSE(ParseTokens("# only a comment\n", "f").ok());
}

// ---- The authentication matrix, plaintext on loopback ----

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_path_ = dir_.path() + "/tokens";
    WriteFile(tokens_path_, absl::StrCat("# token tenant role\n", kTokenA, " alice client\n",
                                         kTokenB, " bob client\n", kWorkerToken,
                                         " ops worker\n"));
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.data_dir = dir_.path() + "/data";
    options.workers = 0;
    options.auth_tokens = tokens_path_;
    auto server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    jobs_ = v1::QuantizationService::NewStub(channel_);
    blobs_ = v1::BlobService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }

  grpc::Status Upload(const std::string& token, const std::string& data,
                      const std::string& digest = "") {
    auto context = Context(token);
    v1::WriteBlobResponse response;
    auto writer = blobs_->Write(context.get(), &response);
    v1::WriteBlobRequest first;
    first.set_digest(digest.empty() ? DigestOf(data) : digest);
    first.set_size_bytes(static_cast<int64_t>(data.size()));
    first.set_data(data);
    writer->Write(first);
    writer->WritesDone();
    return writer->Finish();
  }

  grpc::Status Download(const std::string& token, const std::string& digest, std::string* out) {
    auto context = Context(token);
    v1::ReadBlobRequest request;
    request.set_digest(digest);
    auto reader = blobs_->Read(context.get(), request);
    v1::ReadBlobResponse chunk;
    while (reader->Read(&chunk)) {
      *out += chunk.data();
    }
    return reader->Finish();
  }

  std::vector<std::string> Missing(const std::string& token, const std::string& digest) {
    auto context = Context(token);
    v1::FindMissingBlobsRequest request;
    request.add_digests(digest);
    v1::FindMissingBlobsResponse response;
    EXPECT_TRUE(blobs_->FindMissingBlobs(context.get(), request, &response).ok());
    return {response.missing_digests().begin(), response.missing_digests().end()};
  }

  v1::CreateJobRequest Request(const std::string& model, const std::string& calib) {
    v1::CreateJobRequest request;
    request.mutable_spec()->set_model_digest(model);
    request.mutable_spec()->set_calib_digest(calib);
    request.mutable_spec()->set_size_budget_bytes(1500000);
    request.mutable_spec()->set_finetune(v1::NONE);
    return request;
  }

  // A job of tenant alice, with her own blobs.
  v1::Job AliceJob() {
    EXPECT_TRUE(Upload(kTokenA, "alice model").ok());
    EXPECT_TRUE(Upload(kTokenA, "alice calib").ok());
    v1::Job job;
    auto context = Context(kTokenA);
    grpc::Status status = jobs_->CreateJob(
        context.get(), Request(DigestOf("alice model"), DigestOf("alice calib")), &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  TempDir dir_;
  std::string tokens_path_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::QuantizationService::Stub> jobs_;
  std::unique_ptr<v1::BlobService::Stub> blobs_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

TEST_F(AuthTest, MissingOrUnknownTokenIsUnauthenticatedEverywhere) {
  for (const std::string token : {"", "not-a-token", "tok-alice-client-6b1f0"}) {
    v1::ListJobsResponse list;
    EXPECT_EQ(jobs_->ListJobs(Context(token).get(), {}, &list).error_code(),
              grpc::UNAUTHENTICATED)
        << "token '" << token << "'";
    EXPECT_EQ(Upload(token, "x").error_code(), grpc::UNAUTHENTICATED);
    std::string data;
    EXPECT_EQ(Download(token, DigestOf("x"), &data).error_code(), grpc::UNAUTHENTICATED);
    v1::LeaseJobRequest lease;
    lease.set_worker_id("w");
    v1::LeaseJobResponse leased;
    EXPECT_EQ(workers_->LeaseJob(Context(token).get(), lease, &leased).error_code(),
              grpc::UNAUTHENTICATED);
    v1::WatchJobRequest watch;
    watch.set_name("jobs/0123456789abcdef");
    auto context = Context(token);
    auto reader = jobs_->WatchJob(context.get(), watch);
    v1::Job ignored;
    while (reader->Read(&ignored)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::UNAUTHENTICATED);
  }
}

TEST_F(AuthTest, AnotherTenantsJobIsNotFound) {
  const v1::Job job = AliceJob();
  ASSERT_FALSE(job.name().empty());

  v1::GetJobRequest get;
  get.set_name(job.name());
  v1::Job got;
  EXPECT_TRUE(jobs_->GetJob(Context(kTokenA).get(), get, &got).ok());
  EXPECT_EQ(jobs_->GetJob(Context(kTokenB).get(), get, &got).error_code(), grpc::NOT_FOUND);

  v1::CancelJobRequest cancel;
  cancel.set_name(job.name());
  v1::Job cancelled;
  EXPECT_EQ(jobs_->CancelJob(Context(kTokenB).get(), cancel, &cancelled).error_code(),
            grpc::NOT_FOUND);
  v1::DeleteJobRequest del;
  del.set_name(job.name());
  google::protobuf::Empty empty;
  EXPECT_EQ(jobs_->DeleteJob(Context(kTokenB).get(), del, &empty).error_code(), grpc::NOT_FOUND);

  v1::WatchJobRequest watch;
  watch.set_name(job.name());
  auto context = Context(kTokenB);
  auto reader = jobs_->WatchJob(context.get(), watch);
  v1::Job seen;
  EXPECT_FALSE(reader->Read(&seen));
  EXPECT_EQ(reader->Finish().error_code(), grpc::NOT_FOUND);

  v1::ListJobsResponse bob_list;
  ASSERT_TRUE(jobs_->ListJobs(Context(kTokenB).get(), {}, &bob_list).ok());
  EXPECT_EQ(bob_list.jobs_size(), 0);
  v1::ListJobsResponse alice_list;
  ASSERT_TRUE(jobs_->ListJobs(Context(kTokenA).get(), {}, &alice_list).ok());
  ASSERT_EQ(alice_list.jobs_size(), 1);
  EXPECT_EQ(alice_list.jobs(0).name(), job.name());

  // Bob's cancel changed nothing; Alice's own works.
  ASSERT_TRUE(jobs_->GetJob(Context(kTokenA).get(), get, &got).ok());
  EXPECT_EQ(got.state(), v1::QUEUED);
  EXPECT_TRUE(jobs_->CancelJob(Context(kTokenA).get(), cancel, &cancelled).ok());
}

TEST_F(AuthTest, RequestIdIsPerTenant) {
  AliceJob();  // Uploads Alice's blobs.
  ASSERT_TRUE(Upload(kTokenB, "bob model").ok());
  ASSERT_TRUE(Upload(kTokenB, "bob calib").ok());
  v1::CreateJobRequest alice = Request(DigestOf("alice model"), DigestOf("alice calib"));
  alice.set_request_id("same-id");
  v1::CreateJobRequest bob = Request(DigestOf("bob model"), DigestOf("bob calib"));
  bob.set_request_id("same-id");
  v1::Job alice_job;
  v1::Job bob_job;
  ASSERT_TRUE(jobs_->CreateJob(Context(kTokenA).get(), alice, &alice_job).ok());
  ASSERT_TRUE(jobs_->CreateJob(Context(kTokenB).get(), bob, &bob_job).ok());
  EXPECT_NE(alice_job.name(), bob_job.name());
  EXPECT_EQ(bob_job.spec().model_digest(), DigestOf("bob model"));
}

TEST_F(AuthTest, AnotherTenantsBlobIsMissingUnreadableAndUnreferenceable) {
  ASSERT_TRUE(Upload(kTokenA, "alice secret weights").ok());
  const std::string digest = DigestOf("alice secret weights");

  EXPECT_TRUE(Missing(kTokenA, digest).empty());
  EXPECT_EQ(Missing(kTokenB, digest), std::vector<std::string>{digest});
  std::string data;
  EXPECT_TRUE(Download(kTokenA, digest, &data).ok());
  EXPECT_EQ(data, "alice secret weights");
  std::string stolen;
  EXPECT_EQ(Download(kTokenB, digest, &stolen).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(stolen, "");

  // Claiming the digest with other bytes does not grant it.
  EXPECT_EQ(Upload(kTokenB, "not the weights at all", digest).error_code(),
            grpc::INVALID_ARGUMENT);
  EXPECT_EQ(Download(kTokenB, digest, &stolen).error_code(), grpc::NOT_FOUND);

  ASSERT_TRUE(Upload(kTokenB, "bob calib").ok());
  v1::Job job;
  grpc::Status created = jobs_->CreateJob(Context(kTokenB).get(),
                                          Request(digest, DigestOf("bob calib")), &job);
  EXPECT_EQ(created.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(created.error_message(), digest)) << created.error_message();

  // Uploading the same bytes makes it Bob's too (he has them anyway).
  EXPECT_TRUE(Upload(kTokenB, "alice secret weights").ok());
  EXPECT_TRUE(Missing(kTokenB, digest).empty());

  // Workers read every blob.
  std::string worker_data;
  EXPECT_TRUE(Download(kWorkerToken, DigestOf("bob calib"), &worker_data).ok());
  EXPECT_EQ(worker_data, "bob calib");
}

TEST_F(AuthTest, WorkerServiceNeedsAWorkerTokenAndClientsAClientToken) {
  v1::LeaseJobRequest lease;
  lease.set_worker_id("w1");
  lease.set_device("cpu");
  lease.mutable_wait()->set_seconds(10);  // Answered as soon as a job is queued.
  v1::LeaseJobResponse leased;
  EXPECT_EQ(workers_->LeaseJob(Context(kTokenA).get(), lease, &leased).error_code(),
            grpc::PERMISSION_DENIED);
  v1::HeartbeatRequest heartbeat;
  v1::HeartbeatResponse beat;
  EXPECT_EQ(workers_->Heartbeat(Context(kTokenA).get(), heartbeat, &beat).error_code(),
            grpc::PERMISSION_DENIED);
  v1::CompleteJobRequest complete;
  v1::CompleteJobResponse completed;
  EXPECT_EQ(workers_->CompleteJob(Context(kTokenA).get(), complete, &completed).error_code(),
            grpc::PERMISSION_DENIED);
  v1::ListJobsResponse list;
  EXPECT_EQ(jobs_->ListJobs(Context(kWorkerToken).get(), {}, &list).error_code(),
            grpc::PERMISSION_DENIED);

  // A worker leases Alice's job, reads her model and its artifact becomes hers.
  const v1::Job job = AliceJob();
  grpc::Status status = workers_->LeaseJob(Context(kWorkerToken).get(), lease, &leased);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(leased.job().name(), job.name());
  std::string model;
  EXPECT_TRUE(Download(kWorkerToken, job.spec().model_digest(), &model).ok());
  EXPECT_EQ(model, "alice model");
  ASSERT_TRUE(Upload(kWorkerToken, "quantized model").ok());
  const std::string artifact = DigestOf("quantized model");
  std::string data;
  EXPECT_EQ(Download(kTokenA, artifact, &data).error_code(), grpc::NOT_FOUND);
  complete.set_job(job.name());
  complete.set_lease_id(leased.lease_id());
  v1::Artifact* out = complete.add_artifacts();
  out->set_name("model.pt");
  out->set_digest(artifact);
  out->set_size_bytes(static_cast<int64_t>(std::string("quantized model").size()));
  status = workers_->CompleteJob(Context(kWorkerToken).get(), complete, &completed);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(completed.job().state(), v1::SUCCEEDED);
  EXPECT_TRUE(Download(kTokenA, artifact, &data).ok());
  EXPECT_EQ(data, "quantized model");
  std::string stolen;
  EXPECT_EQ(Download(kTokenB, artifact, &stolen).error_code(), grpc::NOT_FOUND);
}

// ---- Start-up refusals ----

TEST(AuthStartTest, NonLoopbackPlaintextNeedsInsecure) {
  TempDir dir;
  ServerOptions options;
  options.listen = "0.0.0.0:0";
  options.metrics_listen = "";
  options.data_dir = dir.path();
  options.workers = 0;
  auto refused = Server::Start(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--insecure"))
      << refused.status().message();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--tls-cert"));

  options.insecure = true;
  auto started = Server::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_GT((*started)->port(), 0);
}

// ---- TLS and mutual TLS, with certificates made now ----

// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, in `dir`.
bool MakeCertificates(const std::string& dir) {
  const std::string script = absl::StrCat(
      "set -e; cd '", dir, "';",
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ompq-test-ca "
      "-keyout ca.key -out ca.pem;",
      "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key "
      "-out server.csr;",
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext;",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
      "-extfile server.ext -out server.pem;",
      "openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key "
      "-out client.csr;",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
      "-out client.pem",
      ") >/dev/null 2>&1");
  return std::system(absl::StrCat("(", script).c_str()) == 0;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(MakeCertificates(dir_.path())) << "openssl CLI failed";
  }

  std::unique_ptr<Server> Start(bool mutual) {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.data_dir = dir_.path() + "/data";
    options.workers = 0;
    options.tls_cert = dir_.path() + "/server.pem";
    options.tls_key = dir_.path() + "/server.key";
    if (mutual) {
      options.client_ca = dir_.path() + "/ca.pem";
    }
    auto server = Server::Start(options);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  // ListJobs over `credentials`.
  grpc::Status List(int port, const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), credentials);
    auto stub = v1::QuantizationService::NewStub(channel);
    auto context = Context("");
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListJobsResponse response;
    return stub->ListJobs(context.get(), {}, &response);
  }

  grpc::SslCredentialsOptions Ssl(bool with_client_cert) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadAll(dir_.path() + "/ca.pem");
    if (with_client_cert) {
      ssl.pem_private_key = ReadAll(dir_.path() + "/client.key");
      ssl.pem_cert_chain = ReadAll(dir_.path() + "/client.pem");
    }
    return ssl;
  }

  TempDir dir_;
};

TEST_F(TlsTest, ClientWithTheCaConnectsAndPlaintextFails) {
  auto server = Start(/*mutual=*/false);
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(List(server->port(), grpc::SslCredentials(Ssl(false))).ok());
  EXPECT_FALSE(List(server->port(), grpc::InsecureChannelCredentials()).ok());
  grpc::SslCredentialsOptions wrong_ca;
  wrong_ca.pem_root_certs = ReadAll(dir_.path() + "/client.pem");  // Not the CA.
  EXPECT_FALSE(List(server->port(), grpc::SslCredentials(wrong_ca)).ok());
}

TEST_F(TlsTest, MutualTlsRefusesAClientWithoutACertificate) {
  auto server = Start(/*mutual=*/true);
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(List(server->port(), grpc::SslCredentials(Ssl(true))).ok());
  EXPECT_FALSE(List(server->port(), grpc::SslCredentials(Ssl(false))).ok());
}

// ---- Tokens never reach the log ----

TEST(AuthLogTest, TokensNeverAppearInTheLog) {
  TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  WriteFile(tokens, absl::StrCat(kTokenA, " alice client\n", kWorkerToken, " ops worker\n"));
  // The log goes to stderr: capture it in a file for the server's whole life.
  const std::string log_path = dir.path() + "/log";
  fflush(stderr);
  const int saved = dup(STDERR_FILENO);
  ASSERT_NE(std::freopen(log_path.c_str(), "w", stderr), nullptr);
  {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.data_dir = dir.path() + "/data";
    options.workers = 0;
    options.auth_tokens = tokens;
    auto server = Server::Start(options);
    if (server.ok()) {
      auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                         grpc::InsecureChannelCredentials());
      auto stub = v1::QuantizationService::NewStub(channel);
      v1::ListJobsResponse list;
      stub->ListJobs(Context(kTokenA).get(), {}, &list).ok();
      stub->ListJobs(Context("tok-wrong-guess-1234").get(), {}, &list).ok();
      (*server)->Shutdown(absl::Seconds(1));
    }
    // A bad tokens file: its error must not quote the line either.
    WriteFile(tokens, absl::StrCat(kTokenB, " bob superuser\n"));
    auto refused = Server::Start(options);
    if (!refused.ok()) {
      std::fprintf(stderr, "%s\n", std::string(refused.status().message()).c_str());
    }
  }
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  const std::string log = ReadAll(log_path);
  EXPECT_TRUE(absl::StrContains(log, "tokens required")) << log;  // The log was captured.
  EXPECT_TRUE(absl::StrContains(log, "line 1")) << log;
  for (const char* token : {kTokenA, kTokenB, kWorkerToken, "tok-wrong-guess-1234"}) {
    EXPECT_FALSE(absl::StrContains(log, token)) << token;
  }
}

}  // namespace
}  // namespace ompq
