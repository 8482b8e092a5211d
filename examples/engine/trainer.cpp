#include "trainer.hpp"

#include "amp.hpp"

#include "data/loader.hpp"
#include "eval/inference.hpp"
#include "eval/visualize.hpp"
#include "models/converters.hpp"

#include <cac/io/io.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <regex>

namespace cac_engine {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return fmt::format("{:02d}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
}

/// Writes `text` to `path` atomically.
void write_text(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path temp = path.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary);
    TORCH_CHECK(out.good(), "cac_engine: expected to write ", temp.string(), " but could not open it");
    out << text;
    TORCH_CHECK(out.good(), "cac_engine: expected to write ", temp.string(), " but the write failed");
  }
  std::filesystem::rename(temp, path);
}

/// Saves `archive` to `path` atomically.
void save_archive(torch::serialize::OutputArchive& archive, const std::filesystem::path& path) {
  const std::filesystem::path temp = path.string() + ".tmp";
  archive.save_to(temp.string());
  std::filesystem::rename(temp, path);
}

void write_model(torch::serialize::OutputArchive& archive, torch::nn::Module& model) {
  torch::serialize::OutputArchive weights;
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters()) weights.write(item.key(), item.value());
  for (const auto& item : model.named_buffers()) weights.write(item.key(), item.value(), /*is_buffer=*/true);
  archive.write("model", weights);
}

void read_model(torch::serialize::InputArchive& archive, torch::nn::Module& model, const std::string& path) {
  torch::serialize::InputArchive weights;
  TORCH_CHECK(archive.try_read("model", weights), "cac_engine: expected a 'model' entry in ", path,
              " (a checkpoint of cac-train)");
  torch::NoGradGuard no_grad;
  const auto load = [&](const std::string& key, torch::Tensor& target, bool buffer) {
    torch::Tensor value;
    TORCH_CHECK(weights.try_read(key, value, buffer), "cac_engine: expected the key '", key, "' in ", path,
                " but it is missing");
    TORCH_CHECK(value.sizes() == target.sizes(), "cac_engine: expected '", key, "' of shape ", target.sizes(),
                " in ", path, " but got ", value.sizes());
    target.copy_(value);
  };
  for (auto& item : model.named_parameters()) load(item.key(), item.value(), false);
  for (auto& item : model.named_buffers()) load(item.key(), item.value(), true);
}

/// The numbered checkpoints `iter_N.pt` of `dir`, oldest first.
std::vector<std::pair<int64_t, std::filesystem::path>> numbered_checkpoints(const std::filesystem::path& dir) {
  std::vector<std::pair<int64_t, std::filesystem::path>> out;
  const std::regex pattern("iter_([0-9]+)\\.pt");
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::smatch match;
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, match, pattern)) out.emplace_back(std::stoll(match[1]), entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

/// The training state that a checkpoint holds besides the weights.
struct State {
  int64_t iteration = 0;
  cac_data::LoaderState loader;
  double best_miou = -1.0;
};

void save_checkpoint(const std::filesystem::path& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                     const State& state, const cac_data::LoaderOptions& loader, const Config& config) {
  torch::serialize::OutputArchive archive;
  write_model(archive, model);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("iteration", torch::tensor(state.iteration));
  archive.write("loader_epoch", torch::tensor(state.loader.epoch));
  archive.write("loader_position", torch::tensor(state.loader.position));
  archive.write("loader_samples_per_step", torch::tensor(loader.batch_size() * loader.world_size()));
  archive.write("best_miou", torch::tensor(state.best_miou, torch::kDouble));
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    archive.write("cpu_rng", generator.get_state());
  }
  archive.write("config", c10::IValue(config.dump()));
  save_archive(archive, path);
}

/// Where the loader of `options` continues after `saved` (a position of a run that took
/// `saved_step` samples per step over all ranks): the same epoch, after the same number of samples
/// rounded down to a whole step of this run (so at most one step's samples are seen twice).
cac_data::LoaderState convert_loader_state(const cac_data::LoaderState& saved, int64_t saved_step,
                                           const cac_data::LoaderOptions& options, int64_t batches_per_epoch) {
  const int64_t step = options.batch_size() * options.world_size();
  if (saved_step == step) return saved;
  cac_data::LoaderState state{saved.epoch, saved.position * saved_step / step};
  if (state.position >= batches_per_epoch) state = {saved.epoch + 1, 0};
  return state;
}

