#include "workers/engine/quantize.h"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/encodings.h"
#include "workers/engine/frontier_eval.h"
#include "workers/engine/graph_layers.h"
#include "workers/engine/job_inputs.h"
#include "workers/engine/labelled_data.h"
#include "workers/engine/onnx_export.h"
#include "workers/engine/probed_model.h"
#include "workers/engine/ptq.h"
#include "workers/engine/qat_training.h"
#include "workers/engine/quant_layers.h"
#include "workers/engine/quantizer.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"
#include "workers/engine/transformer_rewrite.h"

namespace ompq::engine {
namespace {

using Clock = std::chrono::steady_clock;
using torch::jit::Node;
using torch::jit::Value;

constexpr char kModelFile[] = "model_quantized.pt";
constexpr char kEncodingsFile[] = "encodings.json";
constexpr char kOnnxFile[] = "model_quantized.onnx";

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

absl::Status WriteFileBytes(const std::filesystem::path& path, const std::string& bytes) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size();
  if (std::fclose(file) != 0 || !written) {
    return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  }
  return absl::OkStatus();
}

absl::Status Cancelled() {
  return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled,
                    "quantization was cancelled");
}

// The bits the search gave each layer, by name.
absl::StatusOr<std::unordered_map<std::string, int>> SearchedBits(const nlohmann::json& report) {
  std::unordered_map<std::string, int> bits;
  try {
    for (const nlohmann::json& layer : report.at("layers")) {
      bits[layer.at("name").get<std::string>()] = layer.at("bits").get<int>();
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed search report: ", e.what()));
  }
  return bits;
}

}  // namespace

InputPaths InputPathsOf(const QuantizeOptions& options) {
  InputPaths paths;
  paths.model = options.model_path;
  paths.calib = options.calib_path;
  paths.eval = options.eval_path;
  paths.train = options.finetune == FinetuneMode::kQat ? options.train_path : "";
  paths.device = options.device;
  return paths;
}

const char* FinetuneModeName(FinetuneMode mode) {
  switch (mode) {
    case FinetuneMode::kNone:
      return "none";
    case FinetuneMode::kQat:
      return "qat";
    case FinetuneMode::kPtq:
      break;
  }
  return "ptq";
}

absl::Status CheckEvalData(const QuantizeOptions& options) {
  if (options.eval_path.empty()) return absl::OkStatus();
  InitTorchThreads();
  torch::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(CalibrationData eval, LoadLabelledData(options.eval_path, "eval"));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadTorchScriptModel(options.model_path, options.device));
  ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> model, ProbedModel::Create(std::move(loaded)));
  return CheckLabelledAgainst(*model, eval, "eval");
}

absl::Status CheckTrainData(const QuantizeOptions& options) {
  if (options.finetune != FinetuneMode::kQat) return absl::OkStatus();
  if (options.train_path.empty()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      "--finetune qat trains on labelled data: pass --train FILE");
  }
  InitTorchThreads();
  torch::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(CalibrationData train, LoadLabelledData(options.train_path, "train"));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadTorchScriptModel(options.model_path, options.device));
  ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> model, ProbedModel::Create(std::move(loaded)));
  return CheckLabelledAgainst(*model, train, "train");
}

absl::StatusOr<std::vector<std::string>> RunQuantization(const QuantizeOptions& options,
                                                         nlohmann::json& report,
                                                         const ProgressFn& progress) {
  if (progress && !progress(Stage::kCalibrating, 0, "loading the model and calibration data")) {
    return Cancelled();
  }
  ASSIGN_OR_RETURN(const JobInputs inputs, LoadJobInputs(InputPathsOf(options)));
  return RunQuantization(options, inputs, report, progress);
}

