// load_checkpoint: one loader for every checkpoint, strict for evaluation and inference; and
// dataset_info from the config alone.
#include "engine/engine_test_support.hpp"
#include "engine/weights.hpp"

#include <cac/io/io.hpp>

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using cac_engine_test::tiny_config;

namespace {

bool same_weights(torch::nn::Module& a, torch::nn::Module& b) {
  const auto left = cac::io::state_dict_of(a), right = cac::io::state_dict_of(b);
  if (left.size() != right.size()) return false;
  for (const auto& [key, value] : left) {
    if (!torch::equal(value, right.at(key))) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("load_checkpoint: strict loading names the file, the layout and the keys, and copies nothing", "[weights]") {
  const fs::path dir = fs::temp_directory_path() / "cac_weights_strict";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const cac_engine::Config config = tiny_config(dir / "data", true, 2);
  torch::manual_seed(21);
  auto source = cac_engine::build_model(config);
  cac::io::StateDict full = cac::io::state_dict_of(*source), partial = full, official;
  partial.erase("decode_head.conv_seg.bias");
  for (const auto& [key, value] : full) {
    const std::string from = "decode_head.cac.context_projector.";
    official[key.rfind(from, 0) == 0 ? "decode_head.proj." + key.substr(from.size()) : key] = value;
  }
  cac::io::write_state_dict(full, (dir / "full.pth").string());
  cac::io::write_state_dict(partial, (dir / "partial.pth").string());
  cac::io::write_state_dict(official, (dir / "official.pth").string());

  torch::manual_seed(22);
  auto target = cac_engine::build_model(config);
  torch::manual_seed(22);
  auto untouched = cac_engine::build_model(config);
  CHECK_THROWS_WITH(
      cac_engine::load_checkpoint(*target, dir / "partial.pth", "mmseg", /*strict=*/true),
      Catch::Contains((dir / "partial.pth").string() + " (a PyTorch checkpoint read in the mmseg layout)") &&
          Catch::Contains("1 missing, 0 unexpected") && Catch::Contains("decode_head.conv_seg.bias"));
  CHECK(same_weights(*target, *untouched));  // a failed strict load copies nothing
  CHECK_THROWS_WITH(cac_engine::load_checkpoint(*target, dir / "official.pth", "mmseg", true),
                    Catch::Contains("use --checkpoint-source cac"));
  CHECK(same_weights(*target, *untouched));
  CHECK_THROWS_WITH(cac_engine::load_checkpoint(*target, dir / "full.pth", "detectron", true),
                    Catch::Contains("expected one of mmseg, cac, backbone"));

  // Not strict (initial weights): the partial file loads what it has.
  CHECK_THAT(cac_engine::load_checkpoint(*target, dir / "partial.pth", "mmseg", /*strict=*/false),
             Catch::StartsWith("loaded ") && Catch::Contains("1 missing"));
  // Strict and complete: every weight, in either layout.
  for (const auto& [file, layout] :
       {std::pair<const char*, const char*>{"full.pth", "mmseg"}, {"official.pth", "cac"}}) {
    INFO(file);
    torch::manual_seed(23);
    auto model = cac_engine::build_model(config);
    CHECK_THAT(cac_engine::load_checkpoint(*model, dir / file, layout, true),
               Catch::Contains("loaded every key of") && Catch::Contains(std::string(layout) + " layout"));
    CHECK(same_weights(*model, *source));
  }
  // No source: the official CAC projector names are detected, anything else is mmseg.
  for (const auto& [file, layout] : {std::pair<const char*, const char*>{"full.pth", "mmseg layout, detected"},
                                     {"official.pth", "cac layout, detected"}}) {
    INFO(file);
    auto model = cac_engine::build_model(config);
    CHECK_THAT(cac_engine::load_checkpoint(*model, dir / file, "", true), Catch::Contains(layout));
    CHECK(same_weights(*model, *source));
  }
  // A cac-train checkpoint: detected, loaded whatever the source says.
  cac_engine::save_weights(*source, dir / "weights.pt");
  auto model = cac_engine::build_model(config);
  CHECK_THAT(cac_engine::load_checkpoint(*model, dir / "weights.pt", "swin", true),
             Catch::Contains("(a cac-train checkpoint)"));
  CHECK(same_weights(*model, *source));
  CHECK(cac_engine::checkpoint_kind(dir / "weights.pt") == "a cac-train checkpoint");
  CHECK_THROWS_WITH(cac_engine::load_checkpoint(*model, dir / "missing.pth", "mmseg", true),
                    Catch::Contains("expected a checkpoint at " + (dir / "missing.pth").string()));
}

TEST_CASE("dataset_info: class names and palette from the config alone, no dataset read", "[weights]") {
  const fs::path root = fs::temp_directory_path() / "cac_weights_no_dataset";
  fs::remove_all(root);
  cac_engine::Config config = tiny_config(root, true, 2);
  const cac_data::DatasetInfo info = cac_engine::dataset_info(config);
  CHECK(info.num_classes() == 4);
  CHECK(info.classes == cac_data::context_shift_info(4).classes);
  CHECK((info.palette == cac_data::context_shift_info(4).palette));
  CHECK_FALSE(fs::exists(root));  // nothing generated
  config.set("data.type=ade20k");
  CHECK(cac_engine::dataset_info(config).classes == cac_data::ade20k_info().classes);
  config.set("data.type=cityscapes");
  CHECK((cac_engine::dataset_info(config).palette == cac_data::cityscapes_info().palette));
  config.set("data.classes=[sky, road]");
  CHECK(cac_engine::dataset_info(config).classes == std::vector<std::string>{"sky", "road"});
  CHECK((cac_engine::dataset_info(config).palette == cac_data::default_palette(2)));
  CHECK_FALSE(fs::exists(root));
}
