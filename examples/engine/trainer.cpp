#include "trainer.hpp"

#include "amp.hpp"
#include "checkpoint_store.hpp"
#include "train_log.hpp"
#include "weights.hpp"

#include "data/loader.hpp"
#include "eval/training_curves.hpp"
#include "io/atomic_file.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <tuple>

namespace cac_engine {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration<double>(end - start).count();
}

/// Makes the work dir ready for a run (rank 0): a work dir that holds a run (any of the files
/// `train` writes) is continued (`resume`), emptied of those files (`overwrite`) or refused, so two
/// runs never mix; other files are left alone. `config.yaml` is written later, once the run is
/// known to have work to do.
void prepare_work_dir(const TrainOptions& options) {
  const std::filesystem::path& dir = options.work_dir();
  std::vector<std::filesystem::path> run_files = CheckpointStore(dir, 0, false).files();
  for (const char* name : {"log.jsonl", "config.yaml", "curves.png"}) {
    if (std::filesystem::exists(dir / name)) run_files.push_back(dir / name);
  }
  if (!options.resume() && !run_files.empty()) {
    TORCH_CHECK(options.overwrite(), "cac_engine::train: expected a work directory without a run but ", dir.string(),
                " holds one (", run_files.front().filename().string(), ", ", run_files.size(),
                " files); use --resume to continue it, --overwrite to replace it, or another --work-dir");
    for (const auto& file : run_files) std::filesystem::remove(file);
  }
}

/// `config` with `runtime.seed` set to the seed of this run (`--seed` or the config's); seeds
/// LibTorch with it and turns on deterministic algorithms when asked. The same seed on every rank
/// (mmseg's default): identical initial weights, dropout streams and RNG states, so rank 0's
/// checkpoint resumes every rank.
Config seeded(const Config& config, const TrainOptions& options) {
  const int64_t seed = options.seed() ? *options.seed() : config.get<int64_t>("runtime.seed");
  Config effective = config;
  effective.set("runtime.seed=" + std::to_string(seed));
  if (options.deterministic()) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  torch::manual_seed(static_cast<uint64_t>(seed));
  return effective;
}

/// The model of `config` (announcing a data-parallel run) with its initial weights (`model.pretrained`,
/// then `--load-from`), on `device`, its `SyncBN` layers synchronised over `group`, in training mode.
cac_models::EncoderDecoder build_initial_model(const Config& effective, const TrainOptions& options,
                                               torch::Device device, const std::shared_ptr<ProcessGroup>& group,
                                               bool verbose) {
  if (verbose && group->size() > 1)
    fmt::print("data-parallel training: {} processes ({})\n", group->size(), group->backend());
  cac_models::EncoderDecoder model = build_model(effective);
  const std::string source = effective.get<std::string>("model.pretrained_source");
  for (const std::string& initial : {pretrained_weights(effective), options.load_from()}) {
    if (initial.empty()) continue;
    const std::string report = load_pretrained(*model, initial, source);
    if (verbose) fmt::print("initial weights {}: {}\n", initial, report);
  }
  model->to(device);
  const int64_t synchronized = synchronize_batch_norms(*model, group);
  if (verbose && synchronized > 0) fmt::print("SyncBN: {} batch norms synchronised\n", synchronized);
  model->train();  // training mode, with the backbone's norm_eval applied
  return model;
}

/// `runtime.amp` and `runtime.amp_dtype`.
MixedPrecision build_amp(const Config& effective, torch::Device device) {
  const std::string amp_dtype = effective.get<std::string>("runtime.amp_dtype");
  return MixedPrecision(effective.get<bool>("runtime.amp"), device,
                        amp_dtype == "auto" ? c10::optional<c10::ScalarType>()
                                            : (amp_dtype == "float16" ? torch::kHalf : torch::kBFloat16));
}

/// The run's rhythm: when to log, evaluate and checkpoint, how many checkpoints to keep, where to
/// stop, and the gradient clipping.
struct Schedule {
  int64_t log = 0, evaluation = 0, checkpoint = 0, keep_last = 0, end = 0;
  double grad_clip = 0.0;
};

Schedule schedule_of(const Config& effective, const TrainOptions& options, const LrSchedule& lr) {
  Schedule every;
  every.grad_clip = effective.get<double>("optimizer.grad_clip");
  every.log = effective.get<int64_t>("runtime.log_interval");
  every.evaluation = effective.get<int64_t>("evaluation.interval");
  every.checkpoint = effective.get<int64_t>("runtime.checkpoint_interval");
  every.keep_last = effective.get<int64_t>("runtime.keep_last");
  every.end = options.stop_at() > 0 ? std::min(options.stop_at(), lr.iterations()) : lr.iterations();
  return every;
}