State load_checkpoint(const std::filesystem::path& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                      const cac_data::LoaderOptions& loader, int64_t batches_per_epoch) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cac-train: expected a checkpoint to resume from at ",
              path.string(), " but there is none");
  torch::serialize::InputArchive archive;
  archive.load_from(path.string());
  read_model(archive, model, path.string());
  torch::serialize::InputArchive optimizer_archive;
  TORCH_CHECK(archive.try_read("optimizer", optimizer_archive), "cac-train: expected optimizer state in ",
              path.string());
  optimizer.load(optimizer_archive);
  // A fresh tensor per key: InputArchive::read calls set_ on a defined tensor.
  const auto read = [&](const char* key) {
    torch::Tensor value;
    TORCH_CHECK(archive.try_read(key, value), "cac-train: expected '", key, "' in the checkpoint ", path.string());
    return value;
  };
  State state;
  state.iteration = read("iteration").item<int64_t>();
  state.loader.epoch = read("loader_epoch").item<int64_t>();
  state.loader.position = read("loader_position").item<int64_t>();
  torch::Tensor saved_step;  // absent from checkpoints of single-process versions: same geometry
  if (archive.try_read("loader_samples_per_step", saved_step)) {
    state.loader = convert_loader_state(state.loader, saved_step.item<int64_t>(), loader, batches_per_epoch);
  }
  state.best_miou = read("best_miou").item<double>();
  const torch::Tensor value = read("cpu_rng");
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(value);
  return state;
}

/// Appends one JSON object per line to `log.jsonl`.
class JsonLog {
 public:
  explicit JsonLog(const std::filesystem::path& path, bool append) : out_(path, append ? std::ios::app : std::ios::trunc) {
    TORCH_CHECK(out_.good(), "cac-train: expected to write ", path.string(), " but could not open it");
  }
  void write(const nlohmann::json& record) { out_ << record.dump() << std::endl; }

 private:
  std::ofstream out_;
};

void plot_training(const std::filesystem::path& dir, const TrainResult& result) {
  cac_eval::Curve loss{"total loss", {}, {}, std::nullopt};
  for (const auto& [iter, value] : result.losses) {
    loss.x.push_back(static_cast<double>(iter));
    loss.y.push_back(value);
  }
  cac_eval::Curve miou{"mIoU (%)", {}, {}, std::nullopt};
  for (const auto& record : result.evaluations) {
    miou.x.push_back(static_cast<double>(record.iteration));
    miou.y.push_back(100.0 * record.metrics.mIoU);
  }
  const cv::Mat top = cac_eval::draw_curves({loss}, cac_eval::PlotOptions().title("training loss").x_label("iteration"));
  const cv::Mat bottom =
      cac_eval::draw_curves({miou}, cac_eval::PlotOptions().title("validation mIoU (%)").x_label("iteration"));
  cv::Mat both;
  cv::vconcat(top, bottom, both);
  cac_eval::write_png(dir / "curves.png", both);
}

}  // namespace

torch::Device parse_device(const std::string& spec) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(spec);
  } catch (const c10::Error&) {
    TORCH_CHECK(false, "cac: expected a device cpu, cuda or cuda:N but got '", spec, "'");
  }
  TORCH_CHECK(!device.is_cuda() || torch::cuda::is_available(), "cac: expected a CUDA device for '", spec,
              "' but this LibTorch build or machine has none");
  return device;
}

void save_weights(torch::nn::Module& model, const std::filesystem::path& path) {
  torch::serialize::OutputArchive archive;
  write_model(archive, model);
  save_archive(archive, path);
}

void load_weights(torch::nn::Module& model, const std::filesystem::path& path) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cac: expected a checkpoint at ", path.string(),
              " but there is none");
  torch::serialize::InputArchive archive;
  archive.load_from(path.string());
  read_model(archive, model, path.string());
}

std::string load_pretrained(torch::nn::Module& model, const std::filesystem::path& path, const std::string& source) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cac: expected initial weights at ", path.string(),
              " but there is none");
  try {
    load_weights(model, path);
    return "loaded every key of " + path.string();
  } catch (const c10::Error&) {
    // Not a checkpoint of this engine: a PyTorch one.
  }
  const cac::io::StateDict state_dict =
      cac_models::convert_state_dict(cac::io::read_state_dict(path.string()), cac_models::checkpoint_source(source));
  const cac::io::LoadReport report = cac::io::load_state_dict(model, state_dict, cac::io::LoadOptions().strict(false));
  TORCH_CHECK(!report.loaded_keys.empty(), "cac: expected ", path.string(), " (as ", source,
              ") to share keys with the model but none matched:\n", report.to_string());
  return report.to_string();
}

