// Command-line parsing shared by ompq-server and ompq-worker (absl flags).
#ifndef OMPQ_COMMON_COMMAND_LINE_H_
#define OMPQ_COMMON_COMMAND_LINE_H_

#include <vector>

#include "absl/strings/string_view.h"

namespace ompq {

/// Parses the absl flags of argv and returns the positional arguments (argv[0] first).
///
/// absl flag names are identifiers (--data_dir), but ompq documents dashes (--data-dir):
/// both spellings are accepted by rewriting the names before absl sees them. --help and
/// --helpshort list the flags defined in the file whose path ends with `flags_file`
/// (e.g. "server/main.cc"): absl's default looks for a file named like the program,
/// which ompq's main.cc files are not.
std::vector<char*> ParseDashedCommandLine(int argc, char** argv, absl::string_view flags_file);

}  // namespace ompq

#endif  // OMPQ_COMMON_COMMAND_LINE_H_
