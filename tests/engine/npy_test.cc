// The .npy parser on hand-built bytes: valid layouts, every header error, truncation.
#include "workers/engine/npy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "common/job_error.h"

namespace ompq::engine {
namespace {

// A .npy file with the header dict `dict` (padded as numpy pads it) followed by `data`.
std::string Npy(const std::string& dict, const std::string& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  const size_t length = header.size();
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i)
    out += static_cast<char>((length >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Floats(std::initializer_list<float> values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.begin(), bytes.size());
  return bytes;
}

void ExpectInvalid(const std::string& bytes, const std::string& fragment) {
  absl::StatusOr<NpyArray> array = ParseNpy(bytes);
  ASSERT_FALSE(array.ok()) << "parsed bytes that should fail (" << fragment << ")";
  EXPECT_EQ(array.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(array.status()), reason::kInvalidInput);
  EXPECT_NE(array.status().message().find(fragment), absl::string_view::npos)
      << array.status().message();
}

TEST(NpyTest, ParsesFloat32CArray) {
  const std::string data = Floats({1, 2, 3, 4, 5, 6});
  absl::StatusOr<NpyArray> array =
      ParseNpy(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data));
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->dtype, NpyDtype::kFloat32);
  EXPECT_EQ(array->item_size, 4);
  EXPECT_FALSE(array->fortran_order);
  EXPECT_FALSE(array->big_endian);
  EXPECT_EQ(array->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(array->NumElements(), 6);
  EXPECT_EQ(array->data, data);
}

TEST(NpyTest, ParsesVersion2FortranBigEndianAndOddSpacing) {
  const std::string data(8 * 3, '\x01');
  absl::StatusOr<NpyArray> array =
      ParseNpy(Npy("{\"shape\":(3,),\"fortran_order\":True,\"descr\":\">i8\"}", data, /*major=*/2));
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->dtype, NpyDtype::kInt64);
  EXPECT_TRUE(array->big_endian);
  EXPECT_TRUE(array->fortran_order);
  EXPECT_EQ(array->shape, (std::vector<int64_t>{3}));
}

TEST(NpyTest, ParsesScalarsEmptyArraysAndEveryDtype) {
  absl::StatusOr<NpyArray> scalar = ParseNpy(
      Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", std::string(8, '\0')));
  ASSERT_TRUE(scalar.ok()) << scalar.status();
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->NumElements(), 1);

  absl::StatusOr<NpyArray> empty =
      ParseNpy(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", ""));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->NumElements(), 0);

  const std::pair<const char*, NpyDtype> cases[] = {
      {"|b1", NpyDtype::kBool},   {"|i1", NpyDtype::kInt8},   {"|u1", NpyDtype::kUInt8},
      {"<i2", NpyDtype::kInt16},  {"<u2", NpyDtype::kUInt16}, {"<i4", NpyDtype::kInt32},
      {"<u4", NpyDtype::kUInt32}, {"<u8", NpyDtype::kUInt64}, {"<f2", NpyDtype::kFloat16},
  };
  for (const auto& [descr, dtype] : cases) {
    const int size = descr[2] - '0';
    absl::StatusOr<NpyArray> array = ParseNpy(
        Npy(std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (2,), }",
            std::string(2 * size, '\0')));
    ASSERT_TRUE(array.ok()) << descr << ": " << array.status();
    EXPECT_EQ(array->dtype, dtype) << descr;
    EXPECT_STRNE(NpyDtypeName(array->dtype), "unknown");
  }
}

TEST(NpyTest, RefusesMalformedHeaders) {
  const std::string four = Floats({1, 2, 3, 4});
  ExpectInvalid("", "magic");
  ExpectInvalid("\x93NUMPZ\x01\x00\x10\x00", "magic");
  ExpectInvalid(std::string("\x93NUMPY\x04\x00\x10\x00", 10) + std::string(16, ' '), "version 4");
  ExpectInvalid(std::string("\x93NUMPY\x01\x00\xff\x00{}", 12), "longer than the file");
  ExpectInvalid(Npy("['descr', '<f4']", four), "not a dict");
  ExpectInvalid(Npy("{'descr': '<c8', 'fortran_order': False, 'shape': (4,), }", four), "<c8");
  ExpectInvalid(Npy("{'descr': '|O', 'fortran_order': False, 'shape': (4,), }", four), "|O");
  ExpectInvalid(Npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }", four),
                "structured");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': 0, 'shape': (4,), }", four),
                "True or False");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }", four), "shape");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4, , ), }", four), "shape");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': [4], }", four), "shape");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, }", four), "lacks");
  ExpectInvalid(
      Npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", four),
      "repeated");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", four),
                "'x'");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} extra", four),
                "trailing");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,", four), "shape");
  ExpectInvalid(Npy("{'descr': '<f4, 'fortran_order': False, 'shape': (4,), }", four), "");
  // Element counts that overflow int64 or the byte count.
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': "
                    "(4294967296, 4294967296, 4), }",
                    four),
                "too many");
  ExpectInvalid(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': "
                    "(99999999999999999999,), }",
                    four),
                "shape");
  ExpectInvalid(Npy("{'descr': '<f8', 'fortran_order': False, 'shape': "
                    "(2305843009213693952,), }",
                    four),
                "too many");
}

TEST(NpyTest, RefusesDataOfTheWrongLength) {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
  ExpectInvalid(Npy(dict, Floats({1, 2, 3})), "promises 16 data bytes but the file holds 12");
  ExpectInvalid(Npy(dict, Floats({1, 2, 3, 4, 5})), "holds 20");
}

// Every prefix of a valid file and every single-byte corruption of its header must give
// a status, never a crash (the fuzzer goes further; this keeps the basics in ctest).
TEST(NpyTest, TruncationsAndCorruptionsNeverCrash) {
  const std::string good =
      Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", Floats({1, 2, 3, 4}));
  ASSERT_TRUE(ParseNpy(good).ok());
  for (size_t length = 0; length < good.size(); ++length) {
    EXPECT_FALSE(ParseNpy(good.substr(0, length)).ok()) << "prefix of length " << length;
  }
  int accepted = 0;
  for (size_t i = 0; i < good.size() - 16; ++i) {
    for (unsigned char value : {0x00, 0x20, 0x27, 0x29, 0x2c, 0x39, 0x7b, 0xff}) {
      std::string corrupt = good;
      corrupt[i] = static_cast<char>(value);
      absl::StatusOr<NpyArray> array = ParseNpy(corrupt);
      if (array.ok()) {
        ++accepted;
        EXPECT_EQ(static_cast<size_t>(array->NumElements()) * array->item_size, array->data.size());
      }
    }
  }
  EXPECT_GT(accepted, 0);  // Padding spaces may change harmlessly; the check above ran.
}

}  // namespace
}  // namespace ompq::engine