absl::StatusOr<std::vector<std::string>> RunQuantization(const QuantizeOptions& options,
                                                         const JobInputs& inputs,
                                                         nlohmann::json& report,
                                                         const ProgressFn& progress) {
  const bool qat = options.finetune == FinetuneMode::kQat;
  if (options.act_bits < limits::kMinActBits || options.act_bits > limits::kMaxBits ||
      options.calib_samples < 1 || options.iters < 0 || options.epochs < 1 ||
      !(options.lr > 0) || !std::isfinite(options.lr) || options.qat_batch_size < 1) {
    return absl::InvalidArgumentError(
        "act_bits 2..16, calib_samples >= 1, iters >= 0, epochs >= 1, lr > 0 and "
        "qat_batch_size >= 1");
  }
  if (qat && !inputs.train.has_value()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      "--finetune qat trains on labelled data: pass --train FILE");
  }
  auto step = [&](Stage stage, double fraction, const std::string& message) -> absl::Status {
    if (progress && !progress(stage, std::clamp(fraction, 0.0, 1.0), message)) return Cancelled();
    return absl::OkStatus();
  };
  InitTorchThreads();
  torch::NoGradGuard no_grad;
  const Clock::time_point start = Clock::now();

  // --- CALIBRATING: a copy of the model to quantize (and one of the float model, the
  // reference of the stages that compare with it), weight ranges on every core, then one
  // forward pass that fits every activation range in execution order.
  RETURN_IF_ERROR(step(Stage::kCalibrating, 0, "copying the model"));
  ASSIGN_OR_RETURN(LoadedModel work_model, CopyModel(inputs.model));
  ASSIGN_OR_RETURN(std::unique_ptr<ProbedModel> work, ProbedModel::Create(std::move(work_model)));
  std::unique_ptr<ProbedModel> fp;
  if (options.finetune != FinetuneMode::kNone || inputs.eval.has_value()) {
    ASSIGN_OR_RETURN(LoadedModel fp_model, CopyModel(inputs.model));
    ASSIGN_OR_RETURN(fp, ProbedModel::Create(std::move(fp_model)));
  }
  torch::Tensor calib =
      inputs.calib.narrow(0, 0, std::min<int64_t>(inputs.calib.size(0), options.calib_samples));
  if (calib.is_floating_point() && !torch::isfinite(calib).all().item<bool>()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kNonFiniteInput,
                      "the calibration inputs contain NaN or Inf values");
  }
  ASSIGN_OR_RETURN(const auto searched_bits, SearchedBits(report));
  ASSIGN_OR_RETURN(std::vector<QuantLayer> layers, PlanLayers(*work, searched_bits));
  const std::optional<CalibrationData>& eval = inputs.eval;
  // QAT's data is checked against the model before calibration starts.
  if (qat) RETURN_IF_ERROR(CheckLabelledAgainst(*fp, *inputs.train, "train"));

  const int64_t n_layers = static_cast<int64_t>(layers.size());
  RETURN_IF_ERROR(step(Stage::kCalibrating, 0.02,
                       absl::StrCat("fitting the weight ranges of ", n_layers, " layers")));
  RETURN_IF_ERROR(FitWeights(layers, options.export_profile));
  RETURN_IF_ERROR(step(Stage::kCalibrating, 0.1, "one pass over the calibration inputs"));
  ASSIGN_OR_RETURN(const int64_t pass_samples,
                   CalibrateActivations(*work, layers, calib, options.act_bits,
                                        options.export_profile, options.max_capture_bytes,
                                        [&](int fitted, int sites) {
                                          return step(Stage::kCalibrating,
                                                      0.1 + 0.9 * fitted / std::max(1, sites),
                                                      absl::StrCat("calibrated ", fitted, " of ",
                                                                   sites, " layer inputs"))
                                              .ok();
                                        }));
  const double calibrate_seconds = SecondsSince(start);
  // The calibrated activation quantizers, for the accuracy before finetuning (QAT learns
  // new step sizes).
  std::vector<std::optional<ActQuant>> calibrated_act(work->sites().size());
  for (size_t s = 0; s < calibrated_act.size(); ++s) {
    calibrated_act[s] = work->session().activation(static_cast<int>(s));
  }
  nlohmann::json qat_report;
  nlohmann::json units = nlohmann::json::array();  // Reconstruction units (ptq).

  // --- FINETUNING: AdaRound per layer, in execution order, on quantized inputs.
  const Clock::time_point finetune_start = Clock::now();
  if (options.finetune == FinetuneMode::kPtq) {
    PtqOptions ptq;
    ptq.iters = options.iters;
    ptq.seed = options.seed;
    ptq.max_capture_bytes = options.max_capture_bytes;
    absl::StatusOr<nlohmann::json> done =
        RunPtq(ptq, *fp, *work, layers, calib, [&](double fraction, const std::string& message) {
          return step(Stage::kFinetuning, fraction, message).ok();
        });
    if (!done.ok()) return done.status().code() == absl::StatusCode::kCancelled ? Cancelled()
                                                                                 : done.status();
    units = *std::move(done);
    RETURN_IF_ERROR(step(Stage::kFinetuning, 1, "reconstruction done"));
  } else if (qat) {
    ASSIGN_OR_RETURN(qat_report,
                     RunQat(QatTrainOptions{options.epochs, options.lr, options.qat_batch_size,
                                            options.seed},
                            *work, layers, *inputs.train,
                            [&](double fraction, const std::string& message) {
                              return step(Stage::kFinetuning, fraction, message);
                            }));
  }
  const double finetune_seconds = SecondsSince(finetune_start);
  // Biases on the integer grid the ONNX export (and integer kernels) add them on.
  const int biases_rounded = QuantizeBiases(layers, work->session());

  // --- EVALUATING: the float model, the calibrated one with nearest rounding (before
  // finetuning) and the finetuned one, all after finetuning so progress only moves forward.
  double evaluate_seconds = 0;
  if (eval.has_value()) {
    const Clock::time_point eval_start = Clock::now();
    const torch::Tensor& labels = *eval->labels;
    RETURN_IF_ERROR(step(Stage::kEvaluating, 0, "top-1 of the float model"));
    ASSIGN_OR_RETURN(double fp32, TopOne(*fp, eval->inputs, labels));
    nlohmann::json accuracy = {{"fp32", fp32}, {"samples", eval->inputs.size(0)}};
    if (options.finetune == FinetuneMode::kNone) {
      RETURN_IF_ERROR(step(Stage::kEvaluating, 0.5, "top-1 of the quantized model"));
      ASSIGN_OR_RETURN(double quantized, TopOne(*work, eval->inputs, labels));
      accuracy["quantized_before_finetune"] = quantized;
      accuracy["quantized"] = quantized;
    } else {
      RETURN_IF_ERROR(step(Stage::kEvaluating, 0.33, "top-1 of the finetuned model"));
      ASSIGN_OR_RETURN(double after, TopOne(*work, eval->inputs, labels));
      RETURN_IF_ERROR(step(Stage::kEvaluating, 0.66, "top-1 before finetuning"));
      std::vector<torch::Tensor> finetuned;
      for (QuantLayer& layer : layers) {
        finetuned.push_back(layer.weight.detach().clone());
        InstallWeight(layer, layer.nearest_weight);
      }
      std::vector<std::optional<ActQuant>> finetuned_act(calibrated_act.size());
      for (size_t s = 0; s < calibrated_act.size(); ++s) {
        finetuned_act[s] = work->session().activation(static_cast<int>(s));
        work->session().SetActivation(static_cast<int>(s), calibrated_act[s]);
      }
      QuantizeBiases(layers, work->session());
      ASSIGN_OR_RETURN(double before, TopOne(*work, eval->inputs, labels));
      for (size_t i = 0; i < layers.size(); ++i) InstallWeight(layers[i], finetuned[i]);
      for (size_t s = 0; s < finetuned_act.size(); ++s) {
        work->session().SetActivation(static_cast<int>(s), finetuned_act[s]);
      }
      QuantizeBiases(layers, work->session());
      accuracy["quantized_before_finetune"] = before;
      accuracy["quantized"] = after;
    }
    report["accuracy"] = accuracy;
    RETURN_IF_ERROR(EvaluateFrontier(
        inputs, calib, options.act_bits, options.export_profile, options.max_capture_bytes,
        options.frontier_evals, report, [&](int done, int total) {
          return step(Stage::kEvaluating, 0.8 + 0.2 * done / std::max(1, total),
                      absl::StrCat("top-1 at frontier point ", done + 1, " of ", total))
              .ok();
        }));
    evaluate_seconds = SecondsSince(eval_start);
  }

  // --- EXPORTING: the working model with fake quantization in its own forward graph.
  const Clock::time_point export_start = Clock::now();
  RETURN_IF_ERROR(step(Stage::kExporting, 0, "writing model_quantized.pt"));
  std::error_code fs_error;
  std::filesystem::create_directories(options.out_dir, fs_error);
  if (fs_error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", options.out_dir, ": ", fs_error.message()));
  }
  EncodingsBuilder encodings;
  std::vector<std::optional<ActQuant>> site_act(work->sites().size());
  for (const QuantLayer& layer : layers) {
    RETURN_IF_ERROR(encodings.AddParam(layer.weight_key, layer.weight_params));
    for (size_t k = 0; k < layer.sites.size(); ++k) {
      site_act[layer.sites[k]] = work->session().activation(layer.sites[k]);
      if (!site_act[layer.sites[k]].has_value()) continue;
      const std::string tensor =
          k == 0 ? layer.name + ".input" : absl::StrCat(layer.name, ".input.", k);
      RETURN_IF_ERROR(encodings.AddActivation(tensor, site_act[layer.sites[k]]->params));
    }
  }
  const std::filesystem::path out(options.out_dir);
  std::shared_ptr<torch::jit::Graph> exported_graph;
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kInternal, reason::kInternal, "cannot export the quantized model", [&] {
        torch::jit::Module& module = work->module();
        std::shared_ptr<torch::jit::Graph> graph = module.get_method("forward").graph();
        PrepareForwardGraph(*graph, module);  // As in InstrumentedModel: the same sites.
        std::vector<LayerSiteNode> sites = FindLayerSites(*graph, module);
        TORCH_CHECK(sites.size() == site_act.size(),
                    "the exported graph has a different number of layer sites");
        const c10::Symbol fake_quantize =
            c10::Symbol::fromQualString("aten::fake_quantize_per_tensor_affine");
        for (size_t s = 0; s < sites.size(); ++s) {
          TORCH_CHECK(sites[s].name == work->sites()[s].name, "layer sites differ in order");
          if (!site_act[s].has_value()) continue;
          const ActQuant& act = *site_act[s];
          Node* node = sites[s].node;
          torch::jit::WithInsertPoint insert_point(node);
          Value* quantized = graph->insert(
              fake_quantize, {node->input(0), act.scale, act.zero_point,
                              act.params.quant_min(), act.params.quant_max()});
          node->replaceInput(0, quantized);
        }
        graph->lint();
        module.save((out / kModelFile).string());
        exported_graph = graph;
      }));
  // model_quantized.onnx from the same graph; a graph it cannot translate costs the job
  // only that file.
  RETURN_IF_ERROR(step(Stage::kExporting, 0.5, "writing model_quantized.onnx"));
  std::vector<std::string> files = {kModelFile, kEncodingsFile};
  nlohmann::json onnx_report;
  {
    const Clock::time_point onnx_start = Clock::now();
    OnnxExportInput onnx_input;
    onnx_input.module = &work->module();
    onnx_input.graph = exported_graph.get();
    onnx_input.profile = options.export_profile;
    for (const QuantLayer& layer : layers) onnx_input.weights[layer.name] = layer.weight_params;
    onnx_input.sample_shape.assign(calib.sizes().begin() + 1, calib.sizes().end());
    absl::StatusOr<std::string> onnx = ExportOnnx(onnx_input);
    if (onnx.ok()) {
      RETURN_IF_ERROR(WriteFileBytes(out / kOnnxFile, *onnx));
      files.push_back(kOnnxFile);
      onnx_report = {{"status", "exported"},
                     {"opset", kOnnxOpset},
                     {"profile", ExportProfileName(options.export_profile)},
                     {"size_bytes", onnx->size()},
                     {"seconds", SecondsSince(onnx_start)}};
    } else {
      onnx_report = {{"status", "skipped"}, {"reason", std::string(onnx.status().message())}};
      nlohmann::json& warnings = report["warnings"];
      if (!warnings.is_array()) warnings = nlohmann::json::array();
      warnings.push_back(absl::StrCat("no model_quantized.onnx: ", onnx.status().message()));
    }
  }
  RETURN_IF_ERROR(WriteFileBytes(out / kEncodingsFile, encodings.Build().dump(2) + "\n"));
  const double export_seconds = SecondsSince(export_start);

  // --- The report.
  nlohmann::json per_layer = nlohmann::json::array();
  for (const QuantLayer& layer : layers) {
    nlohmann::json entry = {{"name", layer.name},
                            {"bits", layer.bits},
                            {"batch_norm_folded", layer.folded},
                            {"rounding", layer.method},
                            {"sites", layer.sites.size()}};
    if (!std::isnan(layer.mse_nearest)) {
      entry["reconstruction_mse_nearest"] = layer.mse_nearest;
      entry["reconstruction_mse"] = layer.mse_quantized;
      entry["reconstruction_samples"] = layer.samples;
    }
    if (!layer.note.empty()) entry["note"] = layer.note;
    per_layer.push_back(std::move(entry));
  }
  const char* grid = SymmetricGrid(options.export_profile) ? "symmetric" : "asymmetric";
  const std::string biases = absl::StrCat(
      "on the int32 grid of input scale x weight scale (", biases_rounded, " layers; ",
      options.export_profile == ExportProfile::kTensorRt ? "float in the file, TensorRT's form"
                                                         : "int32 in the file",
      "), else float");
  report["quantization"] = {
      {"finetune", FinetuneModeName(options.finetune)},
      {"act_bits", options.act_bits},
      {"calib_samples", calib.size(0)},
      {"activation_calib_samples", pass_samples},
      {"iters", options.finetune == FinetuneMode::kPtq ? options.iters : 0},
      {"seed", options.seed},
      {"export_profile", ExportProfileName(options.export_profile)},
      {"weights", absl::StrCat("per output channel, ", grid, ", MSE (p=2.4) clipping")},
      {"activations", absl::StrCat("per tensor, ", grid, ", at every layer's input")},
      {"biases", biases},
      {"layers", per_layer}};
  if (qat) report["quantization"]["qat"] = qat_report;
  if (options.finetune == FinetuneMode::kPtq) report["quantization"]["units"] = units;
  report["export"] = {{"onnx", onnx_report}};
  nlohmann::json& timings = report["timings_seconds"];
  if (!timings.is_object()) timings = nlohmann::json::object();
  timings["calibrate"] = calibrate_seconds;
  timings["finetune"] = finetune_seconds;
  timings["evaluate"] = evaluate_seconds;
  timings["export"] = export_seconds;
  return files;
}

}  // namespace ompq::engine