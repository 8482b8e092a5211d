// The distributed layer on CPU with Gloo over 127.0.0.1: the test process starts 2 or 3 copies of
// this test binary with launch_workers (each running the hidden "[distributed-worker]" test case
// with a scenario named in CAC_DIST_SCENARIO) and compares what they wrote with single-process
// results computed here.
#include "data/loader.hpp"
#include "engine/distributed.hpp"
#include "engine/launcher.hpp"
#include "engine/engine_test_support.hpp"
#include "engine/trainer.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;
using cac_engine::DistributedEnv;
using cac_engine::ProcessGroup;

namespace {

constexpr int64_t kBatch = 2;  // per process
constexpr int64_t kSteps = 3;

// conv → BN (synchronised or plain) → ReLU → conv; the same names either way.
class TinyNetImpl : public torch::nn::Module {
 public:
  TinyNetImpl(bool sync, std::shared_ptr<ProcessGroup> group) {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1)));
    bn = register_module("bn", cac_models::Norm2d(torch::nn::BatchNorm2dOptions(4), sync));
    conv2 = register_module("conv2", torch::nn::Conv2d(4, 3, 1));
    synchronized = cac_engine::synchronize_batch_norms(*this, std::move(group));
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv2->forward(torch::relu(bn->forward(conv1->forward(x)))); }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  cac_models::Norm2d bn{nullptr};
  int64_t synchronized = 0;
};
TORCH_MODULE(TinyNet);

std::vector<torch::Tensor> state(torch::nn::Module& module) {
  std::vector<torch::Tensor> tensors;
  for (const auto& p : module.named_parameters()) tensors.push_back(p.value().detach().clone());
  for (const auto& b : module.named_buffers()) tensors.push_back(b.value().detach().clone());
  return tensors;
}

// The global batch of step `step`: images [world * kBatch, 3, 6, 6], labels [world * kBatch, 6, 6].
std::pair<torch::Tensor, torch::Tensor> global_batch(int64_t step, int64_t world) {
  torch::manual_seed(1000 + step);
  auto images = torch::randn({world * kBatch, 3, 6, 6});
  auto labels = torch::randint(0, 3, {world * kBatch, 6, 6}, torch::kLong);
  return {images, labels};
}

// k SGD steps of `model` on its slice [offset, offset + batch) of each global batch.
void train(TinyNet& model, ProcessGroup* group, int64_t world, int64_t offset, int64_t batch) {
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-4));
  model->train();
  for (int64_t step = 0; step < kSteps; ++step) {
    auto [images, labels] = global_batch(step, world);
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(images.narrow(0, offset, batch)),
                                                     labels.narrow(0, offset, batch));
    loss.backward();
    if (group) cac_engine::average_gradients(*model, *group);
    optimizer.step();
  }
}

// The confusion data: 6 images of 8×8, 5 classes, label 255 ignored.
std::pair<torch::Tensor, torch::Tensor> confusion_data() {
  torch::manual_seed(5);
  auto predictions = torch::randint(0, 5, {6, 8, 8}, torch::kLong);
  auto labels = torch::randint(0, 6, {6, 8, 8}, torch::kLong);
  labels.masked_fill_(labels == 5, 255);
  return {predictions, labels};
}

fs::path out_dir() { return fs::path(std::getenv("CAC_DIST_DIR")); }

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::chrono::milliseconds scenario_timeout() {
  const char* value = std::getenv("CAC_DIST_TIMEOUT_MS");
  return std::chrono::milliseconds(value ? std::atoll(value) : 20000);
}

// The engine scenario's config: the trainer tests' tiny fcn_tiny run with SyncBN and without
// dropout (whose masks depend on the per-process batch), `batch` images per process.
cac_engine::Config engine_config(const fs::path& dir, int64_t batch) {
  cac_engine::Config config = cac_engine_test::tiny_config(dir / "data", false, 4);
  config.set("data.batch_size=" + std::to_string(batch));
  config.set("model.sync_bn=true");
  config.set("model.dropout_ratio=0");
  config.set("runtime.log_interval=1");
  return config;
}

