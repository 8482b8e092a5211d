// The training engine on a tiny context-shift dataset: resume is bit-identical on CPU, the work
// directory holds what the docs promise, evaluation scores every branch.
#include "engine/amp.hpp"
#include "engine/trainer.hpp"
#include "engine/engine_test_support.hpp"

#include <cac/io/io.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <iterator>

using cac_engine::Config;
namespace fs = std::filesystem;

using cac_engine_test::tiny_config;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace
using cac_engine_test::weights;

TEST_CASE("trainer: k iterations + resume + k equal 2k iterations exactly (CPU)", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_resume";
  fs::remove_all(dir);
  for (bool cac : {false, true}) {
    INFO("cac " << cac);
    const Config config = tiny_config(dir / "data", cac, 6);
    const std::string tag = cac ? "cac" : "base";
    cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / (tag + "_straight")).verbose(false));
    cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / (tag + "_split")).verbose(false).stop_at(3));
    CHECK(fs::exists(dir / (tag + "_split") / "iter_3.pt"));
    const auto result = cac_engine::train(
        config, cac_engine::TrainOptions().work_dir(dir / (tag + "_split")).verbose(false).resume(true));
    CHECK(result.iteration == 6);
    const auto a = weights(dir / (tag + "_straight") / "latest.pt", config);
    const auto b = weights(dir / (tag + "_split") / "latest.pt", config);
    REQUIRE(a.size() == b.size());
    for (const auto& [key, value] : a) {
      INFO(key);
      CHECK(torch::equal(value, b.at(key)));
    }
    // Not trivially equal: training moved the weights away from a fresh model's.
    const auto fresh = cac_engine::build_model(config);
    CHECK_FALSE(
        torch::equal(fresh->named_parameters()["decode_head.conv_seg.weight"], a.at("decode_head.conv_seg.weight")));
  }
}

TEST_CASE("trainer: work directory, logs, keep-last and evaluation branches", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_files";
  fs::remove_all(dir);
  Config config = tiny_config(dir / "data", true, 8);
  config.set("runtime.checkpoint_interval=2");
  config.set("runtime.keep_last=2");
  config.set("evaluation.interval=4");
  const auto result = cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / "run").verbose(false));
  CHECK(result.iteration == 8);
  REQUIRE(result.evaluations.size() == 2);
  CHECK(result.evaluations[0].iteration == 4);
  CHECK(result.evaluations[1].iteration == 8);
  CHECK(result.losses.size() == 4);
  for (const char* file :
       {"config.yaml", "log.jsonl", "latest.pt", "best.pt", "curves.png", "iter_6.pt", "iter_8.pt"}) {
    INFO(file);
    CHECK(fs::is_regular_file(dir / "run" / file));
  }
  CHECK_FALSE(fs::exists(dir / "run" / "iter_2.pt"));  // keep_last = 2
  CHECK_FALSE(fs::exists(dir / "run" / "iter_4.pt"));
  CHECK(fs::equivalent(dir / "run" / "latest.pt", dir / "run" / "iter_8.pt"));  // a hard link, not a copy
  CHECK_FALSE(fs::exists(dir / "run" / "latest.pt.tmp"));
  std::ifstream log(dir / "run" / "log.jsonl");
  int64_t train_lines = 0, val_lines = 0;
  for (std::string line; std::getline(log, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record.at("mode") == "train") {
      ++train_lines;
      for (const char* key :
           {"decode.loss_ce", "decode.loss_kl", "decode.loss_pre", "decode.loss_pre_self", "total", "lr"}) {
        CHECK(record.contains(key));
      }
    } else {
      ++val_lines;
      CHECK(record.at("mIoU").get<double>() >= 0.0);
    }
  }
  CHECK(train_lines == 4);
  CHECK(val_lines == 2);
  // The saved config reloads to the same settings.
  CHECK(Config::load(dir / "run" / "config.yaml").get<int64_t>("schedule.iterations") == 8);

  auto model = cac_engine::build_model(config);
  cac_engine::load_weights(*model, dir / "run" / "latest.pt");
  std::vector<std::string> shown;
  const auto evaluation = cac_engine::evaluate(
      model, config, cac_engine::EvaluateOptions().branches(true).on_prediction([&](const cac_engine::Prediction& p) {
        CHECK(p.mask.sizes() == torch::IntArrayRef{32, 32});
        CHECK(p.dataset.load(static_cast<size_t>(p.index)).name == p.name);
        shown.push_back(p.name);
      }));
  CHECK(evaluation.images == 6);
  CHECK(evaluation.branches.size() == 3);
  // Inference uses pp: the context branch scores the same as the prediction.
  CHECK(evaluation.branches.at("context").mIoU == Approx(evaluation.metrics.mIoU));
  CHECK(evaluation.metrics.mIoU == Approx(result.final.mIoU));
  REQUIRE(shown.size() == 6);  // every prediction reaches the caller (pictures are the programs' job)
  CHECK(shown[0] == "cs_val_00000000");
}

