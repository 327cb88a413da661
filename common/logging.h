// A tiny stderr logger: "2025-01-02T03:04:05.678Z I server.cc:42] message".
//
// Debian's abseil (20220623) has no absl/log, and the binaries only need lines on stderr
// that a supervisor or journald can collect. Usage:
//   OMPQ_LOG(INFO) << "listening on " << port;
#ifndef OMPQ_COMMON_LOGGING_H_
#define OMPQ_COMMON_LOGGING_H_

#include <sstream>

namespace ompq {

/// Severity of a log line.
enum class LogLevel { kInfo, kWarning, kError };

/// Collects one line and writes it to stderr, whole, when destroyed.
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  /// The stream the line is built in.
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace ompq

#define OMPQ_LOG_LEVEL_INFO ::ompq::LogLevel::kInfo
#define OMPQ_LOG_LEVEL_WARNING ::ompq::LogLevel::kWarning
#define OMPQ_LOG_LEVEL_ERROR ::ompq::LogLevel::kError

/// Logs one line at INFO, WARNING or ERROR.
#define OMPQ_LOG(level) ::ompq::LogLine(OMPQ_LOG_LEVEL_##level, __FILE__, __LINE__).stream()

#endif  // OMPQ_COMMON_LOGGING_H_