std::string metrics_text(const cac_eval::Metrics& metrics) { return cac_eval::to_json(metrics).dump(); }

// One worker: runs the scenario, returns its exit code.
int run_scenario(const std::string& scenario) {
  const DistributedEnv env = DistributedEnv::from_env();
  const fs::path dir = out_dir();
  const std::string rank_name = "rank" + std::to_string(env.rank);
  if (scenario == "exit") {
    if (env.rank == 1) return 7;
    std::this_thread::sleep_for(std::chrono::seconds(60));
    return 0;
  }
  if (scenario == "env") {
    const char* local_world = std::getenv("LOCAL_WORLD_SIZE");
    const bool ok = env.launched && env.local_rank == env.rank && env.master_addr == "127.0.0.1" &&
                    env.master_port > 0 && local_world && std::atoll(local_world) == env.world_size;
    return ok ? 0 : 5;
  }

  auto group = std::make_shared<ProcessGroup>();
  group->init(env, torch::kCPU, scenario_timeout());
  if (group->size() != env.world_size || group->rank() != env.rank || group->backend() != "gloo") return 6;

  if (scenario == "train") {
    if (env.world_size == 3) group->set_bucket_bytes(256);  // many buckets, tensors split across them
    torch::manual_seed(100 + env.rank);                     // different initial weights per rank
    TinyNet model(true, group);
    if (model->synchronized != 1) return 10;
    {
      torch::NoGradGuard no_grad;
      model->bn->running_mean.fill_(static_cast<double>(env.rank));  // and different statistics
    }
    torch::save(state(*model), (dir / (rank_name + "_init.pt")).string());
    cac_engine::broadcast_parameters(*model, *group);
    torch::save(state(*model), (dir / (rank_name + "_broadcast.pt")).string());
    train(model, group.get(), env.world_size, env.rank * kBatch, kBatch);
    torch::save(state(*model), (dir / (rank_name + "_trained.pt")).string());
    std::vector<torch::Tensor> ranks{torch::tensor({static_cast<double>(env.rank)}, torch::kDouble)};
    cac_engine::sum_over(group)(ranks);  // 0 + 1 + ... + (W - 1)
    if (std::abs(ranks[0].item<double>() - env.world_size * (env.world_size - 1) / 2.0) > 1e-12) return 8;
    group->barrier();
    return 0;
  }
  if (scenario == "engine") {
    // cac_engine::train on this group (batch 2 per process), then the trained model evaluated by
    // this rank alone and by the group.
    const char* stop_at = std::getenv("CAC_DIST_STOP_AT");
    const auto config = engine_config(dir, 2);
    const auto result = cac_engine::train(config, cac_engine::TrainOptions()
                                                      .work_dir(dir / "work")
                                                      .verbose(false)
                                                      .group(group)
                                                      .stop_at(stop_at ? std::atoll(stop_at) : 0));
    auto model = cac_engine::build_model(config);
    cac_engine::load_weights(*model, dir / "work" / "latest.pt");
    const auto alone = cac_engine::evaluate(model, config);
    const auto shared = cac_engine::evaluate(model, config, cac_engine::EvaluateOptions().group(group));
    const auto limited = cac_engine::evaluate(model, config, cac_engine::EvaluateOptions().group(group).limit(5));
    write_text(dir / (rank_name + "_alone.json"), metrics_text(alone.metrics) + " " + std::to_string(alone.images));
    write_text(dir / (rank_name + "_shared.json"), metrics_text(shared.metrics) + " " + std::to_string(shared.images));
    write_text(dir / (rank_name + "_limited.txt"), std::to_string(limited.images));
    if (!result.evaluations.empty()) write_text(dir / (rank_name + "_final.json"), metrics_text(result.final));
    return 0;
  }
  if (scenario == "confusion") {
    auto [predictions, labels] = confusion_data();
    cac_eval::ConfusionMatrix confusion(5);
    for (int64_t index : cac_data::shard_indices(6, env.rank, env.world_size, true, 3, 0))
      confusion.update(predictions[index], labels[index]);
    auto total = cac_eval::all_reduce(confusion, cac_engine::sum_over(group), group->device());
    torch::save(total.matrix(), (dir / (rank_name + "_confusion.pt")).string());
    return 0;
  }
  if (scenario == "kill" || scenario == "hang") {
    std::vector<torch::Tensor> tensors{torch::ones({1000})};
    group->all_reduce_sum(tensors);
    if (env.rank == 1) {
      if (scenario == "kill") std::raise(SIGKILL);
      std::this_thread::sleep_for(std::chrono::seconds(60));  // alive but silent
      return 0;
    }
    try {
      for (int i = 0; i < 1000; ++i) {
        group->all_reduce_sum(tensors);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    } catch (const c10::Error& error) {
      write_text(dir / (rank_name + ".err"), error.what_without_backtrace());
      return 3;
    }
    return 0;
  }
  return 9;
}

struct RunResult {
  cac_engine::LaunchResult launch;
  double seconds;
};

RunResult run_workers(int64_t nproc, const std::string& scenario, const fs::path& dir,
                      const cac_engine::LaunchOptions& options = {}, int64_t timeout_ms = 20000) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  setenv("CAC_DIST_SCENARIO", scenario.c_str(), 1);
  setenv("CAC_DIST_DIR", dir.c_str(), 1);
  setenv("CAC_DIST_TIMEOUT_MS", std::to_string(timeout_ms).c_str(), 1);
  const auto start = std::chrono::steady_clock::now();
  auto launch = cac_engine::launch_workers(nproc, {"cac_engine_tests", "[distributed-worker]"}, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  unsetenv("CAC_DIST_SCENARIO");
  return {launch, seconds};
}

std::vector<torch::Tensor> load(const fs::path& path) {
  std::vector<torch::Tensor> tensors;
  torch::load(tensors, path.string());
  return tensors;
}

fs::path test_dir(const std::string& name) {
  return fs::temp_directory_path() / ("cac_distributed_" + std::to_string(::getpid()) + "_" + name);
}

}  // namespace

