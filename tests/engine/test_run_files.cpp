// The files of a training run: cac_io's atomic replace and checked appends (a failed write leaves
// the old file intact and no temporary behind, and names the file), the CheckpointStore
// (numbered checkpoints, latest.pt, keep_last rotation, best.pt, resume state) and the TrainLog
// (means over an interval, JSONL records, no duplicates after a resume).
#include "engine/checkpoint_store.hpp"
#include "engine/train_log.hpp"
#include "engine/trainer.hpp"
#include "io/atomic_file.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("cac_run_files_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Files may grow to `bytes` at most while alive (writes beyond fail with EFBIG, as on a full disk).
struct FileSizeLimit {
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved);
    previous = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, previous);
  }
  rlimit saved{};
  void (*previous)(int) = nullptr;
};

}  // namespace

TEST_CASE("cac_io::write_file replaces a file atomically and reports failures by name", "[atomic_file]") {
  const fs::path dir = fresh_dir("atomic");
  const fs::path target = dir / "nested" / "config.yaml";
  cac_io::write_file(target, "first\n");
  cac_io::write_file(target, "second\n");
  CHECK(read_text(target) == "second\n");
  CHECK(names_in(dir / "nested") == std::vector<std::string>{"config.yaml"});

  SECTION("a write that fails midway (file size limit, like a full disk) keeps the old file, no temporary") {
    const std::string big(64 * 1024, 'x');
    {
      FileSizeLimit limit(4096);
      CHECK_THROWS_WITH(cac_io::write_file(target, big),
                        Contains("cac_io::write_file: cannot write " + target.string() + ": File too large"));
    }
    CHECK(read_text(target) == "second\n");
    CHECK(names_in(dir / "nested") == std::vector<std::string>{"config.yaml"});
  }
  SECTION("an AtomicFile destroyed without commit leaves the target untouched") {
    {
      cac_io::AtomicFile file(target);
      file.write("partial");
      CHECK(names_in(dir / "nested").size() == 2);  // the temporary exists meanwhile
    }
    CHECK(read_text(target) == "second\n");
    CHECK(names_in(dir / "nested") == std::vector<std::string>{"config.yaml"});
  }
  SECTION("a deferred failure (writer callbacks) is reported by commit") {
    FileSizeLimit limit(4096);
    cac_io::AtomicFile file(target);
    const std::string big(64 * 1024, 'y');
    CHECK(file.write_or_defer(big.data(), big.size()) == big.size());  // never short: see the header
    CHECK_THAT(file.deferred_error(), Contains("File too large"));
    CHECK(file.write_or_defer(big.data(), 10) == 10);  // dropped
    CHECK_THAT(file.deferred_error(), Contains("File too large"));
    CHECK_THROWS_WITH(file.commit(), Contains("cannot write " + target.string()));
  }
  SECTION("a target that is not a regular file is refused, not replaced") {
    // (Only paths of this test: were the guard broken, the rename would replace them.)
    CHECK_THROWS_WITH(cac_io::write_file(dir / "nested", "x"),
                      Contains("cannot write " + (dir / "nested").string() + ": it exists and is not a regular file"));
    const fs::path fifo = dir / "pipe";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH(cac_io::write_file(fifo, "x"), Contains("not a regular file"));
    CHECK(fs::is_fifo(fifo));
  }
  SECTION("a directory that cannot be made names the file") {
    cac_io::write_file(dir / "plain", "x");
    CHECK_THROWS_WITH(cac_io::write_file(dir / "plain" / "r.json", "{}"),
                      Contains("cac_io::write_file: cannot write " + (dir / "plain" / "r.json").string()));
  }
  fs::remove_all(dir);
}

TEST_CASE("cac_io::AppendFile appends whole records and names the file on ENOSPC", "[atomic_file]") {
  const fs::path dir = fresh_dir("append");
  {
    cac_io::AppendFile log(dir / "log.jsonl");
    log.append("{\"iter\": 1}\n");
  }
  {
    cac_io::AppendFile log(dir / "log.jsonl");
    log.append("{\"iter\": 2}\n");
  }
  CHECK(read_text(dir / "log.jsonl") == "{\"iter\": 1}\n{\"iter\": 2}\n");
  cac_io::AppendFile(dir / "log.jsonl", /*truncate=*/true).append("x\n");
  CHECK(read_text(dir / "log.jsonl") == "x\n");
  if (fs::exists("/dev/full")) {
    cac_io::AppendFile full("/dev/full");
    CHECK_THROWS_WITH(full.append("record\n"),
                      Contains("cac_io::append_file: cannot write /dev/full: No space left on device"));
  }
  fs::remove_all(dir);
}

