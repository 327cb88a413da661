// Tests of blob transfers (rpc/blob_transfer.h) against a small fake BlobService on a real
// loopback port: chunked uploads that skip present blobs, downloads that appear only when
// whole.
#include "rpc/blob_transfer.h"

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/digest.h"

namespace ompq::rpc {
namespace {

namespace fs = std::filesystem;

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

class BlobTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&blobs_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    connection_.server = "127.0.0.1:" + std::to_string(port);
    connection_.token = "secret";
    limits_.chunk_bytes = 1000;
    auto channel = MakeChannel(connection_);
    ASSERT_TRUE(channel.ok()) << channel.status();
    stub_ = v1::BlobService::NewStub(*channel);
    dir_ = fs::temp_directory_path() /
           ("ompq_blob_transfer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    fs::remove_all(dir_);
  }
  absl::StatusOr<UploadResult> Upload(const std::string& path) {
    return UploadFile(*stub_, connection_, limits_, path);
  }
  absl::Status Download(const std::string& digest, int64_t size_hint, const std::string& path) {
    return DownloadBlob(*stub_, connection_, limits_, digest, size_hint, path);
  }
  std::string WriteFile(const std::string& name, const std::string& data) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << data;
    return path;
  }

  FakeBlobService blobs_;
  std::unique_ptr<grpc::Server> server_;
  ConnectionOptions connection_;
  TransferLimits limits_;
  std::unique_ptr<v1::BlobService::Stub> stub_;
  fs::path dir_;
};

TEST_F(BlobTransferTest, UploadStreamsChunksAndSkipsPresentBlobs) {
  std::string data(3500, 'x');
  data[1234] = 'y';
  std::string path = WriteFile("model.pt", data);
  auto first = Upload(path);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->uploaded);
  EXPECT_EQ(first->digest, DigestOf(data));
  EXPECT_EQ(first->size_bytes, 3500);
  {
    absl::MutexLock lock(&blobs_.mu);
    EXPECT_EQ(blobs_.blobs[first->digest], data);
    EXPECT_EQ(blobs_.write_messages, 4);  // 1000-byte chunks.
  }
  auto second = Upload(path);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(second->uploaded);
  absl::MutexLock lock(&blobs_.mu);
  EXPECT_EQ(blobs_.write_messages, 4);  // Nothing sent again.
}

TEST_F(BlobTransferTest, UploadOfMissingFileIsNotFound) {
  auto result = Upload((dir_ / "nope.pt").string());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(result.status().message().find("nope.pt"), std::string::npos);
}

TEST_F(BlobTransferTest, DownloadWritesWholeFileOrNothing) {
  std::string data(2500, 'z');
  {
    absl::MutexLock lock(&blobs_.mu);
    blobs_.blobs[DigestOf(data)] = data;
    // A corrupt blob: stored under a digest its bytes do not have.
    blobs_.blobs[DigestOf("other")] = "tampered";
  }
  std::string good = (dir_ / "good.bin").string();
  ASSERT_TRUE(Download(DigestOf(data), 2500, good).ok());
  std::ifstream in(good, std::ios::binary);
  std::stringstream got;
  got << in.rdbuf();
  EXPECT_EQ(got.str(), data);

  std::string bad = (dir_ / "bad.bin").string();
  EXPECT_EQ(Download(DigestOf("other"), -1, bad).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Download(DigestOf("absent"), -1, bad).code(), absl::StatusCode::kNotFound);
  // Neither the target nor a temporary file is left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

}  // namespace
}  // namespace ompq::rpc