/// Why a resumed run has nothing left to do (its checkpoint is at or past where this run stops and
/// no evaluation is pending), or "" when it has work. Such a run rewrites nothing.
std::string nothing_to_do(const TrainOptions& options, const TrainState& state, const Schedule& every,
                          int64_t iterations) {
  if (!options.resume() || state.iteration < every.end || state.evaluation_pending) return "";
  const std::string dir = options.work_dir().string();
  if (every.end < iterations) {
    return fmt::format(
        "work dir {} is already at iteration {} (--stop-at {}); nothing to do, no file rewritten — to continue, "
        "--resume with a later --stop-at or none",
        dir, state.iteration, options.stop_at());
  }
  return fmt::format(
      "work dir {} already finished at iteration {} of {}; nothing to do, no file rewritten — to train longer, raise "
      "schedule.iterations (e.g. --set schedule.iterations={}) and --resume again (the learning-rate schedule then "
      "spans the new length)",
      dir, state.iteration, iterations, std::max(state.iteration, iterations) * 2);
}

/// The training split; rank 0 first, so a generated dataset (context_shift) is written once.
std::shared_ptr<cac_data::Dataset> build_train_dataset(const Config& effective, ProcessGroup& group) {
  std::shared_ptr<cac_data::Dataset> dataset;
  if (group.rank() == 0) dataset = build_dataset(effective, "train");
  group.barrier();
  if (group.rank() != 0) dataset = build_dataset(effective, "train");
  return dataset;
}

/// The next training batch on `device` and the seconds it took to get there.
struct DeviceBatch {
  cac_data::Batch batch;
  torch::Tensor images, labels;
  double seconds = 0.0;
};

DeviceBatch next_batch(cac_data::TrainLoader& loader, torch::Device device) {
  const auto start = Clock::now();
  DeviceBatch out{loader.next(), {}, {}, 0.0};
  out.images = out.batch.images.to(device, /*non_blocking=*/true);
  out.labels = out.batch.labels.to(device, /*non_blocking=*/true);
  out.seconds = seconds(start, Clock::now());
  return out;
}

/// One optimisation step of iteration `iteration` (1-based) at learning rate `lr`: forward (with
/// autocast when enabled), a check that the total loss is finite, backward, gradients averaged
/// over the ranks of `group`, clipping and the optimizer step. Returns the loss terms.
std::map<std::string, torch::Tensor> train_step(cac_models::EncoderDecoder& model, torch::optim::Optimizer& optimizer,
                                                MixedPrecision& amp, const DeviceBatch& data, double lr,
                                                double grad_clip, ProcessGroup& group, int64_t iteration) {
  set_learning_rate(optimizer, lr);
  optimizer.zero_grad();
  const auto losses = amp.forward([&] { return model->forward_train(data.images, data.labels); });
  const double total = losses.at("total").item<double>();
  TORCH_CHECK(std::isfinite(total), "cac_engine::train: the loss became ", total, " at iteration ", iteration,
              " on rank ", group.rank(), "; lower optimizer.lr or set optimizer.grad_clip");
  amp.backward_and_step(losses.at("total"), optimizer, model->parameters(), grad_clip,
                        [&] { average_gradients(*model, group); });
  return losses;
}

/// The log of a run: `dir/log.jsonl` on rank 0, continuing after `state` when resuming.
TrainLogOptions log_options(const TrainOptions& options, bool main_rank, int64_t total, const TrainState& state) {
  return TrainLogOptions()
      .path(main_rank ? options.work_dir() / "log.jsonl" : "")
      .verbose(options.verbose() && main_rank)
      .total(total)
      .resume_from(options.resume() ? std::optional<int64_t>(state.iteration) : std::nullopt);
}

/// `body()`, but `on_failure()` first when it throws (then the exception goes on).
template <class Body, class OnFailure>
auto with_fallback(Body&& body, OnFailure&& on_failure) {
  try {
    return body();
  } catch (...) {
    on_failure();
    throw;
  }
}

}  // namespace

torch::Device parse_device(const std::string& spec) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(spec);
  } catch (const c10::Error&) {
    TORCH_CHECK(false, "cac_engine::parse_device: expected a device cpu, cuda or cuda:N but got '", spec, "'");
  }
  TORCH_CHECK(!device.is_cuda() || torch::cuda::is_available(),
              "cac_engine::parse_device: expected a CUDA device for '", spec,
              "' but this LibTorch build or machine has none");
  return device;
}

