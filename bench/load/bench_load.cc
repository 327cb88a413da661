// bench_load: how fast a real ompq-server answers the job API under concurrent clients,
// compared with a no-op RPC on the same server in the same run, and how fast blobs move
// compared with copying the same file on disk. A benchmark, not a test: it asserts nothing
// about speed, only that every RPC succeeded. See docs/benchmarks.md "Load".
//
//   bench_load --server_binary build/bin/ompq-server [--database postgresql://...]
//              [--clients 1,2,4,8,16,32,64] [--seconds 1] [--rounds 3]
//              [--blob_mib 256] [--blob_repeats 5] [--job_api=false: blobs only]
//
// Each store gets its own ompq-server process (--workers 0, a fresh --data-dir, loopback,
// a free port): SQLite always, PostgreSQL when --database is given. For every client count
// and round the four RPCs run one after another, each for --seconds or --max_calls,
// whichever comes first: grpc.health.v1.Health/Check (the no-op: answered from memory,
// no store), CreateJob (distinct request ids), GetJob (names of created jobs) and ListJobs
// (first page). Every client is a thread with its own channel (its own TCP connection)
// and a blocking stub. The server's CPU time per call comes from /proc/PID/stat.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "rpc/blob_transfer.h"
#include "rpc/channel.h"
#include "common/digest.h"
#include "health.grpc.pb.h"
#include "ompq/v1/blob_service.grpc.pb.h"
#include "ompq/v1/quantization_service.grpc.pb.h"

ABSL_FLAG(std::string, server_binary, "", "path of ompq-server (required)");
ABSL_FLAG(std::string, database, "", "PostgreSQL URL for the second server; empty: SQLite only");
ABSL_FLAG(std::string, clients, "1,2,4,8,16,32,64", "concurrent client counts");
ABSL_FLAG(double, seconds, 1.0, "seconds per (client count, RPC, round) point");
ABSL_FLAG(int, rounds, 3, "rounds per client count (medians are reported)");
ABSL_FLAG(int64_t, max_calls, 50000, "calls per point at most");
ABSL_FLAG(std::string, rpcs, "CreateJob,GetJob,ListJobs",
          "RPCs to measure besides the no-op (for profiling one alone)");
ABSL_FLAG(int, page_size, 50, "ListJobs page size");
ABSL_FLAG(int, seed_jobs, 500, "jobs created before measuring (so listings are full)");
ABSL_FLAG(int64_t, blob_mib, 256, "size of the blob transfer file in MiB; 0 skips blobs");
ABSL_FLAG(int, blob_repeats, 5, "repeats of each blob and disk-copy measurement");
ABSL_FLAG(bool, job_api, true, "measure the job API (false: blob transfers only)");
ABSL_FLAG(bool, hot_pages, true,
          "before each blob measurement, write and delete a scratch file as large as the "
          "blob, so every measurement writes into recently freed memory (see RunBlobs)");
ABSL_FLAG(std::string, work_dir, "",
          "scratch directory (server data, files); default: a new one under /var/tmp");
ABSL_FLAG(bool, keep, false, "keep the scratch directory");

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using ompq::v1::BlobService;
using ompq::v1::QuantizationService;
using HealthStub = grpc::health::v1::Health::Stub;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "bench_load: " << message << "\n";
  std::exit(1);
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return absl::StrCat(one, " ", five, " ", fifteen);
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double Percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()));
  return sorted[index];
}

// ---- The server process ----

struct ServerProcess {
  pid_t pid = -1;
  std::string address;
  std::string log;
};

