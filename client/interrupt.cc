#include "client/interrupt.h"

namespace ompq::client {
namespace {

// Lock-free, so setting it is safe inside a signal handler.
std::atomic<bool> interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void OnInterrupt(int /*signal*/) { interrupted.store(true); }

}  // namespace

ScopedInterruptCatcher::ScopedInterruptCatcher() {
  interrupted.store(false);
  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous_);
}

ScopedInterruptCatcher::~ScopedInterruptCatcher() { sigaction(SIGINT, &previous_, nullptr); }

const std::atomic<bool>* ScopedInterruptCatcher::flag() const { return &interrupted; }

}  // namespace ompq::client
