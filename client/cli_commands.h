// The ompqctl subcommands, one function each. main.cc parses flags into the plain
// structs here and calls one of these; each returns the process exit code.
#ifndef OMPQ_CLIENT_CLI_COMMANDS_H_
#define OMPQ_CLIENT_CLI_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "client/client.h"
#include "client/job_options.h"
#include "client/job_output.h"

namespace ompq::client {

/// What every command works with.
struct CliContext {
  Client* client = nullptr;  // Connected client (no RPC made yet).
  std::string server;        // Address tried, for error messages.
  OutputFormat output = OutputFormat::kText;
  std::ostream* out = nullptr;  // Results (the JSON document in JSON mode).
  std::ostream* err = nullptr;  // Progress, notes and errors.
  bool interactive = false;     // `err` is a terminal: redraw one progress line.
};

/// Filters of `list`.
struct ListFlags {
  std::string state;  // Only jobs in this state; empty: all.
  std::string label;  // Only jobs with this label "k=v"; empty: all.
  int limit = 50;     // At most this many jobs, newest first.
};

/// Uploads, submits, follows the job, downloads its artifacts into `out_dir` and prints
/// the summary.
int RunQuantize(const CliContext& ctx, const JobFlags& flags, const std::string& out_dir);
/// Uploads and submits; prints the new job.
int RunSubmit(const CliContext& ctx, const JobFlags& flags);
/// Prints one job.
int RunGet(const CliContext& ctx, const std::string& name);
/// Prints jobs, newest first.
int RunList(const CliContext& ctx, const ListFlags& flags);
/// Shows live progress until the job ends; exit code by final state.
int RunWatch(const CliContext& ctx, const std::string& name);
/// Waits quietly until the job ends or `timeout` (e.g. "30m"; empty: no limit) passes.
int RunWait(const CliContext& ctx, const std::string& name, const std::string& timeout);
/// Requests cancellation; prints the job.
int RunCancel(const CliContext& ctx, const std::string& name);
/// Downloads the artifacts of a succeeded job into `out_dir`.
int RunDownload(const CliContext& ctx, const std::string& name, const std::string& out_dir);
/// Prints the size-quality frontier of a succeeded job from its report.json (the JSON
/// array itself in JSON mode).
int RunFrontier(const CliContext& ctx, const std::string& name);
/// Uploads files as blobs; prints their digests.
int RunUpload(const CliContext& ctx, const std::vector<std::string>& paths);
/// Asks the server's grpc.health.v1 service about `service` ("" the whole server), giving
/// up after `timeout` (e.g. "5s"). Exit 0 when SERVING; kExitJobFailed (1) when the server
/// answers anything else (NOT_SERVING while it drains); kExitUnreachable (4) when it cannot
/// be reached in time or refuses the credentials. For probes (deploy/k8s/server.yaml).
int RunHealth(const CliContext& ctx, const std::string& service, const std::string& timeout);

}  // namespace ompq::client

#endif  // OMPQ_CLIENT_CLI_COMMANDS_H_
