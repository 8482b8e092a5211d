#include "checkpoint_store.hpp"

#include "trainer.hpp"

#include "io/atomic_file.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <regex>

namespace cac_engine {

namespace {

void write_model(torch::serialize::OutputArchive& archive, torch::nn::Module& model) {
  torch::serialize::OutputArchive weights;
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters()) weights.write(item.key(), item.value());
  for (const auto& item : model.named_buffers()) weights.write(item.key(), item.value(), /*is_buffer=*/true);
  archive.write("model", weights);
}

/// What a checkpoint of cac-train says it holds ("a cac-train checkpoint of fcn_tiny + CAC with 150
/// classes"), from the config stored in it; `best.pt` and `save_weights` files store none.
std::string describe_checkpoint(torch::serialize::InputArchive& archive) {
  c10::IValue yaml;
  if (!archive.try_read("config", yaml) || !yaml.isString()) return "a checkpoint of cac-train";
  try {
    const Config config = Config::parse(yaml.toStringRef());
    return fmt::format("a cac-train checkpoint of {}{} with {} classes", config.get<std::string>("model.name"),
                       config.get<bool>("model.cac") ? " + CAC" : "", config.get<int64_t>("model.num_classes"));
  } catch (const std::exception&) {
    return "a checkpoint of cac-train";
  }
}

void read_model(torch::serialize::InputArchive& archive, torch::nn::Module& model, const std::string& path) {
  torch::serialize::InputArchive weights;
  TORCH_CHECK(archive.try_read("model", weights), "cac_engine::load_weights: expected a 'model' entry in ", path,
              " (a checkpoint of cac-train)");
  const auto mismatch = [&](const std::string& problem) {
    TORCH_CHECK(false, "cac_engine::load_weights: ", path, " is ", describe_checkpoint(archive),
                ", not one of this model: ", problem,
                ". Use the config the checkpoint was trained with (model.name, model.num_classes, model.cac), "
                "or convert its weights with cac-convert and load the matching keys with --load-from.");
  };
  torch::NoGradGuard no_grad;
  const auto load = [&](const std::string& key, torch::Tensor& target, bool buffer) {
    torch::Tensor value;
    if (!weights.try_read(key, value, buffer)) mismatch("the model's key '" + key + "' is missing");
    if (value.sizes() != target.sizes()) {
      mismatch(c10::str("'", key, "' has shape ", value.sizes(), " but the model expects ", target.sizes()));
    }
    target.copy_(value);
  };
  for (auto& item : model.named_parameters()) load(item.key(), item.value(), false);
  for (auto& item : model.named_buffers()) load(item.key(), item.value(), true);
}

/// Saves `archive` to `path` with `cac_io::AtomicFile`, streamed (no copy of the checkpoint in
/// memory); a failed write is reported as the file's error, not as the zip writer's.
void save_archive(torch::serialize::OutputArchive& archive, const std::filesystem::path& path) {
  cac_io::AtomicFile file(path);
  try {
    archive.save_to([&file](const void* data, size_t size) { return file.write_or_defer(data, size); });
  } catch (const c10::Error&) {
    const std::string deferred = file.deferred_error();
    if (deferred.empty()) throw;
    throw std::runtime_error(deferred);
  }
  file.commit();
}

torch::serialize::InputArchive open_archive(const std::filesystem::path& path, const char* what) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cac_engine::", what, ": expected a checkpoint at ",
              path.string(), " but there is none");
  torch::serialize::InputArchive archive;
  archive.load_from(path.string());
  return archive;
}

}  // namespace

void save_weights(torch::nn::Module& model, const std::filesystem::path& path) {
  torch::serialize::OutputArchive archive;
  write_model(archive, model);
  save_archive(archive, path);
}

void load_weights(torch::nn::Module& model, const std::filesystem::path& path) {
  torch::serialize::InputArchive archive = open_archive(path, "load_weights");
  read_model(archive, model, path.string());
}

cac_data::LoaderState convert_loader_state(const cac_data::LoaderState& saved, int64_t saved_step,
                                           const cac_data::LoaderOptions& options, int64_t batches_per_epoch) {
  const int64_t step = options.batch_size() * options.world_size();
  if (saved_step == step) return saved;
  cac_data::LoaderState state{saved.epoch, saved.position * saved_step / step};
  if (state.position >= batches_per_epoch) state = {saved.epoch + 1, 0};
  return state;
}