ServerProcess StartServer(const std::string& binary, const std::string& data_dir,
                          const std::string& database) {
  fs::create_directories(data_dir);
  ServerProcess server;
  server.log = data_dir + "/server.log";
  const std::string port_file = data_dir + "/port";
  std::vector<std::string> args = {binary, "--listen=127.0.0.1:0", "--port-file=" + port_file,
                                   "--workers=0", "--metrics-listen=", "--data-dir=" + data_dir,
                                   // CreateJob runs queue far more than the default 10000.
                                   "--max-queued-jobs=100000000"};
  if (!database.empty()) args.push_back("--database=" + database);
  server.pid = fork();
  if (server.pid < 0) Die("fork failed");
  if (server.pid == 0) {
    const int fd = ::open(server.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  const auto start = Clock::now();
  while (SecondsSince(start) < 60) {
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port && port > 0) {
      server.address = absl::StrCat("127.0.0.1:", port);
      return server;
    }
    int status = 0;
    if (waitpid(server.pid, &status, WNOHANG) == server.pid) {
      std::ifstream log(server.log);
      std::cerr << log.rdbuf();
      Die("ompq-server exited during start; its log is above");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(server.pid, SIGKILL);
  Die("ompq-server did not write its port within 60 s");
}

void StopServer(ServerProcess& server) {
  kill(server.pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 300; ++i) {
    if (waitpid(server.pid, &status, WNOHANG) == server.pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(server.pid, SIGKILL);
  waitpid(server.pid, &status, 0);
}

// ---- Clients ----

// One client: its own channel (a separate TCP connection, like a separate process).
struct Client {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<HealthStub> health;
  std::unique_ptr<QuantizationService::Stub> jobs;
};

std::vector<Client> MakeClients(const std::string& address, int n) {
  std::vector<Client> clients(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // No sharing of connections.
    Client& c = clients[static_cast<size_t>(i)];
    c.channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    if (!c.channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      Die("cannot connect to the server");
    }
    c.health = grpc::health::v1::Health::NewStub(c.channel);
    c.jobs = QuantizationService::NewStub(c.channel);
  }
  return clients;
}

void SetDeadline(grpc::ClientContext& context) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
}

// One call by client `client`; `seq` counts this client's calls. Returns the status.
using Call = std::function<grpc::Status(Client& client, int index, int64_t seq)>;

struct Point {
  double server_cpu_us = 0;  // Server CPU time (user + system) per call, microseconds.
  int64_t calls = 0;
  double seconds = 0;
  double rate = 0;
  double p50_ms = 0;
  double p99_ms = 0;
};

// CPU seconds (user + system, all threads) process `pid` has used so far.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start at ") ".
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(text.substr(close + 2), ' ');
  if (fields.size() < 13) return 0;
  double utime = 0, stime = 0;  // Fields 14 and 15 of stat(5), in clock ticks.
  absl::SimpleAtod(fields[11], &utime);
  absl::SimpleAtod(fields[12], &stime);
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

pid_t g_server_pid = -1;  // The server being measured, for its CPU time.

// Runs `call` from `n` clients at once until `seconds` pass or `max_calls` are made.
Point Measure(std::vector<Client>& clients, int n, const Call& call, double seconds,
              int64_t max_calls) {
  std::atomic<int64_t> budget{max_calls};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::vector<double>> latencies(static_cast<size_t>(n));
  std::vector<std::string> errors(static_cast<size_t>(n));
  Clock::time_point start;
  Clock::time_point end;
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      auto& mine = latencies[static_cast<size_t>(i)];
      mine.reserve(static_cast<size_t>(std::min<int64_t>(max_calls, 200000)));
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      int64_t seq = 0;
      while (budget.fetch_sub(1) > 0 && Clock::now() < end) {
        const auto t0 = Clock::now();
        grpc::Status status = call(clients[static_cast<size_t>(i)], i, seq++);
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (!status.ok()) {
          errors[static_cast<size_t>(i)] =
              absl::StrCat(status.error_code(), ": ", status.error_message());
          return;
        }
      }
    });
  }
  while (ready.load() < n) std::this_thread::yield();
  const double cpu_before = ProcessCpuSeconds(g_server_pid);
  start = Clock::now();
  end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  Point point;
  point.seconds = SecondsSince(start);
  const double cpu = ProcessCpuSeconds(g_server_pid) - cpu_before;
  for (const auto& e : errors) {
    if (!e.empty()) Die(absl::StrCat("an RPC failed during the benchmark: ", e));
  }
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  point.calls = static_cast<int64_t>(all.size());
  point.rate = static_cast<double>(point.calls) / point.seconds;
  point.server_cpu_us = point.calls > 0 ? cpu * 1e6 / static_cast<double>(point.calls) : 0;
  point.p50_ms = Percentile(all, 0.50);
  point.p99_ms = Percentile(all, 0.99);
  return point;
}

// Random bytes for blobs and files (a fast seeded generator; content does not matter).
std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<char>(rng());
  return out;
}

