// Calibration files written by torch.save and numpy: every format gives the same tensor,
// every bad file a clear INVALID_INPUT.
#include "workers/engine/tensor_io.h"

#include <gtest/gtest.h>
#include <zip.h>

#include <filesystem>
#include <fstream>

#include "common/job_error.h"
#include "tests/engine/test_models.h"
#include "workers/engine/file_sniff.h"

namespace ompq::engine {
namespace {

using testing::ModelFile;

CalibrationData Load(const std::string& name) {
  absl::StatusOr<CalibrationData> data = LoadCalibrationFile(ModelFile(name));
  EXPECT_TRUE(data.ok()) << name << ": " << data.status();
  return data.ok() ? *data : CalibrationData{};
}

void ExpectInvalidInput(const std::string& path, const std::string& fragment) {
  absl::Status status = LoadCalibrationFile(path).status();
  ASSERT_FALSE(status.ok()) << path;
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(ReasonOf(status), reason::kInvalidInput) << status;
  EXPECT_NE(status.message().find(fragment), absl::string_view::npos)
      << "'" << fragment << "' not in: " << status.message();
}

TEST(TensorIoTest, AllFormatsGiveTheSameInputs) {
  CalibrationData pt = Load("calib_images.pt");
  ASSERT_TRUE(pt.inputs.defined());
  EXPECT_EQ(pt.inputs.sizes(), (std::vector<int64_t>{20, 3, 64, 64}));
  EXPECT_EQ(pt.inputs.scalar_type(), torch::kFloat);
  EXPECT_FALSE(pt.labels.has_value());
  // torch.randn values, not zeros: the comparison below means something.
  EXPECT_GT(pt.inputs.abs().sum().item<double>(), 0.0);

  for (const char* name : {"calib_images_dict.pt", "calib_images.npy", "calib_images.npz"}) {
    CalibrationData other = Load(name);
    ASSERT_TRUE(other.inputs.defined()) << name;
    EXPECT_TRUE(torch::equal(pt.inputs, other.inputs)) << name;
  }
  CalibrationData dict = Load("calib_images_dict.pt");
  CalibrationData npz = Load("calib_images.npz");
  ASSERT_TRUE(dict.labels.has_value());
  ASSERT_TRUE(npz.labels.has_value());
  EXPECT_EQ(dict.labels->sizes(), (std::vector<int64_t>{20}));
  EXPECT_TRUE(torch::equal(*dict.labels, *npz.labels));

  CalibrationData sequence = Load("calib_sequence.npz");
  EXPECT_EQ(sequence.inputs.sizes(), (std::vector<int64_t>{20, 8, 20}));
}

TEST(TensorIoTest, NumpyLayoutsAndDtypes) {
  const torch::Tensor arange = torch::arange(24).reshape({2, 3, 4});
  struct Case {
    const char* name;
    torch::ScalarType type;
    int64_t offset;
  };
  const Case cases[] = {
      {"npy_f4.npy", torch::kFloat, 0},
      {"npy_f8_fortran.npy", torch::kFloat, 0},  // float64 becomes float32
      {"npy_i4_big.npy", torch::kInt, 0},        // big-endian, byte-swapped
      {"npy_u2.npy", torch::kInt, 65500},        // uint16 widened to int32, no sign wrap
      {"npy_u1.npy", torch::kByte, 0},
  };
  for (const Case& c : cases) {
    CalibrationData data = Load(c.name);
    ASSERT_TRUE(data.inputs.defined()) << c.name;
    EXPECT_EQ(data.inputs.scalar_type(), c.type) << c.name;
    EXPECT_TRUE(data.inputs.is_contiguous()) << c.name;
    EXPECT_TRUE(torch::equal(data.inputs.to(torch::kLong), arange + c.offset)) << c.name << "\n"
                                                                               << data.inputs;
  }
}

TEST(TensorIoTest, RefusesFilesThatAreNotCalibrationData) {
  ExpectInvalidInput(ModelFile("calib_legacy.pt"), "legacy torch.save() format");
  ExpectInvalidInput(ModelFile("state_dict.pt"), "cannot read torch.save() file 'state_dict.pt'");
  ExpectInvalidInput(ModelFile("calib_wrong_keys.pt"),
                     "dict without an 'inputs' tensor (keys: images, targets)");
  ExpectInvalidInput(ModelFile("resnet18.pt"), "is a TorchScript model, not calibration data");
  ExpectInvalidInput(ModelFile("random.bin"), "is not calibration data: it is unrecognised binary");
  ExpectInvalidInput(ModelFile("empty.pt"), "an empty file");
  ExpectInvalidInput(ModelFile("calib_list.pt"), "cannot read torch.save() file 'calib_list.pt'");
  ExpectInvalidInput(ModelFile("calib_tuple.pt"),
                     "holds a Tuple; expected a Tensor or a dict with keys 'inputs' and 'labels'");
  ExpectInvalidInput(ModelFile("missing.npy"), "cannot read calibration file");
}

class TensorIoFileTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (std::filesystem::path(::testing::TempDir()) / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
};

TEST_F(TensorIoFileTest, DamagedFilesGiveInvalidInput) {
  absl::StatusOr<std::string> npy = ReadFileBytes(ModelFile("npy_f4.npy"), 1 << 20);
  ASSERT_TRUE(npy.ok());
  ExpectInvalidInput(Write("short.npy", npy->substr(0, npy->size() - 1)), "data bytes");

  absl::StatusOr<std::string> pt = ReadFileBytes(ModelFile("calib_images.pt"), 1 << 30);
  ASSERT_TRUE(pt.ok());
  // A torch.save archive cut in half, and one with its middle overwritten.
  ExpectInvalidInput(Write("half.pt", pt->substr(0, pt->size() / 2)), "");
  std::string scribbled = *pt;
  std::fill(scribbled.begin() + 200, scribbled.begin() + 400, '\x5a');
  absl::Status status = LoadCalibrationFile(Write("scribbled.pt", scribbled)).status();
  EXPECT_EQ(ReasonOf(status), reason::kInvalidInput) << status;

  absl::StatusOr<std::string> npz = ReadFileBytes(ModelFile("calib_sequence.npz"), 1 << 30);
  ASSERT_TRUE(npz.ok());
  ExpectInvalidInput(Write("half.npz", npz->substr(0, npz->size() / 2)), "");
}

TEST(TensorIoTest, BoolArraysHoldOnlyTrueAndFalse) {
  // numpy keeps any byte in a bool array (np.arange(24, dtype=np.uint8).view(bool) saves
  // bytes 0..23); found by fuzz_calibration_file: such bytes must not reach LibTorch as
  // bools other than 0/1. The uint8 file with its descr renamed is exactly that file.
  absl::StatusOr<std::string> bytes = ReadFileBytes(ModelFile("npy_u1.npy"), 1 << 20);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const size_t descr = bytes->find("'|u1'");
  ASSERT_NE(descr, std::string::npos);
  bytes->replace(descr, 5, "'|b1'");
  absl::StatusOr<torch::Tensor> tensor = ParseNpyTensor(*bytes);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_EQ(tensor->scalar_type(), torch::kBool);
  const torch::Tensor raw = tensor->contiguous().view(torch::kByte);
  EXPECT_TRUE(torch::equal(raw, torch::arange(24).reshape({2, 3, 4}).ne(0).to(torch::kByte)))
      << raw;
}

TEST_F(TensorIoFileTest, PickleWithAHugeMemoIdIsRefusedBeforeLibTorchReadsIt) {
  // Found by fuzz_calibration_file: LibTorch's unpickler grows its memo table to the id of
  // a LONG_BINPUT (16 bytes per entry), so 5 bytes asked it for 32 GiB. A real torch.save
  // archive with its data.pkl replaced by: PROTO 2, EMPTY_LIST, LONG_BINPUT 0x7fffffff, STOP.
  const std::string path = (std::filesystem::path(::testing::TempDir()) / "memo.pt").string();
  std::filesystem::copy_file(ModelFile("calib_images.pt"), path,
                             std::filesystem::copy_options::overwrite_existing);
  int error = 0;
  zip_t* archive = zip_open(path.c_str(), 0, &error);
  ASSERT_NE(archive, nullptr);
  std::string pkl;
  for (zip_int64_t i = 0; i < zip_get_num_entries(archive, 0); ++i) {
    const std::string name = zip_get_name(archive, static_cast<zip_uint64_t>(i), 0);
    if (name.size() > 9 && name.substr(name.size() - 9) == "/data.pkl") pkl = name;
  }
  ASSERT_FALSE(pkl.empty());
  static const char kPickle[] = "\x80\x02]r\xff\xff\xff\x7f.";
  zip_source_t* source = zip_source_buffer(archive, kPickle, sizeof(kPickle) - 1, 0);
  ASSERT_GE(zip_file_add(archive, pkl.c_str(), source, ZIP_FL_OVERWRITE), 0);
  ASSERT_EQ(zip_close(archive), 0);
  ExpectInvalidInput(path, "memo id out of range");
}

TEST_F(TensorIoFileTest, ZeroDimensionalArraysAreRefused) {
  // np.save(f, np.float32(1.5)) : a 0-d array has no sample dimension.
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size());
  bytes += '\0';
  const float value = 1.5f;
  bytes += header + std::string(reinterpret_cast<const char*>(&value), 4);
  ExpectInvalidInput(Write("scalar.npy", bytes), "at least one sample");
}

}  // namespace
}  // namespace ompq::engine