EvaluateResult evaluate(cac_models::EncoderDecoder& model, const Config& config, const EvaluateOptions& options) {
  const auto dataset = build_dataset(config, "val");
  const auto& info = dataset->info();
  const cac_eval::InferenceOptions inference = options.inference() ? *options.inference() : inference_options(config);
  ProcessGroup single;
  ProcessGroup& group = options.group() ? *options.group() : single;
  cac_data::EvalLoader loader(dataset, test_pipeline(config),
                              loader_options(config, options.device(), group.rank(), group.size()));
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t classes = model->num_classes();
  cac_eval::ConfusionMatrix confusion(classes);
  std::map<std::string, cac_eval::ConfusionMatrix> branch_confusion;
  const bool branches = options.branches() && model->decode_heads().back()->cac;
  if (branches) {
    for (const char* name : {"logits", "context", "oracle"}) branch_confusion.emplace(name, cac_eval::ConfusionMatrix(classes));
  }
  const cac_eval::Palette palette(info.palette.begin(), info.palette.end());
  EvaluateResult result;
  double seconds = 0.0;
  while (auto batch = loader.next()) {
    if (options.limit() > 0 && batch->indices[0] >= options.limit()) break;  // indices ascend
    const torch::Tensor image = batch->images.to(options.device());
    const torch::Tensor label = batch->labels[0];
    const std::vector<int64_t> size{label.size(0), label.size(1)};
    const auto start = Clock::now();
    const torch::Tensor prediction = cac_eval::predict(model, image, inference, size);
    seconds += since(start);
    confusion.update(prediction, label.to(prediction.device()));
    if (branches) {
      const auto outputs = model->forward_branches(image, batch->labels.to(options.device()));
      for (const auto& [name, logits] : outputs) {
        const torch::Tensor resized = cac_models::resize(logits, size, model->decode_heads().back()->options.align_corners());
        branch_confusion.at(name).update(resized.argmax(1)[0], label.to(resized.device()));
      }
    }
    if (!options.show_dir().empty()) {
      const cv::Mat color = cac_eval::colorize(prediction, palette);
      cv::Mat original = dataset->load(static_cast<size_t>(batch->indices[0])).image;
      const std::string name = batch->names[0];
      cac_eval::write_png(options.show_dir() / (name + ".png"), color);
      cac_eval::write_png(options.show_dir() / (name + "_overlay.png"), cac_eval::overlay(original, color, options.opacity()));
    }
    ++result.images;
  }
  // Every rank takes part in the same reductions in the same order (the map is sorted).
  result.metrics = all_reduce(confusion, group).compute();
  for (const auto& [name, matrix] : branch_confusion) result.branches[name] = all_reduce(matrix, group).compute();
  std::vector<torch::Tensor> totals{torch::tensor({static_cast<double>(result.images), seconds}, torch::kDouble)};
  group.all_reduce_sum(totals);
  result.images = static_cast<int64_t>(totals[0][0].item<double>());
  seconds = totals[0][1].item<double>();
  result.ms_per_image = result.images ? 1e3 * seconds / static_cast<double>(result.images) : 0.0;
  return result;
}

