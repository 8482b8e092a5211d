// Swin Transformer (mmseg 0.x `SwinTransformer`): parameter counts of Swin-T/B/L, mmseg
// state-dict keys (relative position tables and indices, mmcv FFN, patch merging), output
// channels, strides and sizes (padding of the patch embedding, of the windows and of the patch
// merging at odd sizes), golden outputs against an independent PyTorch port, drop path in train
// vs eval mode, gradients, autocast and invalid configurations.
//
// Golden values come from tests/models/backbone_reference.py (a PyTorch port of mmseg 0.x's
// swin.py, utils/embed.py and mmcv's FFN/DropPath, run with /usr/bin/python3 and PyTorch 1.13),
// with the deterministic weights of `fill` on the deterministic image of `image`
// (model_test_support.hpp, same rules as reference_common.py).
#include "models/backbones/swin.hpp"

#include "model_test_support.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

using namespace cac_models;
using namespace cac_models_test;

namespace {

// A small Swin for the cheaper tests: C = 32, depths (2, 2, 2, 2), heads (1, 2, 4, 8), window 7.
SwinTransformerOptions small() {
  return SwinTransformerOptions().embed_dims(32).depths({2, 2, 2, 2}).num_heads({1, 2, 4, 8});
}

int64_t ceil_div(int64_t n, int64_t d) { return (n + d - 1) / d; }

// As `scale_bias_tables` in backbone_reference.py: multiplies every relative_position_bias_table
// (after `fill`) so that the relative position bias matters in the golden outputs.
void scale_bias_tables(torch::nn::Module& model, double factor = 30.0) {
  torch::NoGradGuard no_grad;
  for (auto& entry : state_dict(model)) {
    if (ends_with(entry.first, "relative_position_bias_table")) entry.second.mul_(factor);
  }
}

}  // namespace

TEST_CASE("swin: parameter counts of Swin-T, B and L", "[swin]") {
  // Swin-T: 27,520,698 from the spec; the PyTorch port gives the same. Swin-B 86,880,376 and
  // Swin-L 195,201,204 (window 12) and the small test configuration 2,282,926 from the port
  // (tests/models/backbone_reference.py).
  auto tiny = SwinTransformer(SwinTransformerOptions::tiny());
  CHECK(count_parameters(*tiny) == 27520698);
  CHECK(tiny->out_channels() == std::vector<int64_t>{96, 192, 384, 768});
  auto base = SwinTransformer(SwinTransformerOptions::base());
  CHECK(count_parameters(*base) == 86880376);
  CHECK(base->out_channels() == std::vector<int64_t>{128, 256, 512, 1024});
  // Window 12: a 23² × heads table and a 144 × 144 index.
  auto base_params = base->named_parameters();
  REQUIRE(base_params.contains("stages.2.blocks.17.attn.w_msa.relative_position_bias_table"));
  CHECK(base_params["stages.2.blocks.17.attn.w_msa.relative_position_bias_table"].sizes() ==
        torch::IntArrayRef({529, 16}));
  const torch::Tensor index12 = base->named_buffers()["stages.0.blocks.0.attn.w_msa.relative_position_index"];
  CHECK(index12.sizes() == torch::IntArrayRef({144, 144}));
  CHECK(index12.sum().item<int64_t>() == 5474304);
  CHECK(index12[0][0].item<int64_t>() == 264);
  CHECK(index12[143][0].item<int64_t>() == 528);
  CHECK(index12[12][0].item<int64_t>() == 287);
  base = nullptr;
  auto large = SwinTransformer(SwinTransformerOptions::large());
  CHECK(count_parameters(*large) == 195201204);
  CHECK(large->out_channels() == std::vector<int64_t>{192, 384, 768, 1536});
  large = nullptr;
  CHECK(count_parameters(*SwinTransformer(small())) == 2282926);
}

