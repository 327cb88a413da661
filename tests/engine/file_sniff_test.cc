// File recognition on files written here; TorchScript and torch.save archives made by
// PyTorch are covered in model_loading_test.cc.
#include "workers/engine/file_sniff.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace ompq::engine {
namespace {

class FileSniffTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (std::filesystem::path(::testing::TempDir()) / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  FileSniff Sniff(const std::string& bytes) {
    absl::StatusOr<FileSniff> sniff = SniffFile(Write("sniff.bin", bytes));
    EXPECT_TRUE(sniff.ok()) << sniff.status();
    return sniff.value_or(FileSniff{});
  }
};

TEST_F(FileSniffTest, RecognisesCommonFiles) {
  EXPECT_EQ(Sniff("").kind, FileKind::kEmpty);
  EXPECT_EQ(Sniff(std::string("\x93NUMPY\x01\x00", 8)).kind, FileKind::kNpy);
  EXPECT_EQ(Sniff(std::string("\x7f"
                              "ELF\x02\x01\x01\x00",
                              8))
                .kind,
            FileKind::kElf);
  EXPECT_EQ(Sniff(std::string("\x80\x04\x95\x00", 4)).kind, FileKind::kPickle);
  EXPECT_EQ(
      Sniff(std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e", 15)).kind,
      FileKind::kLegacyTorchSave);
  FileSniff text = Sniff("import torch\nprint(1)\n");
  EXPECT_EQ(text.kind, FileKind::kText);
  EXPECT_NE(text.description.find("import torch"), std::string::npos) << text.description;
  FileSniff png = Sniff(std::string("\x89PNG\r\n\x1a\n\x00\x00", 10));
  EXPECT_NE(png.description.find("PNG"), std::string::npos);
  FileSniff binary = Sniff(std::string("\x01\x02\x03\x00\xfe", 5));
  EXPECT_EQ(binary.kind, FileKind::kOtherBinary);
  EXPECT_NE(binary.description.find("01 02 03 00 fe"), std::string::npos) << binary.description;
  // A zip header with nothing behind it is a damaged zip, not a crash.
  EXPECT_NE(Sniff("PK\x03\x04garbage").description.find("damaged zip"), std::string::npos);
}

TEST_F(FileSniffTest, MissingFilesAndLimits) {
  EXPECT_EQ(SniffFile("/nonexistent/model.pt").status().code(), absl::StatusCode::kNotFound);
  const std::string path = Write("limit.bin", std::string(100, 'x'));
  EXPECT_EQ(ReadFileBytes(path, 99).status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<std::string> bytes = ReadFileBytes(path, 100);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, std::string(100, 'x'));
  EXPECT_FALSE(ListZipEntries(path).ok());
}

}  // namespace
}  // namespace ompq::engine
