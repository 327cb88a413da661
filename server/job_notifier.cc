#include "server/job_notifier.h"

namespace ompq {

void JobNotifier::Subscribe(const std::string& name, JobWatcher* watcher) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) {
    watcher->OnNotifierShutdown();
    return;
  }
  watchers_.emplace(name, watcher);
}

void JobNotifier::Unsubscribe(const std::string& name, JobWatcher* watcher) {
  // Taking mu_ waits for a Publish() that may be calling this watcher.
  absl::MutexLock lock(&mu_);
  watchers_.erase({name, watcher});
}

void JobNotifier::AddQueuedListener(std::function<void()> listener) {
  absl::MutexLock lock(&mu_);
  queued_listeners_.push_back(std::move(listener));
}

void JobNotifier::Publish(const JobRecord& record) {
  // Watchers are called under mu_ so Unsubscribe() can promise no call is in flight;
  // their callbacks only queue work and never call back in.
  absl::MutexLock lock(&mu_);
  const std::string& name = record.job.name();
  for (auto it = watchers_.lower_bound({name, nullptr}); it != watchers_.end() && it->first == name;
       ++it) {
    it->second->OnJobChanged(record);
  }
  if (record.job.state() == v1::QUEUED) {
    for (const auto& listener : queued_listeners_) {
      listener();
    }
  }
}

void JobNotifier::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (const auto& [name, watcher] : watchers_) {
    watcher->OnNotifierShutdown();
  }
  watchers_.clear();
}

int JobNotifier::watcher_count() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(watchers_.size());
}

}  // namespace ompq