TEST_CASE("swin: options change the parameters as in mmseg", "[swin]") {
  // Counts from backbone_reference.py. mmseg's patch_norm=False removes the layer norm of the patch
  // embedding and of every patch merging (PatchMerging gets norm_cfg=None).
  auto no_norm = SwinTransformer(SwinTransformerOptions::tiny().patch_norm(false));
  CHECK(count_parameters(*no_norm) == 27515130);
  auto params = no_norm->named_parameters();
  for (const char* key :
       {"patch_embed.norm.weight", "stages.0.downsample.norm.weight", "stages.2.downsample.norm.bias"}) {
    INFO(key);
    CHECK_FALSE(params.contains(key));
  }
  CHECK(params.contains("stages.0.downsample.reduction.weight"));
  CHECK(params.contains("norm0.weight"));  // the output norms stay
  auto no_bias = SwinTransformer(SwinTransformerOptions::tiny().qkv_bias(false));
  CHECK(count_parameters(*no_bias) == 27507450);
  CHECK_FALSE(no_bias->named_parameters().contains("stages.0.blocks.0.attn.w_msa.qkv.bias"));
  CHECK(no_bias->named_parameters().contains("stages.0.blocks.0.attn.w_msa.proj.bias"));
  CHECK(count_parameters(*SwinTransformer(SwinTransformerOptions::tiny().mlp_ratio(2))) == 18885690);
  auto patch2 = SwinTransformer(small().patch_size(2));
  CHECK(count_parameters(*patch2) == 2281774);
  torch::NoGradGuard no_grad;
  patch2->eval();
  const auto out = patch2->forward(torch::randn({1, 3, 31, 16}));
  REQUIRE(out.size() == 4);
  CHECK(out[0].sizes() == torch::IntArrayRef({1, 32, 16, 8}));
  CHECK(out[3].sizes() == torch::IntArrayRef({1, 256, 2, 1}));
}

TEST_CASE("swin: state-dict keys follow mmseg one-to-one", "[swin]") {
  auto model = SwinTransformer(SwinTransformerOptions::tiny());
  const auto entries = state_dict(*model);
  // 177 parameter tensors, plus one relative_position_index buffer per block (12): 189 entries.
  CHECK(model->parameters().size() == 177);
  CHECK(entries.size() == 189);
  // The whole ordered key list, hashed the same way by backbone_reference.py.
  CHECK(key_list_hash(*model) == 0x27ee43c1f7179d09ULL);

  auto params = model->named_parameters();
  auto buffers = model->named_buffers();
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes{
      {"patch_embed.projection.weight", {96, 3, 4, 4}},
      {"patch_embed.projection.bias", {96}},
      {"patch_embed.norm.weight", {96}},
      {"patch_embed.norm.bias", {96}},
      {"stages.0.blocks.0.norm1.weight", {96}},
      {"stages.0.blocks.0.attn.w_msa.relative_position_bias_table", {169, 3}},
      {"stages.0.blocks.0.attn.w_msa.qkv.weight", {288, 96}},
      {"stages.0.blocks.0.attn.w_msa.qkv.bias", {288}},
      {"stages.0.blocks.0.attn.w_msa.proj.weight", {96, 96}},
      {"stages.0.blocks.0.attn.w_msa.proj.bias", {96}},
      {"stages.0.blocks.1.norm2.bias", {96}},
      {"stages.0.blocks.1.ffn.layers.0.0.weight", {384, 96}},
      {"stages.0.blocks.1.ffn.layers.0.0.bias", {384}},
      {"stages.0.blocks.1.ffn.layers.1.weight", {96, 384}},
      {"stages.0.blocks.1.ffn.layers.1.bias", {96}},
      {"stages.0.downsample.norm.weight", {384}},
      {"stages.0.downsample.reduction.weight", {192, 384}},
      {"stages.1.downsample.reduction.weight", {384, 768}},
      {"stages.2.blocks.5.attn.w_msa.relative_position_bias_table", {169, 12}},
      {"stages.2.downsample.norm.bias", {1536}},
      {"stages.3.blocks.1.attn.w_msa.qkv.weight", {2304, 768}},
      {"norm0.weight", {96}},
      {"norm1.bias", {192}},
      {"norm2.weight", {384}},
      {"norm3.weight", {768}},
  };
  for (const auto& s : shapes) {
    INFO(s.first);
    REQUIRE(params.contains(s.first));
    CHECK(params[s.first].sizes() == torch::IntArrayRef(s.second));
  }
  // relative_position_index: a persistent int64 buffer, [w², w²], mmseg's double_step_seq layout.
  const std::string index_key = "stages.0.blocks.0.attn.w_msa.relative_position_index";
  REQUIRE(buffers.contains(index_key));
  CHECK_FALSE(params.contains(index_key));
  const torch::Tensor index = buffers[index_key];
  CHECK(index.scalar_type() == torch::kLong);
  CHECK(index.sizes() == torch::IntArrayRef({49, 49}));
  CHECK(index.sum().item<int64_t>() == 201684);
  CHECK(index[0][0].item<int64_t>() == 84);
  CHECK(index[0][48].item<int64_t>() == 0);
  CHECK(index[48][0].item<int64_t>() == 168);
  CHECK(index[1][0].item<int64_t>() == 85);
  CHECK(index[7][0].item<int64_t>() == 97);
  const torch::Tensor weights = torch::cos(torch::arange(49 * 49, torch::kDouble) * 0.7);
  CHECK((index.flatten().to(torch::kDouble) * weights).sum().item<double>() == Approx(60.60486263).margin(1e-6));
  CHECK(torch::equal(buffers["stages.3.blocks.1.attn.w_msa.relative_position_index"], index));
  // No patch merging after the last stage, no reduction bias, no absolute position embedding.
  for (const auto& p : params) {
    INFO(p.key());
    CHECK(p.key().rfind("stages.3.downsample", 0) != 0);
  }
  for (const char* key : {"stages.0.downsample.reduction.bias", "absolute_pos_embed", "norm4.weight",
                          "stages.0.blocks.0.ffn.layers.2.weight"}) {
    INFO(key);
    CHECK_FALSE(params.contains(key));
  }

  std::ostringstream printed;
  model->pretty_print(printed);
  CHECK(printed.str() ==
        "cac_models::SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)");
}