// The body of every worker; hidden, so that only run_workers runs it.
TEST_CASE("distributed worker", "[.][distributed-worker]") {
  const char* scenario = std::getenv("CAC_DIST_SCENARIO");
  if (scenario == nullptr) return;
  std::signal(SIGTERM, SIG_DFL);  // the launcher's SIGTERM ends a worker quietly
  int code = 0;
  try {
    code = run_scenario(scenario);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "worker failed: %s\n", error.what());
    code = 4;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);  // no teardown of the group: the exit code is the result
}

TEST_CASE("DistributedEnv reads torchrun and SLURM variables", "[distributed]") {
  const char* names[] = {"RANK",        "WORLD_SIZE",   "LOCAL_RANK",   "MASTER_ADDR",
                         "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"};
  std::map<std::string, std::string> saved;
  for (const char* name : names) {
    if (const char* value = std::getenv(name)) saved[name] = value;
    unsetenv(name);
  }
  auto env = DistributedEnv::from_env();
  CHECK(env.world_size == 1);
  CHECK(env.rank == 0);
  CHECK_FALSE(env.launched);
  CHECK_FALSE(env.distributed());

  setenv("RANK", "2", 1);
  setenv("WORLD_SIZE", "4", 1);
  setenv("LOCAL_RANK", "0", 1);
  setenv("MASTER_ADDR", "node7", 1);
  setenv("MASTER_PORT", "1234", 1);
  env = DistributedEnv::from_env();
  CHECK(env.rank == 2);
  CHECK(env.world_size == 4);
  CHECK(env.local_rank == 0);
  CHECK(env.master_addr == "node7");
  CHECK(env.master_port == 1234);
  CHECK(env.launched);

  for (const char* name : names) unsetenv(name);
  setenv("SLURM_PROCID", "3", 1);
  setenv("SLURM_NTASKS", "8", 1);
  setenv("SLURM_LOCALID", "1", 1);
  env = DistributedEnv::from_env();
  CHECK(env.rank == 3);
  CHECK(env.world_size == 8);
  CHECK(env.local_rank == 1);

  setenv("RANK", "8", 1);
  CHECK_THROWS_WITH(DistributedEnv::from_env(), Catch::Contains("expected RANK in [0, 8) but got 8"));
  setenv("RANK", "x1", 1);
  CHECK_THROWS_WITH(DistributedEnv::from_env(), Catch::Contains("expected an integer in RANK but got 'x1'"));

  for (const char* name : names) unsetenv(name);
  for (const auto& [name, value] : saved) setenv(name.c_str(), value.c_str(), 1);
}