std::string UploadBytes(BlobService::Stub& stub, const std::string& data) {
  const std::string digest = ompq::DigestOf(data);
  grpc::ClientContext context;
  SetDeadline(context);
  ompq::v1::WriteBlobResponse response;
  auto writer = stub.Write(&context, &response);
  ompq::v1::WriteBlobRequest request;
  request.set_digest(digest);
  request.set_size_bytes(static_cast<int64_t>(data.size()));
  request.set_data(data);
  writer->Write(request);
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) Die(absl::StrCat("blob upload failed: ", status.error_message()));
  return digest;
}

// ---- The job API ----

struct StoreRun {
  std::string store;
  // clients -> rpc -> one point per round.
  std::map<int, std::map<std::string, std::vector<Point>>> points;
};

const char* const kRpcs[] = {"noop (Health/Check)", "CreateJob", "GetJob", "ListJobs"};

StoreRun RunJobApi(const std::string& store, const ServerProcess& server,
                   const std::vector<int>& counts) {
  const int max_clients = *std::max_element(counts.begin(), counts.end());
  std::vector<Client> clients = MakeClients(server.address, max_clients);
  auto blob_stub = BlobService::NewStub(clients[0].channel);
  // CreateJob checks only that the blobs exist; a worker would validate their content.
  const std::string model = UploadBytes(*blob_stub, RandomBytes(64 << 10, 1));
  const std::string calib = UploadBytes(*blob_stub, RandomBytes(64 << 10, 2));

  absl::Mutex names_mu;
  std::vector<std::string> names;  // Every job created, for GetJob.
  std::atomic<int64_t> run_id{0};
  // Every CreateJob carries a distinct request id, also across runs on one database
  // (a repeated id would be answered with the existing job, not create one).
  const std::string nonce = absl::StrCat(getpid(), "-", absl::ToUnixMicros(absl::Now()));
  auto create = [&](Client& c, int index, int64_t seq) {
    ompq::v1::CreateJobRequest request;
    ompq::v1::JobSpec* spec = request.mutable_spec();
    spec->set_model_digest(model);
    spec->set_calib_digest(calib);
    spec->set_size_budget_bytes(1 << 20);
    spec->set_display_name("bench_load");
    request.set_request_id(absl::StrCat("bench-", nonce, "-", run_id.load(), "-", index, "-", seq));
    grpc::ClientContext context;
    SetDeadline(context);
    ompq::v1::Job job;
    grpc::Status status = c.jobs->CreateJob(&context, request, &job);
    if (status.ok()) {
      absl::MutexLock lock(&names_mu);
      names.push_back(job.name());
    }
    return status;
  };
  auto noop = [](Client& c, int, int64_t) {
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    grpc::Status status = c.health->Check(&context, request, &response);
    if (status.ok() && response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "health: not SERVING");
    }
    return status;
  };
  // GetJob reads names spread over all jobs created so far (a fixed snapshot per point).
  std::vector<std::string> snapshot;
  auto get = [&snapshot](Client& c, int index, int64_t seq) {
    ompq::v1::GetJobRequest request;
    const size_t k = static_cast<size_t>(seq * 7919 + index * 104729) % snapshot.size();
    request.set_name(snapshot[k]);
    grpc::ClientContext context;
    SetDeadline(context);
    ompq::v1::Job job;
    grpc::Status status = c.jobs->GetJob(&context, request, &job);
    if (status.ok() && job.name() != request.name()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "GetJob answered another job");
    }
    return status;
  };
  const int page_size = absl::GetFlag(FLAGS_page_size);
  auto list = [page_size](Client& c, int, int64_t) {
    ompq::v1::ListJobsRequest request;
    request.set_page_size(page_size);
    grpc::ClientContext context;
    SetDeadline(context);
    ompq::v1::ListJobsResponse response;
    grpc::Status status = c.jobs->ListJobs(&context, request, &response);
    if (status.ok() && response.jobs_size() != page_size) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "ListJobs returned a short page");
    }
    return status;
  };

  // Seed jobs so listings are full pages and GetJob has names; also warms every client.
  run_id = 1000000;
  Measure(clients, max_clients, noop, 0.3, 10000);
  Measure(clients, std::min(8, max_clients), create, 600, absl::GetFlag(FLAGS_seed_jobs));
  std::fprintf(stderr, "  %s: seeded %d jobs\n", store.c_str(), absl::GetFlag(FLAGS_seed_jobs));

  std::set<std::string> wanted;
  for (absl::string_view rpc : absl::StrSplit(absl::GetFlag(FLAGS_rpcs), ',')) {
    wanted.insert(std::string(rpc));
  }
  StoreRun run;
  run.store = store;
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int64_t max_calls = absl::GetFlag(FLAGS_max_calls);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  for (int n : counts) {
    auto& row = run.points[n];
    // Rounds interleave the RPCs, so a burst of load from elsewhere on the machine hits
    // one round's points, not all of one RPC's.
    for (int r = 0; r < rounds; ++r) {
      run_id = n * 1000 + r;
      row[kRpcs[0]].push_back(Measure(clients, n, noop, seconds, max_calls));
      if (wanted.count(kRpcs[1]) > 0) {
        row[kRpcs[1]].push_back(Measure(clients, n, create, seconds, max_calls));
      }
      {
        absl::MutexLock lock(&names_mu);
        snapshot = names;
      }
      if (wanted.count(kRpcs[2]) > 0) {
        row[kRpcs[2]].push_back(Measure(clients, n, get, seconds, max_calls));
      }
      if (wanted.count(kRpcs[3]) > 0) {
        row[kRpcs[3]].push_back(Measure(clients, n, list, seconds, max_calls));
      }
    }
    std::fprintf(stderr, "  %s, %d clients done (load %s)\n", store.c_str(), n,
                 LoadAverage().c_str());
  }
  return run;
}

