// BlobStore: a blob is visible only when whole and verified; a bad write leaves nothing.
#include "server/blob_store.h"

#include <gtest/gtest.h>
#include <sys/time.h>

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "common/digest.h"
#include "tests/server/test_util.h"

namespace ompq {
namespace {

using ::ompq::testing::FilesUnder;
using ::ompq::testing::TempDir;

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = BlobStore::Open(dir_.path());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(store).value();
  }

  std::string ReadAll(const std::string& digest) {
    auto reader = store_->OpenForRead(digest);
    EXPECT_TRUE(reader.ok()) << reader.status();
    if (!reader.ok()) {
      return "";
    }
    std::string all, chunk;
    do {
      EXPECT_TRUE((*reader)->Read(3, &chunk).ok());
      all += chunk;
    } while (!chunk.empty());
    return all;
  }

  TempDir dir_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(BlobStoreTest, BlobIsVisibleOnlyAfterCommit) {
  const std::string data = "hello, blob store";
  const std::string digest = DigestOf(data);
  auto writer = store_->StartWrite(digest, static_cast<int64_t>(data.size()));
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append(data.substr(0, 5)).ok());
  EXPECT_FALSE(store_->Exists(digest));
  ASSERT_TRUE((*writer)->Append(data.substr(5)).ok());
  EXPECT_FALSE(store_->Exists(digest));
  EXPECT_EQ(store_->OpenForRead(digest).status().code(), absl::StatusCode::kNotFound);

  auto stored = (*writer)->Commit();
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(*stored);
  EXPECT_TRUE(store_->Exists(digest));
  EXPECT_EQ(*store_->Size(digest), static_cast<int64_t>(data.size()));
  EXPECT_EQ(ReadAll(digest), data);
  EXPECT_EQ(store_->TotalBytes(), static_cast<int64_t>(data.size()));
  // Content-addressed layout: DIR/sha256/<2 hex>/<hex>, and no leftovers.
  const std::string hex = digest.substr(7);
  EXPECT_EQ(FilesUnder(dir_.path()),
            std::vector<std::string>{"sha256/" + hex.substr(0, 2) + "/" + hex});
}

TEST_F(BlobStoreTest, DigestMismatchLeavesNothing) {
  const std::string data = "the real bytes";
  const std::string claimed = DigestOf("other bytes!!!");
  auto writer = store_->StartWrite(claimed, static_cast<int64_t>(data.size()));
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(data).ok());
  auto stored = (*writer)->Commit();
  ASSERT_EQ(stored.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(stored.status().message(), claimed));
  EXPECT_TRUE(absl::StrContains(stored.status().message(), DigestOf(data)));
  EXPECT_FALSE(store_->Exists(claimed));
  EXPECT_FALSE(store_->Exists(DigestOf(data)));
  EXPECT_TRUE(FilesUnder(dir_.path()).empty());
  EXPECT_EQ(store_->TotalBytes(), 0);
}

TEST_F(BlobStoreTest, TooManyBytesLeavesNothing) {
  const std::string data = "0123456789";
  auto writer = store_->StartWrite(DigestOf(data), 4);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ((*writer)->Append(data).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(FilesUnder(dir_.path()).empty());
  EXPECT_FALSE((*writer)->Commit().ok());
  EXPECT_FALSE(store_->Exists(DigestOf(data)));
}

TEST_F(BlobStoreTest, TooFewBytesLeavesNothing) {
  const std::string data = "0123456789";
  auto writer = store_->StartWrite(DigestOf(data), 10);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(data.substr(0, 6)).ok());
  auto stored = (*writer)->Commit();
  EXPECT_EQ(stored.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(stored.status().message(), "expected 10"));
  EXPECT_TRUE(FilesUnder(dir_.path()).empty());
}

TEST_F(BlobStoreTest, AbandonedWriteLeavesNothing) {
  const std::string data = "abandoned";
  {
    auto writer = store_->StartWrite(DigestOf(data), static_cast<int64_t>(data.size()));
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(data).ok());
    EXPECT_EQ(FilesUnder(dir_.path()).size(), 1u);  // The temporary file.
  }
  EXPECT_TRUE(FilesUnder(dir_.path()).empty());
  EXPECT_FALSE(store_->Exists(DigestOf(data)));
}