TEST_CASE("A world of one: no-op collectives, synchronised batch norm is plain batch norm", "[distributed]") {
  auto group = std::make_shared<ProcessGroup>();
  group->init(DistributedEnv{}, torch::kCPU, std::chrono::seconds(1));
  CHECK(group->size() == 1);
  CHECK(group->backend() == "none");
  std::vector<torch::Tensor> tensors{torch::arange(5.0)};
  group->all_reduce_sum(tensors);
  group->broadcast(tensors, 0);
  group->barrier();
  CHECK(torch::equal(tensors[0], torch::arange(5.0)));
  CHECK_FALSE(cac_engine::sum_over(group));  // a world of one sums nothing: plain batch norm, local matrices
  CHECK_FALSE(cac_engine::sum_over(nullptr));

  torch::manual_seed(0);
  TinyNet plain(false, nullptr);
  torch::manual_seed(0);
  TinyNet synced(true, group);
  CHECK(synced->synchronized == 0);  // nothing to synchronise with
  CHECK_FALSE(synced->bn->sync_function);
  train(plain, nullptr, 1, 0, kBatch);
  train(synced, group.get(), 1, 0, kBatch);
  auto a = state(*plain), b = state(*synced);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(torch::equal(a[i], b[i]));

  // sync_batch_norm itself is BatchNorm2d with a world of one, in training and evaluation
  torch::nn::BatchNorm2d reference(4), other(4);
  for (bool training : {true, false}) {
    reference->train(training);
    other->train(training);
    auto x = torch::randn({2, 4, 3, 3});
    CHECK(torch::equal(cac_models::sync_batch_norm(x, *other, cac_engine::sum_over(group)), reference->forward(x)));
    CHECK(torch::equal(other->running_var, reference->running_var));
  }
}

TEST_CASE("Data-parallel training with SyncBN equals single-process training on W×b", "[distributed]") {
  for (int64_t world : {2, 3}) {
    DYNAMIC_SECTION("world size " << world) {
      const fs::path dir = test_dir("train" + std::to_string(world));
      auto run = run_workers(world, "train", dir);
      INFO("worker exit codes " << run.launch.exit_codes);
      REQUIRE(run.launch.exit_code == 0);

      torch::manual_seed(100);  // rank 0's initial weights
      TinyNet reference(false, nullptr);
      auto initial = state(*reference);
      train(reference, nullptr, world, 0, world * kBatch);
      auto expected = state(*reference);
      const auto names = reference->named_parameters().keys();

      auto rank1_init = load(dir / "rank1_init.pt");
      auto rank0_init = load(dir / "rank0_init.pt");
      CHECK_FALSE(torch::equal(rank0_init[0], rank1_init[0]));  // different before the broadcast
      for (int64_t rank = 0; rank < world; ++rank) {
        auto broadcast = load(dir / ("rank" + std::to_string(rank) + "_broadcast.pt"));
        auto trained = load(dir / ("rank" + std::to_string(rank) + "_trained.pt"));
        REQUIRE(broadcast.size() == initial.size());
        REQUIRE(trained.size() == expected.size());
        for (size_t i = 0; i < initial.size(); ++i) {
          INFO("rank " << rank << " tensor " << i);
          CHECK(torch::equal(broadcast[i], initial[i]));
          CHECK(torch::allclose(trained[i].to(torch::kDouble), expected[i].to(torch::kDouble), 1e-4, 1e-5));
        }
        // the trained weights actually moved, so the comparison is not vacuous
        CHECK_FALSE(torch::allclose(trained[0], initial[0]));
      }
      fs::remove_all(dir);
    }
  }
}