TEST_CASE("swin: output channels, strides and sizes (even and odd inputs)", "[swin]") {
  torch::NoGradGuard no_grad;
  SECTION("Swin-T 64x64: strides 4, 8, 16, 32 (windows padded from 16, 8, 4, 2 tokens to 21, 14, 7, 7)") {
    auto model = SwinTransformer(SwinTransformerOptions::tiny());
    model->eval();
    const auto out = model->forward(torch::randn({1, 3, 64, 64}));
    REQUIRE(out.size() == 4);
    CHECK(out[0].sizes() == torch::IntArrayRef({1, 96, 16, 16}));
    CHECK(out[1].sizes() == torch::IntArrayRef({1, 192, 8, 8}));
    CHECK(out[2].sizes() == torch::IntArrayRef({1, 384, 4, 4}));
    CHECK(out[3].sizes() == torch::IntArrayRef({1, 768, 2, 2}));
    for (const auto& o : out) CHECK(o.is_contiguous());
  }
  SECTION("odd sizes: the patch embedding and every patch merging pad at the bottom/right") {
    auto model = SwinTransformer(small());
    model->eval();
    for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{61, 75}, {33, 17}, {7, 9}, {4, 4}}) {
      INFO(hw.first << "x" << hw.second);
      const auto out = model->forward(torch::randn({2, 3, hw.first, hw.second}));
      REQUIRE(out.size() == 4);
      int64_t h = ceil_div(hw.first, 4), w = ceil_div(hw.second, 4);
      for (size_t i = 0; i < 4; ++i) {
        CHECK(out[i].sizes() == torch::IntArrayRef({2, int64_t{32} << i, h, w}));
        CHECK(torch::isfinite(out[i]).all().item<bool>());
        h = ceil_div(h, 2), w = ceil_div(w, 2);
      }
    }
  }
}

