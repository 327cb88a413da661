// ompqctl: the command-line client of ompq-server. Flags live here only; everything
// else is in the ompq_cli library (cli_commands.h).
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "client/cli_commands.h"
#include "client/exit_codes.h"

namespace {

using ompq::client::JobFlags;

// Flags shared by `quantize` and `submit` (PRODUCT.md "Job options").
void AddJobFlags(CLI::App& command, JobFlags& flags) {
  command.add_option("model", flags.model, "TorchScript model file (torch.jit.save)")->required();
  command.add_option("--calib", flags.calib, "Calibration inputs (.pt/.npy/.npz)")->required();
  command.add_option("--size", flags.size, "Model-size budget, e.g. 1.5MiB, 2MB, 800KiB");
  command.add_option("--bops", flags.bops, "BOPs budget, e.g. 75G");
  command.add_option("--weight-bits", flags.weight_bits,
                     "Candidate weight bit-widths (default 2,3,4,5,6,7,8)");
  command.add_option("--act-bits", flags.act_bits, "Activation bit-width (default 8)");
  command.add_option("--pin-first-last", flags.pin_first_last,
                     "Bits of the first and last layer, or none (default 8)");
  command.add_option("--pin", flags.pins, "Pin layers: NAME_REGEX=BITS (repeatable)")
      ->allow_extra_args(false);
  command.add_option("--beta", flags.beta, "Importance temperature");
  command.add_option("--finetune", flags.finetune, "none|ptq|qat");
  command.add_option("--objective", flags.objective,
                     "orthogonality|distortion: what the bit allocation optimises");
  command.add_option("--export-profile", flags.export_profile,
                     "default|tensorrt: tensorrt = symmetric, zero point 0 (TensorRT's form)");
  command.add_option("--iters", flags.iters, "PTQ reconstruction iterations per unit");
  command.add_option("--frontier-evals", flags.frontier_evals,
                     "frontier points whose top-1 is measured (needs --eval; default 8)");
  command.add_option("--epochs", flags.epochs, "QAT epochs");
  command.add_option("--lr", flags.lr, "QAT learning rate");
  command.add_option("--train", flags.train, "Labelled training data (QAT)");
  command.add_option("--eval", flags.eval, "Labelled data: report top-1 accuracy");
  command.add_option("--search-samples", flags.search_samples,
                     "Calibration samples the search uses (default 32)");
  command.add_option("--calib-samples", flags.calib_samples,
                     "Calibration samples finetuning uses (default 1024)");
  command.add_option("--seed", flags.seed, "Random seed");
  command.add_option("--timeout", flags.timeout, "Per-job time limit, e.g. 30m");
  command.add_option("--request-id", flags.request_id, "Idempotency key for the submit");
  command.add_option("--label", flags.labels, "Label KEY=VALUE (repeatable)")
      ->allow_extra_args(false);
}

const char* DefaultServer() {
  const char* env = std::getenv("OMPQ_SERVER");
  return env != nullptr && *env != '\0' ? env : "127.0.0.1:50051";
}

}  // namespace

