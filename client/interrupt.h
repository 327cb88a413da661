// Ctrl-C while ompqctl waits on a job: caught and turned into a flag, so the command can
// stop watching, leave the job running and say how to reattach.
#ifndef OMPQ_CLIENT_INTERRUPT_H_
#define OMPQ_CLIENT_INTERRUPT_H_

#include <atomic>
#include <csignal>

namespace ompq::client {

/// While alive, SIGINT sets flag() instead of killing the process; the previous handler
/// is restored on destruction. One instance at a time.
class ScopedInterruptCatcher {
 public:
  ScopedInterruptCatcher();
  ~ScopedInterruptCatcher();
  ScopedInterruptCatcher(const ScopedInterruptCatcher&) = delete;
  ScopedInterruptCatcher& operator=(const ScopedInterruptCatcher&) = delete;

  /// Becomes true once Ctrl-C was pressed.
  const std::atomic<bool>* flag() const;

 private:
  struct sigaction previous_;
};

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_INTERRUPT_H_