TEST_CASE("trainer: configuration and resume errors", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_errors";
  fs::remove_all(dir);
  Config config = tiny_config(dir / "data", false, 2);
  CHECK_THROWS_WITH(
      cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / "none").resume(true).verbose(false)),
      Catch::Contains("cac_engine::CheckpointStore::resume: expected a checkpoint to resume from at"));
  config.set("optimizer.type=adam");
  CHECK_THROWS_WITH(cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / "bad").verbose(false)),
                    Catch::Contains("key 'optimizer.type': expected one of sgd, adamw but got 'adam'"));
  CHECK_THROWS_WITH(cac_engine::parse_device("gpu"),
                    Catch::Contains("expected a device cpu, cuda or cuda:N but got 'gpu'"));
}

TEST_CASE("trainer: initial weights from a PyTorch .pth in mmseg and official CAC layouts", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_pretrained";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Config config = tiny_config(dir / "data", true, 2);
  torch::manual_seed(11);
  auto source = cac_engine::build_model(config);
  cac::io::StateDict mmseg = cac::io::state_dict_of(*source), official;
  cac::io::write_state_dict(mmseg, (dir / "mmseg.pth").string());
  for (const auto& [key, value] : mmseg) {
    std::string renamed = key;
    for (const auto& [from, to] :
         {std::pair<std::string, std::string>{"decode_head.cac.context_projector.", "decode_head.proj."},
          {"decode_head.cac.oracle_projector.", "decode_head.apd_proj."}}) {
      if (renamed.rfind(from, 0) == 0) renamed = to + renamed.substr(from.size());
    }
    official[renamed] = value;
  }
  cac::io::write_state_dict(official, (dir / "official.pth").string());
  for (const auto& [file, layout] :
       {std::pair<const char*, const char*>{"mmseg.pth", "mmseg"}, {"official.pth", "cac"}}) {
    INFO(file);
    torch::manual_seed(12);
    auto target = cac_engine::build_model(config);
    const std::string report = cac_engine::load_pretrained(*target, dir / file, layout);
    auto loaded = cac::io::state_dict_of(*target);
    for (const auto& [key, value] : mmseg) {
      INFO(key);
      CHECK(torch::equal(value, loaded.at(key)));
    }
  }
  auto target = cac_engine::build_model(config);
  CHECK_THROWS_WITH(cac_engine::load_pretrained(*target, dir / "official.pth", "swin"),
                    Catch::Contains("to share keys with the model but none matched"));
}

