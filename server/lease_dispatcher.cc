#include "server/lease_dispatcher.h"

#include <vector>

#include "absl/time/clock.h"
#include "common/logging.h"

namespace ompq {

LeaseDispatcher::LeaseDispatcher(JobManager* manager)
    : manager_(manager), thread_([this] { Run(); }) {}

LeaseDispatcher::~LeaseDispatcher() {
  Stop();
  if (thread_.joinable()) {
    thread_.join();
  }
}

uint64_t LeaseDispatcher::Add(Waiter waiter) {
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    id = next_id_++;
    if (!stop_) {
      waiters_.emplace_back(id, std::move(waiter));
      wake_ = true;  // A newcomer may find a job already queued.
      return id;
    }
  }
  waiter.done(std::nullopt);
  return id;
}

bool LeaseDispatcher::Remove(uint64_t id) {
  absl::MutexLock lock(&mu_);
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->first == id) {
      waiters_.erase(it);
      return true;
    }
  }
  return false;
}

void LeaseDispatcher::Wake() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

void LeaseDispatcher::Stop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
}

int64_t LeaseDispatcher::waiting() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(waiters_.size());
}

void LeaseDispatcher::Run() {
  while (true) {
    std::vector<Waiter> answer_no_job;
    bool try_leasing = false;
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      absl::Time next_deadline = absl::InfiniteFuture();
      for (const auto& entry : waiters_) {
        next_deadline = std::min(next_deadline, entry.second.deadline);
      }
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || wake_; };
      mu_.AwaitWithDeadline(absl::Condition(&ready), next_deadline);
      stopping = stop_;
      const absl::Time now = absl::Now();
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (stopping || it->second.deadline <= now) {
          answer_no_job.push_back(std::move(it->second));
          it = waiters_.erase(it);
        } else {
          ++it;
        }
      }
      try_leasing = wake_ && !waiters_.empty();
      wake_ = false;
    }
    for (Waiter& waiter : answer_no_job) {
      waiter.done(std::nullopt);
    }
    if (stopping) {
      return;
    }
    // Hand out jobs, longest-waiting worker first, until the queue runs dry.
    while (try_leasing) {
      std::pair<uint64_t, Waiter> entry;
      {
        absl::MutexLock lock(&mu_);
        if (waiters_.empty() || stop_) {
          break;
        }
        entry = std::move(waiters_.front());
        waiters_.pop_front();
      }
      Waiter& waiter = entry.second;
      if (waiter.is_cancelled()) {
        waiter.done(absl::CancelledError("the LeaseJob call was cancelled"));
        continue;
      }
      Outcome outcome = manager_->TryLeaseJob(waiter.worker_id, waiter.device);
      if (outcome.ok() && !outcome->has_value()) {
        // Nothing queued: park it again, first in line, and sleep until woken.
        absl::MutexLock lock(&mu_);
        waiters_.push_front(std::move(entry));
        break;
      }
      if (!outcome.ok()) {
        OMPQ_LOG(WARNING) << "leasing a job failed: " << outcome.status().ToString();
      }
      waiter.done(std::move(outcome));
    }
  }
}

}  // namespace ompq