// Per cell: median over rounds of the rate, of p50 and of p99; the ratio is the median
// over rounds of (rate / no-op rate of the same round).
void PrintJobApi(const StoreRun& run) {
  std::printf(
      "\n%s job store: rate (calls/s), latency p50 / p99 (ms), rate / no-op rate; medians of "
      "%d rounds\n",
      run.store.c_str(), absl::GetFlag(FLAGS_rounds));
  std::printf("%7s | %-30s | %-34s | %-34s | %-34s\n", "clients", kRpcs[0], kRpcs[1], kRpcs[2],
              kRpcs[3]);
  for (const auto& [n, row] : run.points) {
    const std::vector<Point>& noop = row.at(kRpcs[0]);
    std::printf("%7d", n);
    for (const char* rpc : kRpcs) {
      if (row.count(rpc) == 0) {
        std::printf(" | %-34s", "-");
        continue;
      }
      const std::vector<Point>& points = row.at(rpc);
      std::vector<double> rate, p50, p99, ratio;
      for (size_t i = 0; i < points.size(); ++i) {
        rate.push_back(points[i].rate);
        p50.push_back(points[i].p50_ms);
        p99.push_back(points[i].p99_ms);
        ratio.push_back(points[i].rate / noop[i].rate);
      }
      if (rpc == kRpcs[0]) {
        std::printf(" | %8.0f/s %6.2f / %7.2f ms", Median(rate), Median(p50), Median(p99));
      } else {
        std::printf(" | %7.0f/s %6.2f / %7.2f ms %5.2fx", Median(rate), Median(p50), Median(p99),
                    Median(ratio));
      }
    }
    std::printf("\n");
  }
  std::printf(
      "server CPU per call (user + system, microseconds; load-insensitive view; "
      "medians of rounds), and as a ratio to the no-op's\n");
  for (const auto& [n, row] : run.points) {
    std::vector<double> noop_cpu;
    for (const Point& p : row.at(kRpcs[0])) noop_cpu.push_back(p.server_cpu_us);
    const double base = Median(noop_cpu);
    std::printf("%7d", n);
    for (const char* rpc : kRpcs) {
      if (row.count(rpc) == 0) {
        std::printf(" | %-20s", "-");
        continue;
      }
      std::vector<double> cpu;
      for (const Point& p : row.at(rpc)) cpu.push_back(p.server_cpu_us);
      std::printf(" | %-20s",
                  absl::StrFormat("%.0f us (%.2fx)", Median(cpu), Median(cpu) / base).c_str());
    }
    std::printf("\n");
  }
}

