// The zoo's checkpoint conversions (examples/models/converters.hpp): source names, official CAC
// projector keys, backbone prefixes, and mmseg's Swin converter (hand-derived permutation). The
// key lists transcribed from mmsegmentation (tests/fixtures/io/*.keys.json) are checked against
// every Table 1 model by the ctest `cac_zoo_matches_mmseg_keys` (examples/convert/zoo_keys_check.cpp).
#include "models/converters.hpp"
#include "models/registry.hpp"

#include <cac/io/load_state_dict.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace cac_models;

namespace {

std::vector<std::string> keys_of(const cac::io::StateDict& state_dict) {
  std::vector<std::string> keys;
  for (const auto& entry : state_dict) keys.push_back(entry.first);
  return keys;
}

/// `key` with the zoo's projector names replaced by the official release's (`proj`, `apd_proj`).
std::string official_name(std::string key) {
  for (const auto& [zoo, official] : {std::pair<std::string, std::string>{"cac.context_projector.", "proj."},
                                      {"cac.oracle_projector.", "apd_proj."}}) {
    const auto at = key.find(zoo);
    if (at != std::string::npos) key.replace(at, zoo.size(), official);
  }
  return key;
}

}  // namespace

TEST_CASE("checkpoint source names", "[models][convert]") {
  CHECK(checkpoint_source_names() ==
        std::vector<std::string>{"mmseg", "cac", "backbone", "mmcls", "swin", "torchvision"});
  for (const auto& name : checkpoint_source_names()) {
    INFO(name);
    CHECK(name_of(checkpoint_source(name)) == name);
  }
  CHECK(checkpoint_source("swin") == CheckpointSource::OfficialSwin);
  std::ostringstream printed;
  printed << CheckpointSource::OfficialCAC << " " << CheckpointSource::TorchVision;
  CHECK(printed.str() == "cac torchvision");
  CHECK_THROWS_AS(checkpoint_source("detectron"), c10::Error);
  CHECK_THROWS_WITH(checkpoint_source("detectron"),
                    Catch::StartsWith("cac_models::checkpoint_source: expected one of mmseg, cac, backbone, mmcls, "
                                      "swin, torchvision but got 'detectron'"));
}

TEST_CASE("the official CAC keys map to the context-aware head", "[models][convert]") {
  auto model = make_model("fcn_mobilenetv2", {150, /*cac=*/true});
  const auto own = cac::io::state_dict_of(*model);
  cac::io::StateDict official;
  for (const auto& [key, tensor] : own) official[official_name(key)] = torch::full_like(tensor, 3);
  REQUIRE(official.count("decode_head.proj.0.weight") == 1);
  REQUIRE(official.count("decode_head.apd_proj.2.bias") == 1);

  const auto converted = convert_state_dict(official, CheckpointSource::OfficialCAC);
  CHECK(keys_of(converted) == keys_of(own));
  CHECK(converted.at("decode_head.cac.context_projector.0.weight").sizes().vec() == std::vector<int64_t>{256, 1024});
  CHECK(converted.at("decode_head.cac.context_projector.2.weight").sizes().vec() == std::vector<int64_t>{512, 256});
  CHECK(converted.at("decode_head.cac.oracle_projector.2.bias").sizes().vec() == std::vector<int64_t>{512});
  CHECK(cac::io::load_state_dict(*model, converted).ok());  // strict
  CHECK(torch::all(model->decode_head->cac->oracle_projector->parameters()[0] == 3).item<bool>());
  CHECK(keys_of(convert_state_dict(official, CheckpointSource::MMSeg)) == keys_of(official));

  SECTION("OCRNet's cascade head") {
    const auto options = cac::io::LoadOptions().key_map(official_cac_key_map());
    CHECK(official_cac_key_map().size() == 10);
    CHECK(cac::io::map_key("decode_head.1.apd_proj.2.bias", options) == "decode_head.1.cac.oracle_projector.2.bias");
    CHECK(cac::io::map_key("decode_head.1.proj.0.weight", options) == "decode_head.1.cac.context_projector.0.weight");
    CHECK(cac::io::map_key("decode_head.0.convs.0.conv.weight", options) == "decode_head.0.convs.0.conv.weight");
    CHECK(cac::io::map_key("backbone.stages.0.blocks.0.attn.w_msa.proj.weight", options) ==
          "backbone.stages.0.blocks.0.attn.w_msa.proj.weight");
  }
}