TEST_CASE("cac_io::publish_link gives a file a second name atomically", "[atomic_file]") {
  const fs::path dir = fresh_dir("link");
  cac_io::write_file(dir / "a", "A");
  cac_io::write_file(dir / "b", "B");
  cac_io::publish_link(dir / "a", dir / "latest");
  CHECK(fs::equivalent(dir / "a", dir / "latest"));
  cac_io::publish_link(dir / "b", dir / "latest");
  CHECK(read_text(dir / "latest") == "B");
  CHECK(names_in(dir) == std::vector<std::string>{"a", "b", "latest"});
  CHECK_THROWS_WITH(cac_io::publish_link(dir / "missing", dir / "latest"),
                    Contains("cannot write " + (dir / "latest").string()));
  CHECK(read_text(dir / "latest") == "B");
  fs::remove_all(dir);
}

TEST_CASE("CheckpointStore: numbered checkpoints, latest, keep_last, best and resume state", "[checkpoint_store]") {
  const fs::path dir = fresh_dir("store");
  torch::manual_seed(1);
  torch::nn::Linear model(3, 2);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  const auto loader = cac_data::LoaderOptions().batch_size(4);
  const cac_engine::Config config = cac_engine::Config::parse("runtime: {seed: 1}", "store");
  const cac_engine::CheckpointStore store(dir, /*keep_last=*/2, /*writes=*/true);
  for (int64_t iteration : {2, 4, 6}) {
    {
      torch::NoGradGuard no_grad;
      model->weight.fill_(static_cast<double>(iteration));
    }
    store.save(*model, optimizer, {iteration, {1, iteration / 2}, 0.25}, loader, config);
    CHECK(fs::equivalent(store.latest(), dir / ("iter_" + std::to_string(iteration) + ".pt")));
  }
  const auto kept = store.numbered();
  REQUIRE(kept.size() == 2);  // keep_last = 2: iter_2.pt removed
  CHECK(kept[0].first == 4);
  CHECK(kept[1].first == 6);
  CHECK(names_in(dir) == std::vector<std::string>{"iter_4.pt", "iter_6.pt", "latest.pt"});

  // Resume: the newest weights, the state, and the CPU RNG as it was at the save.
  const torch::Tensor expected_draw = torch::rand({3});
  torch::nn::Linear other(3, 2);
  torch::optim::SGD other_optimizer(other->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  torch::rand({5});  // move the RNG on
  const cac_engine::TrainState state = store.resume(*other, other_optimizer, loader, /*batches_per_epoch=*/10);
  CHECK(state.iteration == 6);
  CHECK(state.loader.epoch == 1);
  CHECK(state.loader.position == 3);
  CHECK(state.best_miou == 0.25);
  CHECK(torch::equal(other->weight, torch::full({2, 3}, 6.0)));
  CHECK(torch::equal(torch::rand({3}), expected_draw));
  // On twice the samples per step, the position is halved (rounded down).
  const cac_engine::TrainState doubled =
      store.resume(*other, other_optimizer, cac_data::LoaderOptions().batch_size(8), /*batches_per_epoch=*/5);
  CHECK(doubled.loader.position == 1);

  // best.pt only when the mIoU improves.
  cac_engine::TrainState best{6, {}, 0.5};
  CHECK_FALSE(store.update_best(*model, 0.4, best));
  CHECK_FALSE(fs::exists(dir / "best.pt"));
  CHECK(store.update_best(*model, 0.6, best));
  CHECK(best.best_miou == 0.6);
  CHECK(fs::is_regular_file(dir / "best.pt"));

  // A store that does not write (ranks other than 0) keeps the state only.
  const fs::path quiet = fresh_dir("store_quiet");
  const cac_engine::CheckpointStore reader(quiet, 2, /*writes=*/false);
  reader.save(*model, optimizer, {2, {}, 0.1}, loader, config);
  CHECK(reader.update_best(*model, 0.9, best));
  CHECK(fs::is_empty(quiet));
  CHECK_THROWS_WITH(reader.resume(*other, other_optimizer, loader, 10),
                    Contains("cac_engine::CheckpointStore::resume: expected a checkpoint to resume from at " +
                             (quiet / "latest.pt").string()));

  // A checkpoint write that fails midway (a file size limit, like a full disk) is one error naming
  // the file; the process goes on (LibTorch's zip writer used to throw from its destructor, which
  // ended the process, temporary included), and latest.pt still names the previous checkpoint.
  {
    torch::nn::Linear big(256, 256);
    torch::optim::SGD big_optimizer(big->parameters(), torch::optim::SGDOptions(0.1));
    FileSizeLimit limit(8192);
    CHECK_THROWS_WITH(
        store.save(*big, big_optimizer, {8, {}, 0.25}, loader, config),
        Contains("cac_io::write_file: cannot write " + (dir / "iter_8.pt").string() + ": File too large"));
  }
  CHECK(names_in(dir) == std::vector<std::string>{"best.pt", "iter_4.pt", "iter_6.pt", "latest.pt"});
  CHECK(fs::equivalent(store.latest(), dir / "iter_6.pt"));
  fs::remove_all(dir);
  fs::remove_all(quiet);
}

TEST_CASE("TrainLog: interval means, JSONL records, resume drops the records past the checkpoint", "[train_log]") {
  const fs::path dir = fresh_dir("log");
  cac_engine::ProcessGroup single;
  const fs::path jsonl = dir / "log.jsonl";
  {
    cac_engine::TrainLog log(cac_engine::TrainLogOptions().path(jsonl).verbose(false).total(4), single);
    log.add({{"total", torch::tensor(1.0)}, {"decode.loss_ce", torch::tensor(0.5)}}, 0.1, 0.3);
    log.add({{"total", torch::tensor(3.0)}, {"decode.loss_ce", torch::tensor(1.5)}}, 0.3, 0.5);
    const nlohmann::json record = log.flush(2, 0.01, 0, 8);
    CHECK(record.at("total").get<double>() == Approx(2.0));  // (1 + 3) / 2
    CHECK(record.at("decode.loss_ce").get<double>() == Approx(1.0));
    CHECK(record.at("data_time").get<double>() == Approx(0.2));
    CHECK(record.at("time").get<double>() == Approx(0.6));  // data 0.2 + step 0.4
    log.evaluation(2, cac_eval::Metrics{0.9, 0.5, 0.6, {}, {}, {}, {}, {}, {}}, 6, 1.0);
    log.add({{"total", torch::tensor(5.0)}, {"decode.loss_ce", torch::tensor(2.0)}}, 0.1, 0.1);
    log.flush(3, 0.005, 0, 8);
    CHECK(log.losses() == std::vector<std::pair<int64_t, double>>{{2, 2.0}, {3, 5.0}});
    CHECK(log.seconds_per_iteration() == Approx(0.6));  // median of 0.6 and 0.2
  }
  std::vector<nlohmann::json> records;
  {
    std::ifstream in(jsonl);
    for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  }
  REQUIRE(records.size() == 3);
  CHECK(records[1].at("mode") == "val");
  CHECK(records[1].at("mIoU").get<double>() == 0.5);
  CHECK(records[2].at("iter") == 3);

  // A resume from the checkpoint of iteration 2 drops the record of iteration 3 (it is redone).
  {
    cac_engine::TrainLog log(cac_engine::TrainLogOptions().path(jsonl).verbose(false).total(4).resume_from(2), single);
    log.add({{"total", torch::tensor(7.0)}}, 0.0, 0.0);
    log.flush(3, 0.005, 0, 8);
  }
  records.clear();
  {
    std::ifstream in(jsonl);
    for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  }
  REQUIRE(records.size() == 3);
  CHECK(records[2].at("iter") == 3);
  CHECK(records[2].at("total").get<double>() == 7.0);
  // A fresh run starts the file afresh.
  cac_engine::TrainLog(cac_engine::TrainLogOptions().path(jsonl).verbose(false), single);
  CHECK(fs::file_size(jsonl) == 0);
  fs::remove_all(dir);
}