// ---- Blobs ----

constexpr size_t kChunk = 1 << 20;  // Same as ompqctl's chunk size.

int OpenOrDie(const std::string& path, int flags, mode_t mode = 0644) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) Die(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  return fd;
}

void WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      Die(absl::StrCat("write: ", std::strerror(errno)));
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
}

size_t ReadSome(int fd, char* data, size_t n) {
  size_t filled = 0;
  while (filled < n) {
    const ssize_t r = ::read(fd, data + filled, n - filled);
    if (r < 0) {
      if (errno == EINTR) continue;
      Die(absl::StrCat("read: ", std::strerror(errno)));
    }
    if (r == 0) break;
    filled += static_cast<size_t>(r);
  }
  return filled;
}

// CPU seconds of the server process and of this one (the client's threads) over a span.
class CpuMeter {
 public:
  explicit CpuMeter(pid_t server) : server_(server), server_start_(ProcessCpuSeconds(server)),
                                    self_start_(SelfCpuSeconds()) {}
  void Stop(std::pair<std::vector<double>, std::vector<double>>* into) const {
    into->first.push_back(ProcessCpuSeconds(server_) - server_start_);
    into->second.push_back(SelfCpuSeconds() - self_start_);
  }

 private:
  static double SelfCpuSeconds() {
    struct rusage usage;
    ::getrusage(RUSAGE_SELF, &usage);
    auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
  }
  const pid_t server_;
  const double server_start_;
  const double self_start_;
};

// The disk-copy baselines: read `src` in 1 MiB chunks and write `dst`.
//   plain: write, then fsync (what `cp` + `sync FILE` does);
//   nosync: write only (what a download does: it does not fsync);
//   store: like the blob store: temporary file beside the target, SHA-256 of the bytes,
//          fsync, rename, fsync of the directory.
double CopyFile(const std::string& src, const std::string& dst, const std::string& mode) {
  std::vector<char> buffer(kChunk);
  const auto start = Clock::now();
  const int in = OpenOrDie(src, O_RDONLY);
  const std::string target = mode == "store" ? dst + ".tmp" : dst;
  const int out = OpenOrDie(target, O_WRONLY | O_CREAT | O_TRUNC);
  ompq::Sha256 sha;
  while (true) {
    const size_t n = ReadSome(in, buffer.data(), buffer.size());
    if (n == 0) break;
    if (mode == "store") sha.Update(absl::string_view(buffer.data(), n));
    WriteAll(out, buffer.data(), n);
  }
  if (mode != "nosync" && ::fsync(out) != 0) Die("fsync failed");
  ::close(out);
  ::close(in);
  if (mode == "store") {
    sha.Finish();
    if (::rename(target.c_str(), dst.c_str()) != 0) Die("rename failed");
    const int dir = OpenOrDie(fs::path(dst).parent_path().string(), O_RDONLY | O_DIRECTORY);
    ::fsync(dir);
    ::close(dir);
  }
  return SecondsSince(start);
}

// Streams `path` to BlobService.Write in 1 MiB messages, reading the file as it goes (the
// digest is known beforehand, as after ompqctl's FindMissingBlobs check).
double UploadFile(BlobService::Stub& stub, const std::string& path, const std::string& digest,
                  int64_t size) {
  const auto start = Clock::now();
  const int in = OpenOrDie(path, O_RDONLY);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  ompq::v1::WriteBlobResponse response;
  auto writer = stub.Write(&context, &response);
  ompq::v1::WriteBlobRequest request;
  request.set_digest(digest);
  request.set_size_bytes(size);
  bool ok = true;
  while (ok) {
    // Read straight into the message, as ompqctl's UploadFile does.
    std::string* data = request.mutable_data();
    data->resize(kChunk);
    const size_t n = ReadSome(in, data->data(), data->size());
    if (n == 0) break;
    data->resize(n);
    ok = writer->Write(request);
    request.clear_digest();
    request.clear_size_bytes();
  }
  ::close(in);
  if (ok) writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) Die(absl::StrCat("upload failed: ", status.error_message()));
  if (response.already_existed()) Die("upload: the server already had the blob");
  return SecondsSince(start);
}