TEST_CASE("swin: outputs match the PyTorch port of mmseg (window padding, shift masks, odd sizes)", "[swin]") {
  // Each case starts from the filled weights (as backbone_reference.py does); eval mode, so drop path
  // (rate 0.3) is off. Outputs are layer-normed (signed): tolerance kEvalTolerance (1e-6) of the L1
  // norm; the worst deviation over kernels and thread counts is 5.4e-8 (docs/testing.md; the attention
  // softmax and layer norms make it looser than the eval-mode ResNet's 9e-9). With `fill` alone the
  // relative position bias hardly matters (dropping it moves the Swin-T outputs by 2.6e-7 to 3.5e-7 of
  // their L1 norm, transposing relative_position_index by 7e-8 to 1.9e-7), hence the cases with the
  // bias tables scaled by 30, where dropping it moves them by 9e-5 to 3e-4, transposing the index by
  // 2.3e-5 to 7.7e-5 and dropping the shift mask by 2e-4 (6.6e-6 at 224; measured with the port).
  torch::NoGradGuard no_grad;
  struct Case {
    std::string name;
    SwinTransformerOptions options;
    std::vector<int64_t> shape;
    bool scaled_bias;
    std::vector<Golden> golden;
  };
  const std::vector<Case> cases{
      // 16x16 tokens: windows of 7 need padding (to 21, 14, 7, 7) and the shift masks.
      {"Swin-T",
       SwinTransformerOptions::tiny().drop_path_rate(0.3),
       {1, 3, 64, 64},
       false,
       {{{1, 96, 16, 16}, 246.0063727, -0.1679021582, 6278.697386},
        {{1, 192, 8, 8}, -18.19678907, 0.5119120758, 2782.843106},
        {{1, 384, 4, 4}, -4.180902049, -0.9850589574, 1519.580519},
        {{1, 768, 2, 2}, 1.637856885, 4.137009741, 820.1573636}}},
      // 61x75: the patch embedding pads to 64x76 (16x19 tokens), the patch merging 16x19 -> 16x20 and
      // 4x5 -> 4x6.
      {"Swin-T",
       SwinTransformerOptions::tiny().drop_path_rate(0.3),
       {2, 3, 61, 75},
       false,
       {{{2, 96, 16, 19}, 601.9883581, 0.465360018, 14875.11377},
        {{2, 192, 8, 10}, -45.50350172, 0.04139010494, 6957.590499},
        {{2, 384, 4, 5}, -10.45231953, -0.1834581145, 3798.900191},
        {{2, 768, 2, 3}, 4.914996011, 0.9443315789, 2460.446202}}},
      // 56x56 tokens: full windows at every stage (8x8, 4x4, 2x2, 1x1 windows), no padding.
      {"small Swin",
       small().drop_path_rate(0.3),
       {1, 3, 224, 224},
       false,
       {{{1, 32, 56, 56}, 532.6292386, 1.725603409, 25590.04355},
        {{1, 64, 28, 28}, -686.1295057, 1.268217835, 11903.27263},
        {{1, 128, 14, 14}, -1.400759283, 1.342258892, 6134.491144},
        {{1, 256, 7, 7}, 3.880877145, 0.41950271, 2883.114887}}},
      {"Swin-T, bias tables x30",
       SwinTransformerOptions::tiny().drop_path_rate(0.3),
       {1, 3, 64, 64},
       true,
       {{{1, 96, 16, 16}, 246.005995, -0.1678247292, 6278.693367},
        {{1, 192, 8, 8}, -18.19691935, 0.5128632688, 2782.851106},
        {{1, 384, 4, 4}, -4.180799285, -0.9848725906, 1519.577808},
        {{1, 768, 2, 2}, 1.641199461, 4.146702592, 820.0068386}}},
      {"Swin-T, bias tables x30",
       SwinTransformerOptions::tiny().drop_path_rate(0.3),
       {2, 3, 61, 75},
       true,
       {{{2, 96, 16, 19}, 601.9877424, 0.4718426085, 14875.13184},
        {{2, 192, 8, 10}, -45.50349391, 0.04022131675, 6957.555585},
        {{2, 384, 4, 5}, -10.4519988, -0.1839768831, 3798.872369},
        {{2, 768, 2, 3}, 4.920022548, 0.9477447636, 2460.218176}}},
      {"small Swin, bias tables x30",
       small().drop_path_rate(0.3),
       {1, 3, 224, 224},
       true,
       {{{1, 32, 56, 56}, 532.4400167, 1.604360459, 25581.87716},
        {{1, 64, 28, 28}, -686.1392278, 1.276632395, 11903.20196},
        {{1, 128, 14, 14}, -1.400810231, 1.341810662, 6134.489218},
        {{1, 256, 7, 7}, 3.880879135, 0.4195033703, 2883.114919}}},
  };
  for (const auto& c : cases) {
    std::ostringstream name;
    name << c.name << " input " << torch::IntArrayRef(c.shape);
    INFO(name.str());
    auto model = SwinTransformer(c.options);
    fill(*model);
    if (c.scaled_bias) scale_bias_tables(*model);
    model->eval();
    check_golden(model->forward(image(c.shape)), c.golden, kEvalTolerance, name.str());
  }
}

