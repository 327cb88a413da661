// JobNotifier: tells in-process listeners that a job changed, so WatchJob streams and
// LeaseJob long polls react to changes instead of polling the store.
//
// Every successful job write in JobManager is published here. (With several server
// replicas on PostgreSQL, a LISTEN/NOTIFY feed will publish other replicas' writes too.)
#ifndef OMPQ_SERVER_JOB_NOTIFIER_H_
#define OMPQ_SERVER_JOB_NOTIFIER_H_

#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/job_store.h"

namespace ompq {

/// Receives the changes of one job. Calls come from the thread that made the change and
/// must not block or call back into the notifier.
class JobWatcher {
 public:
  virtual ~JobWatcher() = default;
  /// The job as stored after a change (versions can arrive out of order across threads).
  virtual void OnJobChanged(const JobRecord& record) = 0;
  /// The server is shutting down; no more changes will come.
  virtual void OnNotifierShutdown() = 0;
};

/// Fan-out of job changes.
class JobNotifier {
 public:
  JobNotifier() = default;
  JobNotifier(const JobNotifier&) = delete;
  JobNotifier& operator=(const JobNotifier&) = delete;

  /// Starts delivering changes of job `name` to `watcher`. After Shutdown(), calls
  /// watcher->OnNotifierShutdown() at once instead.
  void Subscribe(const std::string& name, JobWatcher* watcher);
  /// Stops delivery; once this returns, no call to `watcher` is running or will start.
  void Unsubscribe(const std::string& name, JobWatcher* watcher);
  /// Registers `listener`, called after every change that leaves a job QUEUED. Listeners
  /// live as long as the notifier.
  void AddQueuedListener(std::function<void()> listener);
  /// Delivers a change to the job's watchers and, if it is QUEUED, to the listeners.
  void Publish(const JobRecord& record);
  /// Ends every subscription (OnNotifierShutdown) and refuses new ones the same way.
  void Shutdown();
  /// Number of subscribed watchers.
  int watcher_count() const;

 private:
  mutable absl::Mutex mu_;
  std::set<std::pair<std::string, JobWatcher*>> watchers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> queued_listeners_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ompq

#endif  // OMPQ_SERVER_JOB_NOTIFIER_H_