TEST_CASE("backbone checkpoints get the backbone prefix", "[models][convert]") {
  cac::io::StateDict sd{{"stem.0.weight", torch::ones(1)},
                        {"layer1.0.conv1.weight", torch::ones(1)},
                        {"fc.weight", torch::ones(1)},
                        {"head.fc.weight", torch::ones(1)},
                        {"classifier.1.weight", torch::ones(1)}};
  SECTION("open-mmlab ResNetV1c / msra HRNet: fc and head dropped") {
    CHECK(keys_of(convert_state_dict(sd, CheckpointSource::Backbone)) ==
          std::vector<std::string>{"backbone.classifier.1.weight", "backbone.layer1.0.conv1.weight",
                                   "backbone.stem.0.weight"});
  }
  SECTION("torchvision: fc and classifier dropped") {
    CHECK(keys_of(convert_state_dict(sd, CheckpointSource::TorchVision)) ==
          std::vector<std::string>{"backbone.head.fc.weight", "backbone.layer1.0.conv1.weight",
                                   "backbone.stem.0.weight"});
  }
  SECTION("mmcls MobileNetV2 already carries backbone.") {
    cac::io::StateDict mmcls{{"backbone.conv1.conv.weight", torch::ones(1)}, {"head.fc.weight", torch::ones(1)}};
    CHECK(keys_of(convert_state_dict(mmcls, CheckpointSource::MMCls)) ==
          std::vector<std::string>{"backbone.conv1.conv.weight"});
  }
}

TEST_CASE("official Swin keys convert as mmseg's swin_converter does", "[models][convert]") {
  cac::io::StateDict sd{{"patch_embed.proj.weight", torch::zeros({96, 3, 4, 4})},
                        {"patch_embed.norm.weight", torch::zeros(96)},
                        {"layers.0.blocks.0.attn.qkv.weight", torch::zeros({288, 96})},
                        {"layers.0.blocks.0.attn.relative_position_index", torch::zeros({49, 49}, torch::kLong)},
                        {"layers.0.blocks.0.mlp.fc1.bias", torch::zeros(384)},
                        {"layers.0.blocks.0.mlp.fc2.weight", torch::zeros({96, 384})},
                        {"layers.0.blocks.1.attn_mask", torch::zeros({64, 49, 49})},
                        {"layers.0.downsample.reduction.weight", torch::arange(8, torch::kFloat).reshape({1, 8})},
                        {"layers.0.downsample.norm.bias", torch::arange(8, torch::kFloat)},
                        {"norm.weight", torch::zeros(768)},
                        {"head.weight", torch::zeros({1000, 768})}};
  const auto out = convert_state_dict(sd, CheckpointSource::OfficialSwin);
  const std::vector<std::string> expected = {"backbone.norm.weight",
                                             "backbone.patch_embed.norm.weight",
                                             "backbone.patch_embed.projection.weight",
                                             "backbone.stages.0.blocks.0.attn.w_msa.qkv.weight",
                                             "backbone.stages.0.blocks.0.attn.w_msa.relative_position_index",
                                             "backbone.stages.0.blocks.0.ffn.layers.0.0.bias",
                                             "backbone.stages.0.blocks.0.ffn.layers.1.weight",
                                             "backbone.stages.0.blocks.1.attn_mask",
                                             "backbone.stages.0.downsample.norm.bias",
                                             "backbone.stages.0.downsample.reduction.weight"};
  CHECK(keys_of(out) == expected);
  // Hand derivation for C = 2: [0..7] -> reshape(4, 2) -> rows (0, 2, 1, 3) -> transpose -> flatten.
  const auto order = torch::tensor({0, 4, 2, 6, 1, 5, 3, 7}, torch::kFloat);
  CHECK(torch::equal(out.at("backbone.stages.0.downsample.reduction.weight"), order.reshape({1, 8})));
  CHECK(torch::equal(out.at("backbone.stages.0.downsample.norm.bias"), order));
  CHECK_THROWS_WITH(swin_norm_to_mmseg(torch::zeros(6)),
                    Catch::Contains("cac_models::swin_norm_to_mmseg: expected a vector of 4C elements but got [6]"));
  CHECK_THROWS_WITH(swin_reduction_to_mmseg(torch::zeros({2, 6})),
                    Catch::Contains("cac_models::swin_reduction_to_mmseg: expected a weight of shape [out, 4C] but got "
                                    "[2, 6]"));
}