TrainResult train(const Config& config, const TrainOptions& options) {
  config.validate();  // every section, required keys, class count: before any work or file
  const Config effective = seeded(config, options);
  torch::Device device = options.device();
  const auto group = options.group() ? options.group() : join_environment_group(device, options.timeout());
  const bool main_rank = group->rank() == 0, verbose = options.verbose() && main_rank;
  const std::filesystem::path& dir = options.work_dir();
  if (main_rank) prepare_work_dir(options);
  cac_models::EncoderDecoder model = build_initial_model(effective, options, device, group, verbose);
  auto optimizer = build_optimizer(effective, *model);
  const LrSchedule lr_schedule(effective);
  MixedPrecision amp = build_amp(effective, device);
  const Schedule every = schedule_of(effective, options, lr_schedule);
  cac_data::TrainLoader loader(build_train_dataset(effective, *group), train_pipeline(effective),
                               loader_options(effective, device, group->rank(), group->size()));
  const CheckpointStore store(dir, every.keep_last, main_rank);
  TrainState state;
  if (options.resume())
    loader.restore((state = store.resume(*model, *optimizer, loader.options(), loader.batches_per_epoch())).loader);
  if (const std::string done = nothing_to_do(options, state, every, lr_schedule.iterations()); !done.empty()) {
    if (verbose) fmt::print("{}\n", done);
    group->barrier();
    return TrainResult{state.iteration, {}, {}, {}, 0.0, /*already_finished=*/true};
  }
  if (main_rank) cac_io::write_file(dir / "config.yaml", effective.dump());
  broadcast_parameters(*model, *group);
  TrainLog log(log_options(options, main_rank, lr_schedule.iterations(), state), *group);
  TrainResult result{state.iteration};
  const auto checkpoint = [&](int64_t iteration, bool evaluation_pending = false) {
    state = TrainState{iteration, loader.state(), state.best_miou, evaluation_pending};
    store.save(*model, *optimizer, state, loader.options(), effective);
  };
  const auto run_evaluation = [&](int64_t iteration) {  // a failed evaluation costs no training: checkpoint first
    const EvaluateResult evaluation =
        with_fallback([&] { return evaluate(model, effective, EvaluateOptions().device(device).group(group)); },
                      [&] { checkpoint(iteration, /*evaluation_pending=*/true); });
    model->train();
    result.evaluations.push_back({iteration, evaluation.metrics});
    log.evaluation(iteration, evaluation.metrics, evaluation.images, evaluation.ms_per_image);
    store.update_best(*model, evaluation.metrics.mIoU, state);
  };
  const int64_t first = state.iteration;
  if (state.evaluation_pending) {  // the resumed run's evaluation at `first` failed: run it, and record it
    run_evaluation(first);         // done (else a later resume would run it again)
    checkpoint(first);
  }
  for (int64_t iter = first; iter < every.end; ++iter) {
    const DeviceBatch data = next_batch(loader, device);
    const auto start = Clock::now();
    const auto losses =
        train_step(model, *optimizer, amp, data, lr_schedule.at(iter), every.grad_clip, *group, iter + 1);
    log.add(losses, data.seconds, seconds(start, Clock::now()));
    const int64_t done = iter + 1;
    if (done % every.log == 0 || done == every.end)
      log.flush(done, lr_schedule.at(iter), data.batch.epoch, data.images.size(0) * group->size());
    if (every.evaluation > 0 && done % every.evaluation == 0 && done != every.end) run_evaluation(done);
    if (every.checkpoint > 0 && done % every.checkpoint == 0 && done != every.end) checkpoint(done);
    result.iteration = done;
  }
  if (result.iteration > first) {
    if (options.stop_at() == 0 || every.end == lr_schedule.iterations()) run_evaluation(result.iteration);
    checkpoint(result.iteration);
  }
  if (!result.evaluations.empty()) result.final = result.evaluations.back().metrics;
  std::tie(result.losses, result.seconds_per_iteration) = std::make_pair(log.losses(), log.seconds_per_iteration());
  if (main_rank)
    cac_eval::write_png(dir / "curves.png", cac_eval::draw_training_curves({{"total loss", dir / "log.jsonl"}}));
  group->barrier();  // every rank returns after rank 0's files exist
  return result;
}

}  // namespace cac_engine