void RunBlobs(const ServerProcess& server, const std::string& dir) {
  const int64_t mib = absl::GetFlag(FLAGS_blob_mib);
  const int repeats = absl::GetFlag(FLAGS_blob_repeats);
  const int64_t size = mib << 20;
  fs::create_directories(dir);
  ompq::rpc::ConnectionOptions connection;
  connection.server = server.address;
  auto channel = ompq::rpc::MakeChannel(connection);
  if (!channel.ok()) Die(channel.status().ToString());
  auto stub = BlobService::NewStub(*channel);
  std::map<std::string, std::vector<double>> times;
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> cpu;
  // Every measurement starts from the same state. On this machine (a VM whose host takes
  // back guest memory that stays free for a few seconds) writing into pages the host has
  // taken back costs a host fault per 4 KiB page: page-cache writes run at ~0.4-0.5 GB/s
  // into such pages and ~1.8 GB/s into pages freed just before. Without this, whichever
  // measurement came last in a repeat got the cold pages (the upload did). Then sync(), so
  // no earlier write-back lands in the measurement.
  const bool hot_pages = absl::GetFlag(FLAGS_hot_pages);
  auto prepare = [&dir, size, hot_pages] {
    if (hot_pages) {
      const std::string scratch = dir + "/scratch";
      const std::vector<char> zeros(kChunk, 0);
      const int fd = OpenOrDie(scratch, O_WRONLY | O_CREAT | O_TRUNC);
      for (int64_t done = 0; done < size + (64 << 20); done += kChunk) {
        WriteAll(fd, zeros.data(), zeros.size());
      }
      ::close(fd);
      fs::remove(scratch);  // Its dirty pages are dropped, not written back.
    }
    ::sync();
  };
  for (int r = 0; r < repeats; ++r) {
    // A new random file each repeat, so every upload stores a new blob.
    const std::string src = absl::StrCat(dir, "/source-", r);
    std::string digest;
    {
      const std::string bytes = RandomBytes(static_cast<size_t>(size), 100 + r);
      digest = ompq::DigestOf(bytes);
      const int fd = OpenOrDie(src, O_WRONLY | O_CREAT | O_TRUNC);
      WriteAll(fd, bytes.data(), bytes.size());
      ::fsync(fd);
      ::close(fd);
    }
    prepare();
    times["copy, write + fsync"].push_back(CopyFile(src, dir + "/copy-plain", "plain"));
    prepare();
    times["copy, write, no fsync"].push_back(CopyFile(src, dir + "/copy-nosync", "nosync"));
    prepare();
    times["copy like the store (SHA-256, fsync, rename)"].push_back(
        CopyFile(src, dir + "/copy-store", "store"));
    prepare();
    CpuMeter upload_cpu(server.pid);
    times["upload (BlobService.Write)"].push_back(UploadFile(*stub, src, digest, size));
    upload_cpu.Stop(&cpu["upload"]);
    prepare();
    const std::string downloaded = dir + "/downloaded";
    CpuMeter download_cpu(server.pid);
    const auto start = Clock::now();
    absl::Status got = ompq::rpc::DownloadBlob(*stub, connection, ompq::rpc::TransferLimits(),
                                                  digest, size, downloaded);
    if (!got.ok()) Die(absl::StrCat("download failed: ", got.ToString()));
    times["download (BlobService.Read, ompqctl's DownloadBlob)"].push_back(SecondsSince(start));
    download_cpu.Stop(&cpu["download"]);
    for (const char* f : {"/copy-plain", "/copy-nosync", "/copy-store", "/downloaded"}) {
      fs::remove(dir + f);
    }
    fs::remove(src);
    std::fprintf(stderr, "  blobs, repeat %d done (load %s)\n", r + 1, LoadAverage().c_str());
  }
  auto mbps = [size](double s) { return static_cast<double>(size) / (1 << 20) / s; };
  std::printf("\nBlob transfer of %lld MiB, %d repeats%s: MiB/s (median, best)\n",
              static_cast<long long>(mib), repeats,
              hot_pages ? "" : " (--hot_pages=false: into whatever pages are free)");
  const double plain = Median(times["copy, write + fsync"]);
  const double nosync = Median(times["copy, write, no fsync"]);
  const double store = Median(times["copy like the store (SHA-256, fsync, rename)"]);
  const double plain_best =
      *std::min_element(times["copy, write + fsync"].begin(), times["copy, write + fsync"].end());
  const double nosync_best = *std::min_element(times["copy, write, no fsync"].begin(),
                                               times["copy, write, no fsync"].end());
  for (const auto& [name, t] : times) {
    const double med = Median(t);
    const double best = *std::min_element(t.begin(), t.end());
    std::printf("  %-52s %8.1f %8.1f", name.c_str(), mbps(med), mbps(best));
    if (name.rfind("upload", 0) == 0) {
      std::printf("   %.2fx / %.2fx of copy + fsync; %.2fx of the store-like copy (median)",
                  plain / med, plain_best / best, store / med);
    } else if (name.rfind("download", 0) == 0) {
      std::printf("   %.2fx / %.2fx of copy without fsync; %.2fx of the store-like copy (median)",
                  nosync / med, nosync_best / best, store / med);
    }
    std::printf("\n");
  }
  // CPU is what the transfers cost whatever else runs on the machine.
  for (const auto& [name, seconds] : cpu) {
    std::printf("  CPU s per %s (median): server %.2f, client %.2f\n", name.c_str(),
                Median(seconds.first), Median(seconds.second));
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  const std::string binary = absl::GetFlag(FLAGS_server_binary);
  if (binary.empty() || ::access(binary.c_str(), X_OK) != 0) {
    Die("pass --server_binary PATH of a built ompq-server");
  }
  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_clients), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) Die("--clients: a list of positive counts");
    counts.push_back(n);
  }
  std::string work = absl::GetFlag(FLAGS_work_dir);
  if (work.empty()) {
    // /var/tmp: on disk (not a tmpfs), where a server's --data-dir would be.
    std::string templ = "/var/tmp/bench_load-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) Die("cannot create a scratch directory");
    work = templ;
  }
  std::printf("bench_load: %d cores, load average at start %s, scratch %s\n",
              static_cast<int>(std::thread::hardware_concurrency()), LoadAverage().c_str(),
              work.c_str());

  std::vector<std::pair<std::string, std::string>> stores = {{"SQLite", ""}};
  if (!absl::GetFlag(FLAGS_database).empty()) {
    stores.emplace_back("PostgreSQL", absl::GetFlag(FLAGS_database));
  }
  bool blobs_done = absl::GetFlag(FLAGS_blob_mib) <= 0;
  for (const auto& [store, database] : stores) {
    const std::string data_dir = absl::StrCat(work, "/", store);
    ServerProcess server = StartServer(binary, data_dir, database);
    g_server_pid = server.pid;
    std::fprintf(stderr, "%s server on %s, pid %d\n", store.c_str(), server.address.c_str(),
                 static_cast<int>(server.pid));
    if (absl::GetFlag(FLAGS_job_api)) {
      StoreRun run = RunJobApi(store, server, counts);
      PrintJobApi(run);
      std::fflush(stdout);
    }
    if (!blobs_done) {
      // Blob transfers do not touch the job store: measured once, on the first server.
      RunBlobs(server, data_dir + "/files");
      blobs_done = true;
    }
    StopServer(server);
  }
  std::printf("\nload average at end %s\n", LoadAverage().c_str());
  if (!absl::GetFlag(FLAGS_keep)) {
    std::error_code ec;
    fs::remove_all(work, ec);
  }
  return 0;
}