TEST_F(BlobStoreTest, SecondCopyReportsExistingAndIsNotCounted) {
  const std::string data = "twice";
  for (bool expect_stored : {true, false}) {
    auto writer = store_->StartWrite(DigestOf(data), static_cast<int64_t>(data.size()));
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(data).ok());
    auto stored = (*writer)->Commit();
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(*stored, expect_stored);
  }
  EXPECT_EQ(store_->TotalBytes(), 5);
  EXPECT_EQ(FilesUnder(dir_.path()).size(), 1u);
}

TEST_F(BlobStoreTest, EmptyBlobIsStored) {
  const std::string digest = DigestOf("");
  auto writer = store_->StartWrite(digest, 0);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_TRUE(store_->Exists(digest));
  EXPECT_EQ(ReadAll(digest), "");
}

TEST_F(BlobStoreTest, ReopenCountsBytesAndRemovesOnlyStaleTemporaryFiles) {
  const std::string data = "persisted";
  auto writer = store_->StartWrite(DigestOf(data), static_cast<int64_t>(data.size()));
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(data).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  // Leftovers of a crashed upload: one old, one fresh (maybe a live upload elsewhere).
  const std::string dir = dir_.path() + "/sha256/ab";
  std::filesystem::create_directories(dir);
  const std::string stale = dir + "/.tmp-stale";
  const std::string fresh = dir + "/.tmp-fresh";
  std::ofstream(stale) << "partial";
  std::ofstream(fresh) << "partial";
  struct timeval old_times[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(::utimes(stale.c_str(), old_times), 0);

  auto reopened = BlobStore::Open(dir_.path());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->TotalBytes(), static_cast<int64_t>(data.size()));
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(fresh));
  EXPECT_TRUE((*reopened)->Exists(DigestOf(data)));
}

// Larger than the store's write-back step (8 MiB) and not a multiple of the chunk size, so
// the early write-back runs several times and the last chunk is short.
TEST_F(BlobStoreTest, LargeBlobInChunksIsStoredWhole) {
  std::string data(20 * (1 << 20) + 12345, '\0');
  uint32_t x = 12345;
  for (char& c : data) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  const std::string digest = DigestOf(data);
  auto writer = store_->StartWrite(digest, static_cast<int64_t>(data.size()));
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (size_t at = 0; at < data.size(); at += 1 << 20) {
    ASSERT_TRUE((*writer)->Append(absl::string_view(data).substr(at, 1 << 20)).ok());
  }
  auto stored = (*writer)->Commit();
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(*stored);
  auto reader = store_->OpenForRead(digest);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string all, chunk;
  do {
    ASSERT_TRUE((*reader)->Read(1 << 20, &chunk).ok());
    all += chunk;
  } while (!chunk.empty());
  EXPECT_TRUE(all == data) << "read back " << all.size() << " of " << data.size() << " bytes";
  EXPECT_EQ(FilesUnder(dir_.path()).size(), 1u);  // No temporary file left.
}

// Large chunks are hashed on the hasher's thread, small ones in place; the digest is that
// of all bytes in order either way.
TEST(ChunkHasherTest, MixedChunkSizesHashAsOneString) {
  std::string data(5 * (1 << 20), '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 7919) >> 3);
  const size_t sizes[] = {10, 300 << 10, 1 << 20, 1, 256 << 10, (256 << 10) - 1, 2 << 20};
  ChunkHasher hasher;
  size_t at = 0;
  for (size_t size : sizes) {
    hasher.Start(absl::string_view(data).substr(at, size));
    hasher.Wait();
    at += size;
  }
  hasher.Start(absl::string_view(data).substr(at));
  EXPECT_EQ(hasher.Finish(), DigestOf(data));
}

TEST(ChunkHasherTest, DestroyedWhileHashingWaitsForTheChunk) {
  const std::string data(3 << 20, 'x');
  {
    ChunkHasher hasher;
    hasher.Start(data);
  }  // Must not leave the thread reading `data` or running past the join.
  ChunkHasher again;
  again.Start(data);
  EXPECT_EQ(again.Finish(), DigestOf(data));
}

}  // namespace
}  // namespace ompq
