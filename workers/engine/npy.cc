#include "workers/engine/npy.h"

#include <cstring>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/job_error.h"

namespace ompq::engine {
namespace {

// numpy's own limit on the number of dimensions.
constexpr size_t kMaxDims = 64;

absl::Status Invalid(absl::string_view detail) {
  return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                    absl::StrCat("malformed .npy data: ", detail));
}

// A cursor over the header, a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (32, 3, 224, 224), }
// Only the three keys numpy writes are understood; anything else is an error.
class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view text) : text_(text) {}

  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ == text_.size();
  }
  std::optional<std::string> String() {
    SkipSpace();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) return std::nullopt;
    char quote = text_[pos_++];
    size_t end = text_.find(quote, pos_);
    if (end == absl::string_view::npos) return std::nullopt;
    std::string value(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return value;
  }
  std::optional<bool> Bool() {
    SkipSpace();
    for (auto [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
      size_t n = std::strlen(word);
      if (text_.substr(pos_, n) == word) {
        pos_ += n;
        return value;
      }
    }
    return std::nullopt;
  }
  // A non-negative decimal integer (numpy may write "3L" in Python 2 era files).
  std::optional<int64_t> Dim() {
    SkipSpace();
    size_t start = pos_;
    int64_t value = 0;
    while (pos_ < text_.size() && absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_]))) {
      int digit = text_[pos_++] - '0';
      if (value > (INT64_MAX - digit) / 10) return std::nullopt;
      value = value * 10 + digit;
    }
    if (pos_ == start) return std::nullopt;
    if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;
    return value;
  }
  // "(a, b, c)", "(a,)" or "()".
  std::optional<std::vector<int64_t>> Shape() {
    if (!Consume('(')) return std::nullopt;
    std::vector<int64_t> dims;
    if (Consume(')')) return dims;
    while (true) {
      std::optional<int64_t> dim = Dim();
      if (!dim || dims.size() >= kMaxDims) return std::nullopt;
      dims.push_back(*dim);
      if (Consume(')')) return dims;
      if (!Consume(',')) return std::nullopt;
      if (Consume(')')) return dims;
    }
  }

 private:
  absl::string_view text_;
  size_t pos_ = 0;
};

struct DtypeInfo {
  char kind;
  int size;
  NpyDtype dtype;
};
constexpr DtypeInfo kDtypes[] = {
    {'b', 1, NpyDtype::kBool},    {'i', 1, NpyDtype::kInt8},    {'u', 1, NpyDtype::kUInt8},
    {'i', 2, NpyDtype::kInt16},   {'u', 2, NpyDtype::kUInt16},  {'i', 4, NpyDtype::kInt32},
    {'u', 4, NpyDtype::kUInt32},  {'i', 8, NpyDtype::kInt64},   {'u', 8, NpyDtype::kUInt64},
    {'f', 2, NpyDtype::kFloat16}, {'f', 4, NpyDtype::kFloat32}, {'f', 8, NpyDtype::kFloat64},
};

absl::Status ParseDescr(const std::string& descr, NpyArray& array) {
  // "<f4": byte order ('<' little, '>' big, '|' not applicable, '=' native) then kind+size.
  if (descr.size() < 3 || std::strchr("<>|=", descr[0]) == nullptr) {
    return Invalid(absl::StrCat("unsupported dtype '", descr,
                                "' (structured, object and string arrays are not inputs)"));
  }
  int size = 0;
  for (size_t i = 2; i < descr.size(); ++i) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(descr[i])) || size > 1000) {
      return Invalid(absl::StrCat("unsupported dtype '", descr, "'"));
    }
    size = size * 10 + (descr[i] - '0');
  }
  for (const DtypeInfo& info : kDtypes) {
    if (info.kind == descr[1] && info.size == size) {
      array.dtype = info.dtype;
      array.item_size = size;
      array.big_endian = descr[0] == '>' && size > 1;
      return absl::OkStatus();
    }
  }
  return Invalid(absl::StrCat("unsupported dtype '", descr,
                              "' (use bool, int8-64, uint8-64, float16, float32 or float64)"));
}

