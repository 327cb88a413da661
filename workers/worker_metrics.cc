#include "workers/worker_metrics.h"

#include <torch/cuda.h>

#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/metric_buckets.h"

// Only a LibTorch built with CUDA has the caching allocator's library (c10_cuda); CMake
// defines this where it links one. Debian's LibTorch is CPU-only.
#ifdef OMPQ_WITH_CUDA_ALLOCATOR_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace ompq::worker {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// The CUDA device whose allocator this worker reports, or -1: none, or no way to read it.
int CudaDeviceOf(const std::string& device) {
#ifdef OMPQ_WITH_CUDA_ALLOCATOR_STATS
  if (device == "cpu" || !torch::cuda::is_available()) return -1;
  int index = 0;
  if (absl::StartsWith(device, "cuda:") && !absl::SimpleAtoi(device.substr(5), &index)) {
    return -1;
  }
  return index;
#else
  (void)device;
  return -1;
#endif
}

}  // namespace

// The registry's families plus the device-memory gauges, refreshed at each scrape so
// they show the allocator's state now, not at the last stage change.
class WorkerMetrics::Collector final : public prometheus::Collectable {
 public:
  explicit Collector(WorkerMetrics* metrics) : metrics_(metrics) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
#ifdef OMPQ_WITH_CUDA_ALLOCATOR_STATS
    if (metrics_->device_memory_ != nullptr) {
      try {
        // Index 0 is StatType::AGGREGATE (both pools).
        const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(metrics_->cuda_device_);
        metrics_->device_memory_->Add({{"kind", "allocated"}})
            .Set(static_cast<double>(stats.allocated_bytes[0].current));
        metrics_->device_memory_->Add({{"kind", "reserved"}})
            .Set(static_cast<double>(stats.reserved_bytes[0].current));
      } catch (const std::exception&) {
        // Before the first allocation on the device there is nothing to read; keep the
        // last values rather than failing the scrape.
      }
    }
#endif
    return metrics_->registry_->Collect();
  }

 private:
  WorkerMetrics* const metrics_;
};

WorkerMetrics::WorkerMetrics(const std::string& device)
    : registry_(std::make_shared<prometheus::Registry>()),
      jobs_(BuildCounter()
                .Name("ompq_worker_jobs_total")
                .Help("Leased jobs this worker ended, by result.")
                .Register(*registry_)),
      job_seconds_(BuildHistogram()
                       .Name("ompq_worker_job_seconds")
                       .Help("Time from a lease to the job's end on this worker.")
                       .Register(*registry_)),
      stage_seconds_(BuildHistogram()
                         .Name("ompq_worker_stage_seconds")
                         .Help("Time jobs spent in each stage on this worker.")
                         .Register(*registry_)),
      busy_(BuildGauge()
                .Name("ompq_worker_busy")
                .Help("1 while the worker runs a job, else 0.")
                .Register(*registry_)
                .Add({})),
      lease_polls_(BuildCounter()
                       .Name("ompq_worker_lease_polls_total")
                       .Help("LeaseJob long polls answered, by whether they brought a job.")
                       .Register(*registry_)),
      lease_errors_(BuildCounter()
                        .Name("ompq_worker_lease_errors_total")
                        .Help("LeaseJob calls that failed (server away or refusing).")
                        .Register(*registry_)
                        .Add({})),
      reconnects_(BuildCounter()
                      .Name("ompq_worker_reconnects_total")
                      .Help("Times the server answered again after failed LeaseJob calls.")
                      .Register(*registry_)
                      .Add({})),
      cuda_device_(CudaDeviceOf(device)),
      collector_(std::make_shared<Collector>(this)) {
  // Series that exist from the start, so dashboards and rate() see zeros, not gaps.
  for (const char* result : {job_result::kSucceeded, job_result::kFailed, job_result::kCancelled,
                             job_result::kAbandoned, job_result::kLost}) {
    jobs_.Add({{"result", result}});
  }
  lease_polls_.Add({{"result", "job"}});
  lease_polls_.Add({{"result", "empty"}});
  job_seconds_.Add({}, JobSecondsBuckets());
  if (cuda_device_ >= 0) {
    device_memory_ = &BuildGauge()
                          .Name("ompq_worker_device_memory_bytes")
                          .Help("CUDA caching allocator memory on the worker's device, by kind "
                                "(allocated: in tensors; reserved: held from the driver).")
                          .Register(*registry_);
  }
}

// The exposer goes first: its threads may be collecting.
WorkerMetrics::~WorkerMetrics() { exposer_.reset(); }

absl::StatusOr<int> WorkerMetrics::Serve(const std::string& address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on --metrics-listen ",
                                               address, ": ", e.what(),
                                               "; pick another address, or leave it empty"));
  }
  exposer_->RegisterCollectable(collector_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void WorkerMetrics::LeasePolled(bool got_job) {
  lease_polls_.Add({{"result", got_job ? "job" : "empty"}}).Increment();
}

void WorkerMetrics::LeaseError() { lease_errors_.Increment(); }

void WorkerMetrics::Reconnected() { reconnects_.Increment(); }

void WorkerMetrics::JobStarted() { busy_.Set(1); }

void WorkerMetrics::JobFinished(absl::string_view result, absl::Duration duration) {
  jobs_.Add({{"result", std::string(result)}}).Increment();
  job_seconds_.Add({}, JobSecondsBuckets()).Observe(absl::ToDoubleSeconds(duration));
  busy_.Set(0);
}

void WorkerMetrics::ObserveStage(v1::Stage stage, absl::Duration duration) {
  stage_seconds_.Add({{"stage", v1::Stage_Name(stage)}}, StageSecondsBuckets())
      .Observe(absl::ToDoubleSeconds(duration));
}

}  // namespace ompq::worker