TrainResult train(const Config& config, const TrainOptions& options) {
  config.check_keys("", {"model", "data", "optimizer", "schedule", "runtime", "evaluation"});
  config.check_keys("runtime", {"seed", "log_interval", "checkpoint_interval", "keep_last", "device", "amp", "amp_dtype"});
  const int64_t seed = options.seed() ? *options.seed() : config.get<int64_t>("runtime.seed", 0);
  Config effective = config;
  effective.set("runtime.seed=" + std::to_string(seed));
  if (options.deterministic()) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  // The same seed on every rank (mmseg's default): identical initial weights, dropout streams and
  // RNG states, so rank 0's checkpoint resumes every rank.
  torch::manual_seed(static_cast<uint64_t>(seed));

  torch::Device device = options.device();
  const std::shared_ptr<ProcessGroup> group =
      options.group() ? options.group() : join_environment_group(device, options.timeout());
  const int64_t world = group->size();
  const bool main_rank = group->rank() == 0;
  const bool verbose = options.verbose() && main_rank;
  if (verbose && world > 1) fmt::print("data-parallel training: {} processes ({})\n", world, group->backend());

  const auto& dir = options.work_dir();
  if (main_rank) {
    std::filesystem::create_directories(dir);
    write_text(dir / "config.yaml", effective.dump());
  }

  cac_models::EncoderDecoder model = build_model(effective);
  const std::string source = effective.get_choice(
      "model.pretrained_source", {"mmseg", "cac", "backbone", "mmcls", "swin", "torchvision"}, "mmseg");
  for (const std::string& initial : {effective.get<std::string>("model.pretrained", ""), options.load_from()}) {
    if (initial.empty()) continue;
    const std::string report = load_pretrained(*model, initial, source);
    if (verbose) fmt::print("initial weights {}: {}\n", initial, report);
  }
  model->to(device);
  const int64_t synchronized = synchronize_batch_norms(*model, group);
  if (verbose && synchronized > 0) fmt::print("SyncBN: {} batch norms synchronised\n", synchronized);
  auto optimizer = build_optimizer(effective, *model);
  const LrSchedule schedule(effective);
  const std::string amp_dtype = effective.get_choice("runtime.amp_dtype", {"auto", "float16", "bfloat16"}, "auto");
  MixedPrecision amp(effective.get<bool>("runtime.amp", false), device,
                     amp_dtype == "auto" ? c10::optional<c10::ScalarType>()
                                         : (amp_dtype == "float16" ? torch::kHalf : torch::kBFloat16));
  const double grad_clip = effective.get<double>("optimizer.grad_clip", 0.0);
  const int64_t log_interval = std::max<int64_t>(1, effective.get<int64_t>("runtime.log_interval", 50));
  const int64_t eval_interval = effective.get<int64_t>("evaluation.interval", 0);
  const int64_t checkpoint_interval = effective.get<int64_t>("runtime.checkpoint_interval", 0);
  const int64_t keep_last = effective.get<int64_t>("runtime.keep_last", 3);
  const int64_t end = options.stop_at() > 0 ? std::min(options.stop_at(), schedule.iterations()) : schedule.iterations();

  // Rank 0 first: a generated dataset (context_shift) is written once.
  std::shared_ptr<cac_data::Dataset> dataset;
  if (main_rank) dataset = build_dataset(effective, "train");
  group->barrier();
  if (!main_rank) dataset = build_dataset(effective, "train");
  cac_data::TrainLoader loader(dataset, train_pipeline(effective),
                               loader_options(effective, device, group->rank(), world));
  State state;
  if (options.resume()) {
    state = load_checkpoint(dir / "latest.pt", *model, *optimizer, loader.options(), loader.batches_per_epoch());
    loader.restore(state.loader);
  }
  broadcast_parameters(*model, *group);
  std::optional<JsonLog> log;
  if (main_rank) log.emplace(dir / "log.jsonl", options.resume());
  TrainResult result;
  result.iteration = state.iteration;

  const auto checkpoint = [&](int64_t iteration) {
    state.iteration = iteration;
    state.loader = loader.state();
    if (!main_rank) return;
    const std::filesystem::path numbered = dir / fmt::format("iter_{}.pt", iteration);
    save_checkpoint(numbered, *model, *optimizer, state, loader.options(), effective);
    // latest.pt: a second name for the same file (no copy), published atomically; a copy where the
    // file system has no hard links.
    const std::filesystem::path temp = dir / "latest.pt.tmp";
    std::filesystem::remove(temp);
    std::error_code no_link;
    std::filesystem::create_hard_link(numbered, temp, no_link);
    if (no_link) std::filesystem::copy_file(numbered, temp, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::rename(temp, dir / "latest.pt");
    auto existing = numbered_checkpoints(dir);
    for (size_t i = 0; keep_last > 0 && i + static_cast<size_t>(keep_last) < existing.size(); ++i) {
      std::filesystem::remove(existing[i].second);
    }
  };
  const auto run_evaluation = [&](int64_t iteration) {
    const EvaluateResult evaluation = evaluate(model, effective, EvaluateOptions().device(device).group(group));
    model->train();
    result.evaluations.push_back({iteration, evaluation.metrics});
    if (log) {
      log->write({{"iter", iteration}, {"mode", "val"}, {"mIoU", evaluation.metrics.mIoU},
                  {"mAcc", evaluation.metrics.mAcc}, {"aAcc", evaluation.metrics.aAcc}});
    }
    if (verbose) {
      fmt::print("iter {}/{} | val mIoU {:.2f} mAcc {:.2f} aAcc {:.2f} ({} images, {:.1f} ms/img)\n", iteration,
                 schedule.iterations(), 100 * evaluation.metrics.mIoU, 100 * evaluation.metrics.mAcc,
                 100 * evaluation.metrics.aAcc, evaluation.images, evaluation.ms_per_image);
      std::fflush(stdout);
    }
    if (evaluation.metrics.mIoU > state.best_miou) {
      state.best_miou = evaluation.metrics.mIoU;
      if (main_rank) save_weights(*model, dir / "best.pt");
    }
  };
  std::function<void()> average;
  if (world > 1) average = [&] { average_gradients(*model, *group); };

  model->train();
  std::map<std::string, double> sums;
  double data_time = 0.0, step_time = 0.0;
  int64_t logged = 0;
  std::vector<double> step_times;
  const auto started = Clock::now();
  const int64_t first = state.iteration;
  for (int64_t iter = state.iteration; iter < end; ++iter) {
    const auto t0 = Clock::now();
    const cac_data::Batch batch = loader.next();
    const torch::Tensor images = batch.images.to(device, /*non_blocking=*/true);
    const torch::Tensor labels = batch.labels.to(device, /*non_blocking=*/true);
    const auto t1 = Clock::now();
    const double lr = schedule.at(iter);
    set_learning_rate(*optimizer, lr);
    optimizer->zero_grad();
    const auto losses = amp.forward([&] { return model->forward_train(images, labels); });
    const torch::Tensor& total = losses.at("total");
    TORCH_CHECK(std::isfinite(total.item<double>()), "cac-train: the loss became ", total.item<double>(),
                " at iteration ", iter + 1, " on rank ", group->rank(), "; lower optimizer.lr or set optimizer.grad_clip");
    amp.backward_and_step(total, *optimizer, model->parameters(), grad_clip, average);
    data_time += std::chrono::duration<double>(t1 - t0).count();
    step_time += since(t1);
    for (const auto& [name, value] : losses) sums[name] += value.item<double>();
    ++logged;
    const int64_t done = iter + 1;
    if (done % log_interval == 0 || done == end) {
      // Means over the interval and the ranks (one all-reduce; the keys are the same on every rank).
      std::vector<double> values;
      for (const auto& [name, sum] : sums) values.push_back(sum / logged);
      values.push_back(data_time / logged);
      values.push_back(step_time / logged);
      std::vector<torch::Tensor> reduced{torch::tensor(values, torch::kDouble)};
      group->all_reduce_sum(reduced);
      const auto mean = [&](size_t i) { return reduced[0][static_cast<int64_t>(i)].item<double>() / world; };
      nlohmann::json record{{"iter", done}, {"mode", "train"}, {"lr", lr}, {"epoch", batch.epoch}};
      std::string terms;
      size_t i = 0;
      for (const auto& [name, sum] : sums) {
        record[name] = mean(i++);
        if (name != "total") terms += fmt::format(" {} {:.4f}", name, record[name].get<double>());
      }
      const double data_seconds = mean(i), step_seconds = mean(i + 1);
      record["data_time"] = data_seconds;
      record["time"] = data_seconds + step_seconds;
      const double per_iteration = data_seconds + step_seconds;
      step_times.push_back(per_iteration);
      const double loss = record["total"].get<double>();
      result.losses.emplace_back(done, loss);
      if (log) log->write(record);
      if (verbose) {
        const double elapsed = since(started);
        const double eta = elapsed / static_cast<double>(done - first) * static_cast<double>(end - done);
        fmt::print("iter {}/{} | loss {:.4f} |{} | lr {:.3e} | data {:.3f}s step {:.3f}s | {:.1f} img/s | ETA {}\n",
                   done, schedule.iterations(), loss, terms, lr, data_seconds, step_seconds,
                   static_cast<double>(images.size(0) * world) / per_iteration, duration(eta));
        std::fflush(stdout);
      }
      sums.clear();
      data_time = step_time = 0.0;
      logged = 0;
    }
    if (eval_interval > 0 && done % eval_interval == 0 && done != end) run_evaluation(done);
    if (checkpoint_interval > 0 && done % checkpoint_interval == 0 && done != end) checkpoint(done);
    result.iteration = done;
  }
  if (result.iteration > first || result.evaluations.empty()) {
    if (options.stop_at() == 0 || end == schedule.iterations()) run_evaluation(result.iteration);
    checkpoint(result.iteration);
  }
  if (!result.evaluations.empty()) result.final = result.evaluations.back().metrics;
  result.seconds_per_iteration = median(step_times);
  if (main_rank) plot_training(dir, result);
  group->barrier();  // every rank returns after rank 0's files exist
  return result;
}

}  // namespace cac_engine
