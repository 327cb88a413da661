// Tests of the gRPC client (client/client.h) against small fake services on a real
// loopback port: chunked uploads that skip present blobs, downloads that appear only
// when whole, WatchJob reconnects, deadlines, stop requests and the bearer token.
#include "client/client.h"

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/digest.h"

namespace ompq::client {
namespace {

namespace fs = std::filesystem;

std::string TokenOf(const grpc::ServerContext* context) {
  auto it = context->client_metadata().find("authorization");
  if (it == context->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// Blobs in a map; counts Write messages so tests can check the chunking.
class FakeBlobService : public v1::BlobService::Service {
 public:
  grpc::Status FindMissingBlobs(grpc::ServerContext*, const v1::FindMissingBlobsRequest* req,
                                v1::FindMissingBlobsResponse* resp) override {
    absl::MutexLock lock(&mu);
    for (const auto& d : req->digests()) {
      if (blobs.count(d) == 0) resp->add_missing_digests(d);
    }
    return grpc::Status::OK;
  }
  grpc::Status Write(grpc::ServerContext*, grpc::ServerReader<v1::WriteBlobRequest>* reader,
                     v1::WriteBlobResponse* resp) override {
    v1::WriteBlobRequest chunk;
    std::string digest, data;
    int64_t size = -1;
    int count = 0;
    while (reader->Read(&chunk)) {
      if (count++ == 0) {
        digest = chunk.digest();
        size = chunk.size_bytes();
      }
      data += chunk.data();
    }
    if (DigestOf(data) != digest || static_cast<int64_t>(data.size()) != size) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "digest mismatch");
    }
    absl::MutexLock lock(&mu);
    write_messages += count;
    blobs[digest] = data;
    resp->set_digest(digest);
    resp->set_size_bytes(size);
    return grpc::Status::OK;
  }
  grpc::Status Read(grpc::ServerContext*, const v1::ReadBlobRequest* req,
                    grpc::ServerWriter<v1::ReadBlobResponse>* writer) override {
    std::string data;
    {
      absl::MutexLock lock(&mu);
      auto it = blobs.find(req->digest());
      if (it == blobs.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no blob");
      data = it->second;
    }
    for (size_t i = 0; i < data.size(); i += 1000) {
      v1::ReadBlobResponse chunk;
      chunk.set_data(data.substr(i, 1000));
      writer->Write(chunk);
    }
    return grpc::Status::OK;
  }

  absl::Mutex mu;
  std::map<std::string, std::string> blobs;
  int write_messages = 0;
};

// WatchJob plays a script per call: `streams[i]` is what the i-th call sends, after
// which it ends with `ends[i]` (or, when `hang`, waits until the client goes away).
class FakeJobService : public v1::QuantizationService::Service {
 public:
  struct Script {
    std::vector<v1::JobState> states;
    grpc::Status end = grpc::Status::OK;
    bool hang = false;
  };

  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* req,
                      v1::Job* job) override {
    last_token = TokenOf(context);
    if (req->name() != "jobs/a") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job");
    job->set_name(req->name());
    job->set_state(v1::SUCCEEDED);
    return grpc::Status::OK;
  }
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::Job>* writer) override {
    size_t call = calls.fetch_add(1);
    if (call >= scripts.size()) return grpc::Status(grpc::StatusCode::INTERNAL, "no script");
    const Script& script = scripts[call];
    for (v1::JobState state : script.states) {
      v1::Job job;
      job.set_name(req->name());
      job.set_state(state);
      writer->Write(job);
    }
    while (script.hang && !context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
    return script.end;
  }

  std::vector<Script> scripts;
  std::atomic<size_t> calls{0};
  std::string last_token;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&blobs_);
    builder.RegisterService(&jobs_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    options_.connection.server = "127.0.0.1:" + std::to_string(port_);
    options_.connection.token = "secret";
    options_.transfer.chunk_bytes = 1000;
    dir_ = fs::temp_directory_path() /
           ("ompq_client_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    fs::remove_all(dir_);
  }
  std::unique_ptr<Client> NewClient() {
    auto client = Client::Connect(options_);
    EXPECT_TRUE(client.ok());
    return std::move(*client);
  }
  std::string WriteFile(const std::string& name, const std::string& data) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << data;
    return path;
  }

  int port_ = 0;
  FakeBlobService blobs_;
  FakeJobService jobs_;
  std::unique_ptr<grpc::Server> server_;
  ClientOptions options_;
  fs::path dir_;
};

TEST_F(ClientTest, UploadStreamsChunksAndSkipsPresentBlobs) {
  std::string data(3500, 'x');
  data[1234] = 'y';
  std::string path = WriteFile("model.pt", data);
  auto client = NewClient();
  auto first = client->UploadFile(path);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->uploaded);
  EXPECT_EQ(first->digest, DigestOf(data));
  EXPECT_EQ(first->size_bytes, 3500);
  {
    absl::MutexLock lock(&blobs_.mu);
    EXPECT_EQ(blobs_.blobs[first->digest], data);
    EXPECT_EQ(blobs_.write_messages, 4);  // 1000-byte chunks.
  }
  auto second = client->UploadFile(path);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->uploaded);
  absl::MutexLock lock(&blobs_.mu);
  EXPECT_EQ(blobs_.write_messages, 4);  // Nothing sent again.
}