TEST_CASE("trainer: a cac-train checkpoint of another configuration is refused with what it holds", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_other_config";
  fs::remove_all(dir);
  const Config trained = tiny_config(dir / "data", true, 2);
  cac_engine::train(trained, cac_engine::TrainOptions().work_dir(dir / "run").verbose(false));
  const fs::path latest = dir / "run" / "latest.pt";
  CHECK(cac::io::is_torchscript_archive(latest.string()));
  CHECK(cac::io::is_torchscript_archive((dir / "run" / "best.pt").string()));
  cac::io::write_state_dict(cac::io::state_dict_of(*cac_engine::build_model(trained)), (dir / "torch.pth").string());
  CHECK_FALSE(cac::io::is_torchscript_archive((dir / "torch.pth").string()));
  CHECK_FALSE(cac::io::is_torchscript_archive((dir / "run" / "config.yaml").string()));
  CHECK_FALSE(cac::io::is_torchscript_archive((dir / "missing.pt").string()));

  // Same model, 6 classes instead of 4: the file says what it is and the shapes that differ.
  Config six = tiny_config(dir / "data6", true, 2);
  six.set("model.num_classes=6");
  auto model = cac_engine::build_model(six);
  CHECK_THROWS_WITH(
      cac_engine::load_pretrained(*model, latest, "mmseg"),
      Catch::Contains(latest.string() + " is a cac-train checkpoint of fcn_tiny + CAC with 4 classes, "
                                        "not one of this model: 'decode_head.conv_seg.weight' has shape [4, ") &&
          Catch::Contains("but the model expects [6, ") && Catch::Contains("model.num_classes"));
  // The baseline of the same model lacks the CAC keys the model expects.
  Config with_cac = tiny_config(dir / "data", true, 2);
  cac_engine::train(tiny_config(dir / "data", false, 2),
                    cac_engine::TrainOptions().work_dir(dir / "base").verbose(false));
  auto cac_model = cac_engine::build_model(with_cac);
  CHECK_THROWS_WITH(cac_engine::load_weights(*cac_model, dir / "base" / "latest.pt"),
                    Catch::Contains("is a cac-train checkpoint of fcn_tiny with 4 classes, not one of this model: the "
                                    "model's key 'decode_head.cac.") &&
                        Catch::Contains("is missing"));
  // best.pt stores no config: still a clear message.
  CHECK_THROWS_WITH(cac_engine::load_weights(*model, dir / "run" / "best.pt"),
                    Catch::Contains("is a checkpoint of cac-train, not one of this model"));
}

TEST_CASE("trainer: a work dir holding a run is resumed, replaced with overwrite, or refused", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_work_dir";
  fs::remove_all(dir);
  const Config config = tiny_config(dir / "data", false, 2);
  const auto options = cac_engine::TrainOptions().work_dir(dir / "run").verbose(false);
  cac_engine::train(config, options);
  std::ofstream(dir / "run" / "notes.txt") << "mine";
  const auto before = fs::last_write_time(dir / "run" / "latest.pt");
  CHECK_THROWS_WITH(
      cac_engine::train(config, options),
      Catch::Contains("expected a work directory without a run but " + (dir / "run").string() + " holds one") &&
          Catch::Contains("use --resume to continue it, --overwrite to replace it"));
  CHECK(fs::last_write_time(dir / "run" / "latest.pt") == before);  // refused before touching anything
  // overwrite: the old run's files go (iter_2.pt of a 2-iteration run is replaced by a 1-iteration run's iter_1.pt).
  Config one = config;
  one.set("schedule.iterations=1");
  cac_engine::train(one, cac_engine::TrainOptions(options).overwrite(true));
  CHECK(fs::exists(dir / "run" / "iter_1.pt"));
  CHECK_FALSE(fs::exists(dir / "run" / "iter_2.pt"));
  CHECK(fs::exists(dir / "run" / "notes.txt"));  // not a file of the run: left alone
  std::ifstream log(dir / "run" / "log.jsonl");
  std::string line;
  while (std::getline(log, line)) CHECK(line.find("\"iter\":2") == std::string::npos);
}

TEST_CASE("trainer: bfloat16 autocast on CPU (runtime.amp) trains with finite losses", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_amp";
  fs::remove_all(dir);
  for (bool cac : {false, true}) {
    INFO("cac " << cac);
    Config config = tiny_config(dir / "data", cac, 4);
    config.set("runtime.amp=true");
    const auto result =
        cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / (cac ? "cac" : "base")).verbose(false));
    CHECK(result.iteration == 4);
    for (const auto& [iter, loss] : result.losses) CHECK(std::isfinite(loss));
  }
  CHECK_THROWS_WITH(cac_engine::MixedPrecision(true, torch::kCPU, torch::kHalf),
                    Catch::Contains("expected bfloat16 for CPU autocast but got Half"));
}