int main(int argc, char** argv) {
  namespace oc = ompq::client;
  CLI::App app{"ompqctl: mixed-precision quantization with ompq-server"};
  app.require_subcommand(1);
  // Global flags may come after the subcommand too (`ompqctl get X --output json`).
  app.fallthrough();

  oc::ClientOptions client_options;
  client_options.connection.server = DefaultServer();
  std::string output = "text";
  app.add_option("--server", client_options.connection.server,
                 "ompq-server address host:port (env OMPQ_SERVER)")
      ->capture_default_str();
  app.add_option("--token", client_options.connection.token, "Bearer token")->envname("OMPQ_TOKEN");
  app.add_option("--tls-ca", client_options.connection.tls_ca,
                 "PEM CA file: connect with TLS (default plaintext)");
  app.add_option("--tls-server-name", client_options.connection.tls_server_name,
                 "Name the server certificate must carry, when not the --server host "
                 "(e.g. probing localhost in the server's pod)");
  app.add_option("--output,-o", output, "Output format: text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();

  JobFlags job_flags;
  std::string out_dir = "results";
  CLI::App* quantize =
      app.add_subcommand("quantize", "Upload, run a job, download and summarise the result");
  AddJobFlags(*quantize, job_flags);
  quantize->add_option("--out", out_dir, "Folder for the artifacts")->capture_default_str();

  CLI::App* submit = app.add_subcommand("submit", "Upload and submit a job; print it");
  AddJobFlags(*submit, job_flags);

  std::string job_name;
  CLI::App* get = app.add_subcommand("get", "Show one job");
  get->add_option("job", job_name, "Job name (jobs/ID or ID)")->required();

  oc::ListFlags list_flags;
  CLI::App* list = app.add_subcommand("list", "List jobs, newest first");
  list->add_option("--state", list_flags.state, "Only jobs in this state");
  list->add_option("--label", list_flags.label, "Only jobs with this label KEY=VALUE");
  list->add_option("--limit", list_flags.limit, "At most this many jobs")->capture_default_str();

  CLI::App* watch = app.add_subcommand("watch", "Show live progress until the job ends");
  watch->add_option("job", job_name, "Job name")->required();

  std::string wait_timeout;
  CLI::App* wait = app.add_subcommand("wait", "Wait until the job ends (exit 3 on timeout)");
  wait->add_option("job", job_name, "Job name")->required();
  wait->add_option("--timeout", wait_timeout, "Give up after this long, e.g. 30m");

  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a job");
  cancel->add_option("job", job_name, "Job name")->required();

  CLI::App* download = app.add_subcommand("download", "Download a finished job's artifacts");
  download->add_option("job", job_name, "Job name")->required();
  download->add_option("--out", out_dir, "Folder for the artifacts")->capture_default_str();

  CLI::App* frontier =
      app.add_subcommand("frontier", "Print a finished job's size-quality frontier");
  frontier->add_option("job", job_name, "Job name")->required();

  std::vector<std::string> upload_paths;
  CLI::App* upload = app.add_subcommand("upload", "Upload files as blobs; print digests");
  upload->add_option("files", upload_paths, "Files to upload")->required();

  std::string health_service;
  std::string health_timeout = "5s";
  CLI::App* health = app.add_subcommand(
      "health", "Ask the server's gRPC health service; exit 0 when SERVING (for probes)");
  health->add_option("--service", health_service, "Service to ask about (default: the server)");
  health->add_option("--timeout", health_timeout, "Give up after this long")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; every real parse error is bad usage.
    return app.exit(e) == 0 ? oc::kExitSuccess : oc::kExitUsage;
  }

  oc::CliContext ctx;
  ctx.server = client_options.connection.server;
  ctx.output = output == "json" ? oc::OutputFormat::kJson : oc::OutputFormat::kText;
  ctx.out = &std::cout;
  ctx.err = &std::cerr;
  ctx.interactive = isatty(STDERR_FILENO) != 0;
  auto client = oc::Client::Connect(client_options);
  if (!client.ok()) {
    std::cerr << "ompqctl: error: " << oc::DescribeError(client.status(), ctx.server) << std::endl;
    return oc::ExitCodeForStatus(client.status());
  }
  ctx.client = client->get();

  if (quantize->parsed()) return oc::RunQuantize(ctx, job_flags, out_dir);
  if (submit->parsed()) return oc::RunSubmit(ctx, job_flags);
  if (get->parsed()) return oc::RunGet(ctx, job_name);
  if (list->parsed()) return oc::RunList(ctx, list_flags);
  if (watch->parsed()) return oc::RunWatch(ctx, job_name);
  if (wait->parsed()) return oc::RunWait(ctx, job_name, wait_timeout);
  if (cancel->parsed()) return oc::RunCancel(ctx, job_name);
  if (download->parsed()) return oc::RunDownload(ctx, job_name, out_dir);
  if (frontier->parsed()) return oc::RunFrontier(ctx, job_name);
  if (upload->parsed()) return oc::RunUpload(ctx, upload_paths);
  if (health->parsed()) return oc::RunHealth(ctx, health_service, health_timeout);
  return oc::kExitUsage;
}