TEST_CASE("swin: drop path is active in training only", "[swin]") {
  torch::manual_seed(7);
  const torch::Tensor x = torch::randn({2, 3, 40, 36});
  torch::NoGradGuard no_grad;
  auto dropping = SwinTransformer(small().drop_path_rate(0.3));
  auto plain = SwinTransformer(small().drop_path_rate(0));
  fill(*dropping);
  fill(*plain);
  dropping->eval();
  plain->eval();
  const auto reference = plain->forward(x);
  const auto eval = dropping->forward(x);
  for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(eval[i], reference[i]));
  // Without drop path (and dropout 0) training mode changes nothing: layer norms have no running
  // statistics.
  plain->train();
  const auto plain_train = plain->forward(x);
  for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(plain_train[i], reference[i]));
  // With drop path, training mode drops residual branches at random.
  dropping->train();
  const auto first = dropping->forward(x);
  const auto second = dropping->forward(x);
  CHECK_FALSE(torch::allclose(first[3], reference[3], 1e-3, 1e-3));
  CHECK_FALSE(torch::allclose(first[3], second[3], 1e-3, 1e-3));
}

TEST_CASE("swin: every parameter gets a gradient; CPU autocast runs", "[swin]") {
  torch::manual_seed(5);
  auto model = SwinTransformer(small().drop_path_rate(0));
  model->train();
  const torch::Tensor x = torch::randn({2, 3, 61, 75});
  SECTION("float32 gradients") {
    torch::Tensor loss = torch::zeros({});
    const auto out = model->forward(x);
    // Weighted by a random map, since the mean of a layer-normed output hardly depends on it.
    for (const auto& y : out) loss = loss + (y * torch::randn_like(y)).mean() + y.pow(3).mean();
    check_every_parameter_learns(*model, loss);
    CHECK_FALSE(model->named_buffers()["stages.0.blocks.0.attn.w_msa.relative_position_index"].requires_grad());
  }
  SECTION("bfloat16 autocast forward, backward outside it") {
    autocast_outputs_loss(model, x).backward();
    CHECK(model->patch_embed->projection->weight.grad().defined());
  }
}

TEST_CASE("swin: invalid configurations and inputs", "[swin]") {
  CHECK_THROWS_AS(SwinTransformer(SwinTransformerOptions().depths({2, 2, 6})), c10::Error);
  CHECK_THROWS_WITH(SwinTransformer(SwinTransformerOptions().depths({2, 2, 6})),
                    Catch::Contains("cac_models::SwinTransformer: expected 4 depths and 4 num_heads but got 3 and 4"));
  CHECK_THROWS_WITH(SwinTransformer(SwinTransformerOptions().num_heads({5, 6, 12, 24})),
                    Catch::Contains("cac_models::SwinTransformer: expected stage 0 to have a positive depth and a "
                                    "number of heads dividing its 96 channels but got depth 2 and 5 heads"));
  CHECK_THROWS_WITH(SwinTransformer(SwinTransformerOptions().depths({2, 0, 6, 2})),
                    Catch::Contains("cac_models::SwinTransformer: expected stage 1 to have a positive depth"));
  CHECK_THROWS_WITH(SwinTransformer(SwinTransformerOptions().window_size(0)),
                    Catch::Contains("cac_models::SwinTransformer: expected positive in_channels, embed_dims, "
                                    "patch_size, window_size and mlp_ratio"));
  CHECK_THROWS_WITH(SwinTransformer(SwinTransformerOptions().drop_path_rate(1.0)),
                    Catch::Contains("cac_models::SwinTransformer: expected drop_rate, attn_drop_rate and "
                                    "drop_path_rate in [0, 1)"));
  CHECK_THROWS_AS(SwinTransformer(SwinTransformerOptions().attn_drop_rate(-0.1)), c10::Error);
  auto model = SwinTransformer(small());
  CHECK_THROWS_WITH(
      model->forward(torch::randn({1, 1, 32, 32})),
      Catch::Contains("cac_models::SwinTransformer: expected an input of shape [B, 3, H, W] but got [1, 1, 32, 32]"));
  CHECK_THROWS_WITH(
      model->forward(torch::randn({3, 32, 32})),
      Catch::Contains("cac_models::SwinTransformer: expected an input of shape [B, 3, H, W] but got [3, 32, 32]"));
}
