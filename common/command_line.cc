#include "common/command_line.h"

#include <algorithm>
#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace ompq {

std::vector<char*> ParseDashedCommandLine(int argc, char** argv, absl::string_view flags_file) {
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [suffix = std::string(flags_file)](absl::string_view file) {
    return absl::EndsWith(file, suffix);
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);

  // The rewritten arguments live as long as the process: the returned pointers point
  // into them.
  static auto* storage = new std::vector<std::string>(argv, argv + argc);
  for (size_t i = 1; i < storage->size(); ++i) {
    std::string& arg = (*storage)[i];
    if (arg == "--") break;  // Everything after is positional.
    if (arg.size() < 3 || !absl::StartsWith(arg, "--")) continue;
    const size_t name_end = std::min(arg.find('='), arg.size());
    std::replace(arg.begin() + 2, arg.begin() + static_cast<std::ptrdiff_t>(name_end), '-', '_');
  }
  std::vector<char*> args;
  args.reserve(storage->size() + 1);
  for (std::string& arg : *storage) args.push_back(arg.data());
  args.push_back(nullptr);  // argv[argc] is null, as parsers may rely on.
  return absl::ParseCommandLine(argc, args.data());
}

}  // namespace ompq