TEST_CASE("trainer: an evaluation that fails writes the checkpoint of its iteration first", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_eval_failure";
  fs::remove_all(dir);
  const Config config = tiny_config(dir / "data", false, 4);
  cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / "first").verbose(false).stop_at(1));
  // A validation image that cannot be decoded: found only when the evaluation reads it.
  const fs::path validation = dir / "data" / "ADEChallengeData2016" / "images" / "validation";
  REQUIRE(fs::is_directory(validation));
  std::vector<fs::path> images;
  for (const auto& entry : fs::directory_iterator(validation)) images.push_back(entry.path());
  REQUIRE_FALSE(images.empty());
  std::sort(images.begin(), images.end());
  const std::string good_image = read_bytes(images.front());
  std::ofstream(images.front(), std::ios::binary | std::ios::trunc) << "not a png";
  CHECK_THROWS_WITH(cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / "run").verbose(false)),
                    Catch::Contains(images.front().string()));
  // The 4 iterations are not lost: the checkpoint resumes.
  CHECK(fs::is_regular_file(dir / "run" / "iter_4.pt"));
  CHECK(fs::equivalent(dir / "run" / "latest.pt", dir / "run" / "iter_4.pt"));
  auto model = cac_engine::build_model(config);
  CHECK_NOTHROW(cac_engine::load_weights(*model, dir / "run" / "latest.pt"));
  // The checkpoint remembers the evaluation it owes: once the image is readable again, --resume runs
  // it (and logs it), and a further --resume has nothing left to do.
  std::ofstream(images.front(), std::ios::binary | std::ios::trunc) << good_image;
  const auto resumed =
      cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / "run").verbose(false).resume(true));
  CHECK_FALSE(resumed.already_finished);
  REQUIRE(resumed.evaluations.size() == 1);
  CHECK(resumed.evaluations[0].iteration == 4);
  CHECK(read_bytes(dir / "run" / "log.jsonl").find("\"mode\":\"val\"") != std::string::npos);
  CHECK(cac_engine::train(config, cac_engine::TrainOptions().work_dir(dir / "run").verbose(false).resume(true))
            .already_finished);
}

TEST_CASE("trainer: --resume of a finished run rewrites nothing and says how to train longer", "[trainer]") {
  const fs::path dir = fs::temp_directory_path() / "cac_trainer_finished";
  fs::remove_all(dir);
  Config config = tiny_config(dir / "data", false, 4);
  config.set("runtime.checkpoint_interval=2");
  const auto options = cac_engine::TrainOptions().work_dir(dir / "run").verbose(false);
  cac_engine::train(config, options);
  const std::vector<std::string> names{"latest.pt", "iter_2.pt",   "iter_4.pt", "best.pt",
                                       "log.jsonl", "config.yaml", "curves.png"};
  const auto snapshot = [&] {
    std::vector<std::pair<std::string, int64_t>> files;  // bytes, mtime
    for (const auto& name : names)
      files.emplace_back(read_bytes(dir / "run" / name),
                         fs::last_write_time(dir / "run" / name).time_since_epoch().count());
    return files;
  };
  const auto before = snapshot();
  const auto listing = [&] {
    std::vector<std::string> out;
    for (const auto& entry : fs::directory_iterator(dir / "run")) out.push_back(entry.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto files_before = listing();
  const auto result = cac_engine::train(config, cac_engine::TrainOptions(options).resume(true));
  CHECK(result.already_finished);
  CHECK(result.iteration == 4);
  CHECK(result.evaluations.empty());
  CHECK((snapshot() == before));  // bytes and modification times (not printed: megabytes)
  CHECK(listing() == files_before);
  // The message (printed when verbose) is pinned through cac-train by cac_train_resume_finished.
  // --stop-at at or before the checkpoint: nothing to do either.
  CHECK(cac_engine::train(config, cac_engine::TrainOptions(options).resume(true).stop_at(2)).already_finished);
  CHECK((snapshot() == before));
  // Raising schedule.iterations continues the run.
  Config longer = config;
  longer.set("schedule.iterations=6");
  const auto more = cac_engine::train(longer, cac_engine::TrainOptions(options).resume(true));
  CHECK_FALSE(more.already_finished);
  CHECK(more.iteration == 6);
  CHECK(fs::equivalent(dir / "run" / "latest.pt", dir / "run" / "iter_6.pt"));
}