TEST_F(ClientTest, UploadOfMissingFileIsNotFound) {
  auto client = NewClient();
  auto result = client->UploadFile((dir_ / "nope.pt").string());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(result.status().message().find("nope.pt"), std::string::npos);
}

TEST_F(ClientTest, DownloadWritesWholeFileOrNothing) {
  std::string data(2500, 'z');
  {
    absl::MutexLock lock(&blobs_.mu);
    blobs_.blobs[DigestOf(data)] = data;
    // A corrupt blob: stored under a digest its bytes do not have.
    blobs_.blobs[DigestOf("other")] = "tampered";
  }
  auto client = NewClient();
  std::string good = (dir_ / "good.bin").string();
  ASSERT_TRUE(client->Download(DigestOf(data), 2500, good).ok());
  std::ifstream in(good, std::ios::binary);
  std::stringstream got;
  got << in.rdbuf();
  EXPECT_EQ(got.str(), data);

  std::string bad = (dir_ / "bad.bin").string();
  EXPECT_EQ(client->Download(DigestOf("other"), -1, bad).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(client->Download(DigestOf("absent"), -1, bad).code(), absl::StatusCode::kNotFound);
  // Neither the target nor a temporary file is left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(ClientTest, SendsBearerTokenAndMapsErrors) {
  auto client = NewClient();
  ASSERT_TRUE(client->GetJob("jobs/a").ok());
  EXPECT_EQ(jobs_.last_token, "Bearer secret");
  EXPECT_EQ(client->GetJob("jobs/b").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, WatchFollowsUntilTerminal) {
  jobs_.scripts = {{{v1::QUEUED, v1::RUNNING, v1::SUCCEEDED}}};
  auto client = NewClient();
  std::vector<v1::JobState> seen;
  auto end = client->Watch("jobs/a", {}, [&](const v1::Job& job) {
    seen.push_back(job.state());
    return true;
  });
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(*end, WatchEnd::kTerminal);
  EXPECT_EQ(seen, (std::vector<v1::JobState>{v1::QUEUED, v1::RUNNING, v1::SUCCEEDED}));
}

TEST_F(ClientTest, WatchReconnectsAfterLostStream) {
  FakeJobService::Script lost{{v1::RUNNING}};
  lost.end = grpc::Status(grpc::StatusCode::UNAVAILABLE, "server restarting");
  FakeJobService::Script closed{{v1::RUNNING}};  // Ends OK before a terminal state.
  jobs_.scripts = {lost, closed, {{v1::RUNNING, v1::FAILED}}};
  auto client = NewClient();
  std::vector<v1::JobState> seen;
  auto end = client->Watch("jobs/a", {}, [&](const v1::Job& job) {
    seen.push_back(job.state());
    return true;
  });
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(*end, WatchEnd::kTerminal);
  EXPECT_EQ(jobs_.calls.load(), 3u);
  EXPECT_EQ(seen.back(), v1::FAILED);
}

TEST_F(ClientTest, WatchTimesOutAtDeadline) {
  FakeJobService::Script running{{v1::RUNNING}};
  running.hang = true;
  jobs_.scripts = {running, running};
  auto client = NewClient();
  WatchOptions options;
  options.deadline = absl::Now() + absl::Milliseconds(500);
  absl::Time start = absl::Now();
  auto end = client->Watch("jobs/a", options, [](const v1::Job&) { return true; });
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(*end, WatchEnd::kTimedOut);
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(ClientTest, WatchStopsPromptlyOnRequest) {
  FakeJobService::Script running{{v1::RUNNING}};
  running.hang = true;
  jobs_.scripts = {running};
  auto client = NewClient();
  std::atomic<bool> stop{false};
  WatchOptions options;
  options.stop = &stop;
  std::thread interrupter([&] {
    absl::SleepFor(absl::Milliseconds(300));
    stop.store(true);
  });
  absl::Time start = absl::Now();
  auto end = client->Watch("jobs/a", options, [](const v1::Job&) { return true; });
  interrupter.join();
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(*end, WatchEnd::kStopped);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(ClientTest, WatchOfUnknownJobIsTheServersError) {
  jobs_.scripts = {{{}, grpc::Status(grpc::StatusCode::NOT_FOUND, "no job")}};
  auto client = NewClient();
  auto end = client->Watch("jobs/x", {}, [](const v1::Job&) { return true; });
  EXPECT_EQ(end.status().code(), absl::StatusCode::kNotFound);
}

TEST(ClientUnreachable, FailsFastWithUnavailable) {
  ClientOptions options;
  options.connection.server = "127.0.0.1:1";
  auto client = Client::Connect(options);
  ASSERT_TRUE(client.ok());
  absl::Time start = absl::Now();
  EXPECT_EQ((*client)->GetJob("jobs/a").status().code(), absl::StatusCode::kUnavailable);
  auto end = (*client)->Watch("jobs/a", {}, [](const v1::Job&) { return true; });
  EXPECT_EQ(end.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(ClientConnect, MissingCaFileIsNotFound) {
  ClientOptions options;
  options.connection.tls_ca = "/nonexistent/ca.pem";
  EXPECT_EQ(Client::Connect(options).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ompq::client