TEST_CASE("All-reduced confusion matrices equal the single-process one exactly", "[distributed]") {
  auto [predictions, labels] = confusion_data();
  cac_eval::ConfusionMatrix single(5);
  single.update(predictions, labels);
  for (int64_t world : {2, 3}) {
    const fs::path dir = test_dir("confusion" + std::to_string(world));
    auto run = run_workers(world, "confusion", dir);
    REQUIRE(run.launch.exit_code == 0);
    for (int64_t rank = 0; rank < world; ++rank) {
      torch::Tensor matrix;
      torch::load(matrix, (dir / ("rank" + std::to_string(rank) + "_confusion.pt")).string());
      CHECK(torch::equal(matrix, single.matrix()));
    }
    fs::remove_all(dir);
  }
}

TEST_CASE("A killed worker makes the others fail within the timeout", "[distributed]") {
  const fs::path dir = test_dir("kill");
  auto run = run_workers(3, "kill", dir, cac_engine::LaunchOptions().kill_on_failure(false), 3000);
  INFO("worker exit codes " << run.launch.exit_codes << " after " << run.seconds << " s");
  REQUIRE(run.launch.exit_codes.size() == 3);
  CHECK(run.launch.exit_codes[1] == 128 + SIGKILL);
  CHECK(run.launch.exit_codes[0] == 3);
  CHECK(run.launch.exit_codes[2] == 3);
  CHECK(run.seconds < 15);
  for (const char* name : {"rank0.err", "rank2.err"}) {
    const std::string message = read_text(dir / name);
    INFO(message);
    CHECK(message.find("cac_engine::ProcessGroup::all_reduce_sum: rank ") == 0);
    CHECK(message.find("a peer died or did not answer within the timeout of 3 s") != std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("A silent worker makes the others time out; the launcher stops it", "[distributed]") {
  const fs::path dir = test_dir("hang");
  auto run = run_workers(2, "hang", dir, cac_engine::LaunchOptions().kill_grace(std::chrono::seconds(1)), 2000);
  INFO("worker exit codes " << run.launch.exit_codes << " after " << run.seconds << " s");
  CHECK(run.launch.exit_code == 3);
  CHECK(run.launch.failed_rank == 0);
  CHECK(run.launch.exit_codes[1] == 128 + SIGTERM);
  CHECK(run.seconds >= 1.9);
  CHECK(run.seconds < 12);
  const std::string message = read_text(dir / "rank0.err");
  INFO(message);
  CHECK(message.find("cac_engine::ProcessGroup::all_reduce_sum: rank 0 of 2 failed") == 0);
  fs::remove_all(dir);
}

TEST_CASE("launch_local sets the torchrun variables and forwards exit codes", "[distributed]") {
  const fs::path dir = test_dir("launch");
  fs::create_directories(dir);
  setenv("CAC_DIST_DIR", dir.c_str(), 1);
  std::string program = "cac_engine_tests", filter = "[distributed-worker]";
  char* argv[] = {program.data(), filter.data(), nullptr};

  setenv("CAC_DIST_SCENARIO", "env", 1);
  CHECK(cac_engine::launch_local(3, 2, argv) == 0);

  setenv("CAC_DIST_SCENARIO", "exit", 1);
  const auto start = std::chrono::steady_clock::now();
  CHECK(cac_engine::launch_local(3, 2, argv) == 7);
  // the other two were sleeping for 60 s: SIGTERM stopped them at once
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 10);
  unsetenv("CAC_DIST_SCENARIO");
  fs::remove_all(dir);
  CHECK(cac_engine::free_port() > 0);
}

TEST_CASE(
    "cac_engine::train on 2 processes × batch 2 equals 1 process × batch 4; evaluation across ranks is exact; "
    "resume on another world size",
    "[distributed]") {
  const fs::path dir = test_dir("engine");
  const fs::path single = test_dir("engine_single");
  fs::remove_all(single);
  setenv("CAC_DIST_STOP_AT", "0", 1);
  auto run = run_workers(2, "engine", dir);
  INFO("worker exit codes " << run.launch.exit_codes);
  REQUIRE(run.launch.exit_code == 0);
  const auto config = engine_config(dir, 2);
  const auto reference = engine_config(dir, 4);
  const auto result =
      cac_engine::train(reference, cac_engine::TrainOptions().work_dir(single / "straight").verbose(false));
  CHECK(result.iteration == 4);

  // the weights (BN statistics included) after 4 SGD steps with momentum
  const auto expected = cac_engine_test::weights(single / "straight" / "latest.pt", reference);
  const auto trained = cac_engine_test::weights(dir / "work" / "latest.pt", config);
  const auto fresh = cac_engine::build_model(config);
  REQUIRE(expected.size() == trained.size());
  for (const auto& [key, value] : expected) {
    INFO(key);
    CHECK(torch::allclose(trained.at(key).to(torch::kDouble), value.to(torch::kDouble), 1e-4, 1e-5));
  }
  CHECK_FALSE(torch::allclose(fresh->named_parameters()["decode_head.conv_seg.weight"],
                              trained.at("decode_head.conv_seg.weight")));
  for (const auto& [key, value] : trained) {
    if (key.find("num_batches_tracked") != std::string::npos) CHECK(value.item<int64_t>() == 4);
  }

  // rank 0 alone logged: one line per iteration and the final evaluation, the rank-mean loss
  std::ifstream log(dir / "work" / "log.jsonl"), single_log(single / "straight" / "log.jsonl");
  std::string line, single_line;
  int64_t lines = 0;
  while (std::getline(log, line) && std::getline(single_log, single_line)) {
    ++lines;
    const auto a = nlohmann::json::parse(line), b = nlohmann::json::parse(single_line);
    if (a["mode"] == "train") CHECK(a["total"].get<double>() == Approx(b["total"].get<double>()).epsilon(1e-5));
  }
  CHECK(lines == 5);
  CHECK_FALSE(std::getline(log, line));

  // each rank's group evaluation equals its single-process evaluation exactly, on every rank
  const std::string alone = read_text(dir / "rank0_alone.json");
  CHECK(alone.substr(alone.rfind(' ')) == " 6");
  for (const char* rank : {"rank0", "rank1"}) {
    INFO(rank);
    CHECK(read_text(dir / (std::string(rank) + "_shared.json")) == alone);
    CHECK(read_text(dir / (std::string(rank) + "_alone.json")) == alone);
    CHECK(read_text(dir / (std::string(rank) + "_limited.txt")) == "5");
    CHECK(read_text(dir / (std::string(rank) + "_final.json")) + " 6" == alone);
  }

  // 2 processes to iteration 2, then 1 process (batch 4) to the end: the straight run's weights
  fs::remove_all(dir);
  setenv("CAC_DIST_STOP_AT", "2", 1);
  run = run_workers(2, "engine", dir);
  unsetenv("CAC_DIST_STOP_AT");
  REQUIRE(run.launch.exit_code == 0);
  CHECK(fs::exists(dir / "work" / "iter_2.pt"));
  const auto resumed =
      cac_engine::train(reference, cac_engine::TrainOptions().work_dir(dir / "work").verbose(false).resume(true));
  CHECK(resumed.iteration == 4);
  const auto continued = cac_engine_test::weights(dir / "work" / "latest.pt", reference);
  for (const auto& [key, value] : expected) {
    INFO(key);
    CHECK(torch::allclose(continued.at(key).to(torch::kDouble), value.to(torch::kDouble), 1e-4, 1e-5));
  }
  fs::remove_all(dir);
  fs::remove_all(single);
}
