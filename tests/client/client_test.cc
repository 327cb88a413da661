// Tests of the gRPC client (client/client.h) against a small fake QuantizationService on
// a real loopback port: WatchJob reconnects, deadlines, stop requests and the bearer
// token. Blob transfers and the channel are tested in tests/rpc.
#include "client/client.h"

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace ompq::client {
namespace {

std::string TokenOf(const grpc::ServerContext* context) {
  auto it = context->client_metadata().find("authorization");
  if (it == context->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

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
    builder.RegisterService(&jobs_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    options_.connection.server = "127.0.0.1:" + std::to_string(port_);
    options_.connection.token = "secret";
  }
  void TearDown() override {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }
  std::unique_ptr<Client> NewClient() {
    auto client = Client::Connect(options_);
    EXPECT_TRUE(client.ok());
    return std::move(*client);
  }

  int port_ = 0;
  FakeJobService jobs_;
  std::unique_ptr<grpc::Server> server_;
  ClientOptions options_;
};

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

}  // namespace
}  // namespace ompq::client