CheckpointStore::CheckpointStore(std::filesystem::path dir, int64_t keep_last, bool writes)
    : dir_(std::move(dir)), keep_last_(keep_last), writes_(writes) {}

void CheckpointStore::save(torch::nn::Module& model, torch::optim::Optimizer& optimizer, const TrainState& state,
                           const cac_data::LoaderOptions& loader, const Config& config) const {
  if (!writes_) return;
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
  archive.write("evaluation_pending", torch::tensor(static_cast<int64_t>(state.evaluation_pending)));
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    archive.write("cpu_rng", generator.get_state());
  }
  archive.write("config", c10::IValue(config.dump()));
  const std::filesystem::path numbered_path = dir_ / fmt::format("iter_{}.pt", state.iteration);
  save_archive(archive, numbered_path);
  cac_io::publish_link(numbered_path, latest());
  const auto existing = numbered();
  for (size_t i = 0; keep_last_ > 0 && i + static_cast<size_t>(keep_last_) < existing.size(); ++i) {
    std::filesystem::remove(existing[i].second);
  }
}

TrainState CheckpointStore::resume(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                   const cac_data::LoaderOptions& loader, int64_t batches_per_epoch) const {
  const std::filesystem::path path = latest();
  TORCH_CHECK(std::filesystem::is_regular_file(path),
              "cac_engine::CheckpointStore::resume: expected a checkpoint to "
              "resume from at ",
              path.string(), " but there is none");
  torch::serialize::InputArchive archive = open_archive(path, "CheckpointStore::resume");
  read_model(archive, model, path.string());
  torch::serialize::InputArchive optimizer_archive;
  TORCH_CHECK(archive.try_read("optimizer", optimizer_archive),
              "cac_engine::CheckpointStore::resume: expected optimizer state in ", path.string());
  optimizer.load(optimizer_archive);
  // A fresh tensor per key: InputArchive::read calls set_ on a defined tensor.
  const auto read = [&](const char* key) {
    torch::Tensor value;
    TORCH_CHECK(archive.try_read(key, value), "cac_engine::CheckpointStore::resume: expected '", key,
                "' in the checkpoint ", path.string());
    return value;
  };
  TrainState state;
  state.iteration = read("iteration").item<int64_t>();
  state.loader.epoch = read("loader_epoch").item<int64_t>();
  state.loader.position = read("loader_position").item<int64_t>();
  torch::Tensor saved_step;  // absent from checkpoints of single-process versions: same geometry
  if (archive.try_read("loader_samples_per_step", saved_step)) {
    state.loader = convert_loader_state(state.loader, saved_step.item<int64_t>(), loader, batches_per_epoch);
  }
  state.best_miou = read("best_miou").item<double>();
  torch::Tensor pending;  // absent from checkpoints of earlier versions: nothing pending
  state.evaluation_pending = archive.try_read("evaluation_pending", pending) && pending.item<int64_t>() != 0;
  const torch::Tensor value = read("cpu_rng");
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(value);
  return state;
}

bool CheckpointStore::update_best(torch::nn::Module& model, double miou, TrainState& state) const {
  if (!(miou > state.best_miou)) return false;
  state.best_miou = miou;
  if (writes_) save_weights(model, best());
  return true;
}

std::vector<std::filesystem::path> CheckpointStore::files() const {
  std::vector<std::filesystem::path> out;
  if (!std::filesystem::is_directory(dir_)) return out;
  for (const auto& [iteration, path] : numbered()) out.push_back(path);
  for (const auto& path : {latest(), best()}) {
    if (std::filesystem::exists(path)) out.push_back(path);
  }
  return out;
}

std::vector<std::pair<int64_t, std::filesystem::path>> CheckpointStore::numbered() const {
  std::vector<std::pair<int64_t, std::filesystem::path>> out;
  const std::regex pattern("iter_([0-9]+)\\.pt");
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    std::smatch match;
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, match, pattern)) out.emplace_back(std::stoll(match[1]), entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace cac_engine