absl::Status ParseHeader(absl::string_view header, NpyArray& array) {
  HeaderParser parser(header);
  if (!parser.Consume('{')) return Invalid("header is not a dict literal");
  bool have_descr = false, have_order = false, have_shape = false;
  while (!parser.Consume('}')) {
    std::optional<std::string> key = parser.String();
    if (!key || !parser.Consume(':')) return Invalid("header dict has a malformed key");
    if (*key == "descr" && !have_descr) {
      std::optional<std::string> descr = parser.String();
      if (!descr) return Invalid("'descr' is not a string (structured dtypes are unsupported)");
      absl::Status status = ParseDescr(*descr, array);
      if (!status.ok()) return status;
      have_descr = true;
    } else if (*key == "fortran_order" && !have_order) {
      std::optional<bool> order = parser.Bool();
      if (!order) return Invalid("'fortran_order' is not True or False");
      array.fortran_order = *order;
      have_order = true;
    } else if (*key == "shape" && !have_shape) {
      std::optional<std::vector<int64_t>> shape = parser.Shape();
      if (!shape) return Invalid("'shape' is not a tuple of non-negative integers");
      array.shape = std::move(*shape);
      have_shape = true;
    } else {
      return Invalid(absl::StrCat("unexpected or repeated header key '", *key, "'"));
    }
    if (!parser.Consume(',')) {
      if (!parser.Consume('}')) return Invalid("header dict is not closed");
      break;
    }
  }
  if (!parser.AtEnd()) return Invalid("trailing characters after the header dict");
  if (!have_descr || !have_order || !have_shape) {
    return Invalid("header lacks one of 'descr', 'fortran_order', 'shape'");
  }
  return absl::OkStatus();
}

}  // namespace

int64_t NpyArray::NumElements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

const char* NpyDtypeName(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::kBool:
      return "bool";
    case NpyDtype::kInt8:
      return "int8";
    case NpyDtype::kUInt8:
      return "uint8";
    case NpyDtype::kInt16:
      return "int16";
    case NpyDtype::kUInt16:
      return "uint16";
    case NpyDtype::kInt32:
      return "int32";
    case NpyDtype::kUInt32:
      return "uint32";
    case NpyDtype::kInt64:
      return "int64";
    case NpyDtype::kUInt64:
      return "uint64";
    case NpyDtype::kFloat16:
      return "float16";
    case NpyDtype::kFloat32:
      return "float32";
    case NpyDtype::kFloat64:
      return "float64";
  }
  return "unknown";
}

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes) {
  // Layout: "\x93NUMPY", major, minor, header length (2 bytes in 1.0, 4 in 2.0/3.0,
  // little-endian), header text, array data.
  constexpr absl::string_view kMagic("\x93NUMPY", 6);
  if (bytes.size() < 10 || bytes.substr(0, 6) != kMagic) {
    return Invalid("missing the \\x93NUMPY magic (not a .npy file)");
  }
  const unsigned char major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, prefix = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) |
                 (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return Invalid("truncated header");
    for (int i = 3; i >= 0; --i) {
      header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    }
    prefix = 12;
  } else {
    return Invalid(absl::StrFormat("unsupported format version %d", major));
  }
  if (header_len > bytes.size() - prefix) return Invalid("header is longer than the file");

  NpyArray array;
  absl::Status status = ParseHeader(bytes.substr(prefix, header_len), array);
  if (!status.ok()) return status;

  uint64_t count = 1;
  for (int64_t dim : array.shape) {
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(dim), &count) ||
        count > static_cast<uint64_t>(INT64_MAX)) {
      return Invalid("shape has too many elements");
    }
  }
  uint64_t data_bytes = 0;
  if (__builtin_mul_overflow(count, static_cast<uint64_t>(array.item_size), &data_bytes)) {
    return Invalid("shape has too many elements");
  }
  absl::string_view data = bytes.substr(prefix + header_len);
  if (data.size() != data_bytes) {
    return Invalid(absl::StrFormat("header promises %d data bytes but the file holds %d",
                                   data_bytes, data.size()));
  }
  array.data = data;
  return array;
}

}  // namespace ompq::engine
