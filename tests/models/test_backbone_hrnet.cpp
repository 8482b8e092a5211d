// HRNetV2 (mmseg 0.x `HRNet`): parameter counts, mmseg state-dict keys, output channels, strides
// and sizes (odd sizes included), golden outputs against an independent PyTorch port, train vs
// eval batch norm, norm_eval, multiscale_output and autocast.
//
// Golden values come from tests/models/hrnet_reference.py (a PyTorch port of mmseg 0.x's
// hrnet.py, the BasicBlock/Bottleneck of its resnet.py and mmseg.ops.Upsample/resize, run with
// /usr/bin/python3 and PyTorch 1.13): parameter counts, the state-dict key list, and the outputs
// of W18 with the deterministic weights of `fill` (`fill_hashed` in train mode) on the deterministic
// image of `image` (all in model_test_support.hpp, the same rules as tests/models/reference_common.py).
#include "models/backbones/hrnet.hpp"

#include "model_test_support.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

using namespace cac_models;
using namespace cac_models_test;

namespace {

// Sizes after the stem and after every stride-2 3×3 convolution (padding 1): ceil(size / 2).
std::vector<std::vector<int64_t>> expected_sizes(int64_t h, int64_t w) {
  std::vector<std::vector<int64_t>> sizes;
  h = (h + 1) / 2, w = (w + 1) / 2;  // conv1
  h = (h + 1) / 2, w = (w + 1) / 2;  // conv2: stride 4
  for (int branch = 0; branch < 4; ++branch) {
    sizes.push_back({h, w});
    h = (h + 1) / 2, w = (w + 1) / 2;
  }
  return sizes;
}

std::shared_ptr<HRNetImpl> hrnet(int64_t width, const HRNetOptions& options = {}) {
  return std::dynamic_pointer_cast<HRNetImpl>(make_hrnetv2(width, options));
}

}  // namespace

TEST_CASE("hrnet: parameter counts of HRNetV2-W18 and W48", "[hrnet]") {
  // W18: 9,562,260 from the spec (released models built on CPU); the PyTorch port gives the same.
  // W48: 65,325,120 from the PyTorch port (tests/models/hrnet_reference.py); no published figure for
  // the backbone alone. multiscale_output=false (last module fuses into branch 0 only): 9,317,892 and
  // 63,594,912 from the same port.
  auto w18 = hrnet(18);
  CHECK(count_parameters(*w18) == 9562260);
  CHECK(w18->out_channels() == std::vector<int64_t>{18, 36, 72, 144});
  auto w48 = hrnet(48);
  CHECK(count_parameters(*w48) == 65325120);
  CHECK(w48->out_channels() == std::vector<int64_t>{48, 96, 192, 384});

  auto w18_single = hrnet(18, HRNetOptions().multiscale_output(false));
  CHECK(count_parameters(*w18_single) == 9317892);
  CHECK(w18_single->out_channels() == std::vector<int64_t>{18});
  CHECK(count_parameters(*hrnet(48, HRNetOptions().multiscale_output(false))) == 63594912);
}

TEST_CASE("hrnet: state-dict keys follow mmseg one-to-one", "[hrnet]") {
  auto model = hrnet(18);
  const auto entries = state_dict(*model);
  // 305 convolutions and 305 batch norms: 915 parameter tensors, 1830 entries with the buffers.
  CHECK(model->parameters().size() == 915);
  CHECK(entries.size() == 1830);
  std::string joined;
  for (size_t i = 0; i < entries.size(); ++i) joined += (i ? "\n" : "") + entries[i].first;
  // The whole ordered key list, hashed the same way by hrnet_reference.py.
  CHECK(fnv1a64(joined) == 0x668ee0f83f60d5d1ULL);

  auto params = model->named_parameters();
  auto buffers = model->named_buffers();
  for (const char* key : {"conv1.weight",
                          "bn1.weight",
                          "bn1.bias",
                          "conv2.weight",
                          "bn2.bias",
                          "layer1.0.conv1.weight",
                          "layer1.0.conv3.weight",
                          "layer1.0.bn3.weight",
                          "layer1.0.downsample.0.weight",
                          "layer1.0.downsample.1.weight",
                          "layer1.3.bn2.bias",
                          "transition1.0.0.weight",
                          "transition1.0.1.weight",
                          "transition1.1.0.0.weight",
                          "transition1.1.0.1.bias",
                          "transition2.2.0.0.weight",
                          "transition3.3.0.0.weight",
                          "stage2.0.branches.0.0.conv1.weight",
                          "stage2.0.branches.1.3.bn2.weight",
                          "stage2.0.fuse_layers.0.1.0.weight",
                          "stage2.0.fuse_layers.0.1.1.weight",
                          "stage2.0.fuse_layers.1.0.0.0.weight",
                          "stage3.3.fuse_layers.2.0.0.0.weight",
                          "stage3.3.fuse_layers.2.0.1.0.weight",
                          "stage4.2.fuse_layers.0.3.0.weight",
                          "stage4.2.fuse_layers.3.0.2.1.weight",
                          "stage4.2.branches.3.3.conv2.weight"}) {
    INFO(key);
    CHECK(params.contains(key));
  }
  for (const char* key : {"bn1.running_mean", "bn1.num_batches_tracked", "stage4.2.fuse_layers.3.2.0.1.running_var"}) {
    INFO(key);
    CHECK(buffers.contains(key));
  }
  // mmseg's None entries keep their index and hold nothing.
  for (const char* key : {"transition2.0.0.weight", "transition2.1.0.weight", "stage2.0.fuse_layers.0.0.0.weight",
                          "stage2.0.branches.0.0.downsample.0.weight", "layer1.1.downsample.0.weight"}) {
    INFO(key);
    CHECK_FALSE(params.contains(key));
  }
  CHECK(params["conv1.weight"].sizes() == torch::IntArrayRef({64, 3, 3, 3}));
  CHECK(params["layer1.0.downsample.0.weight"].sizes() == torch::IntArrayRef({256, 64, 1, 1}));
  CHECK(params["transition1.0.0.weight"].sizes() == torch::IntArrayRef({18, 256, 3, 3}));
  CHECK(params["transition1.1.0.0.weight"].sizes() == torch::IntArrayRef({36, 256, 3, 3}));
  CHECK(params["transition3.3.0.0.weight"].sizes() == torch::IntArrayRef({144, 72, 3, 3}));
  CHECK(params["stage2.0.fuse_layers.0.1.0.weight"].sizes() == torch::IntArrayRef({18, 36, 1, 1}));
  CHECK(params["stage4.2.fuse_layers.3.0.0.0.weight"].sizes() == torch::IntArrayRef({18, 18, 3, 3}));
  CHECK(params["stage4.2.fuse_layers.3.0.2.0.weight"].sizes() == torch::IntArrayRef({144, 18, 3, 3}));

  std::ostringstream printed;
  model->pretty_print(printed);
  CHECK(printed.str() == "cac_models::HRNet(channels=(18, 36, 72, 144), norm_eval=false)");
}

TEST_CASE("hrnet: output channels, strides and sizes (even and odd inputs)", "[hrnet]") {
  auto model = hrnet(18);
  model->eval();
  torch::NoGradGuard no_grad;
  SECTION("64x64: strides 4, 8, 16, 32") {
    const auto out = model->forward(torch::randn({1, 3, 64, 64}));
    REQUIRE(out.size() == 4);
    CHECK(out[0].sizes() == torch::IntArrayRef({1, 18, 16, 16}));
    CHECK(out[1].sizes() == torch::IntArrayRef({1, 36, 8, 8}));
    CHECK(out[2].sizes() == torch::IntArrayRef({1, 72, 4, 4}));
    CHECK(out[3].sizes() == torch::IntArrayRef({1, 144, 2, 2}));
  }
  SECTION("66x50: every stride-2 conv rounds up; upsampled maps are resized back") {
    // 66x50 -> 33x25 -> 17x13 | 9x7 | 5x4 | 3x2. In the fuse layers 3x2 upsampled by 8 gives
    // 24x16 and 5x4 by 2 gives 10x8, which mmseg resizes (bilinear) to 17x13 and 9x7.
    const auto out = model->forward(torch::randn({1, 3, 66, 50}));
    REQUIRE(out.size() == 4);
    CHECK(out[0].sizes() == torch::IntArrayRef({1, 18, 17, 13}));
    CHECK(out[1].sizes() == torch::IntArrayRef({1, 36, 9, 7}));
    CHECK(out[2].sizes() == torch::IntArrayRef({1, 72, 5, 4}));
    CHECK(out[3].sizes() == torch::IntArrayRef({1, 144, 3, 2}));
  }
  SECTION("other sizes follow ceil(size / 2) at every stride") {
    for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{35, 97}, {32, 33}, {7, 9}}) {
      INFO(hw.first << "x" << hw.second);
      const auto out = model->forward(torch::randn({2, 3, hw.first, hw.second}));
      const auto sizes = expected_sizes(hw.first, hw.second);
      REQUIRE(out.size() == 4);
      for (size_t i = 0; i < 4; ++i) {
        CHECK(out[i].sizes() == torch::IntArrayRef({2, model->out_channels()[i], sizes[i][0], sizes[i][1]}));
      }
    }
  }
  SECTION("multiscale_output=false returns branch 0 only") {
    auto single = hrnet(18, HRNetOptions().multiscale_output(false));
    single->eval();
    const auto out = single->forward(torch::randn({1, 3, 66, 50}));
    REQUIRE(out.size() == 1);
    CHECK(out[0].sizes() == torch::IntArrayRef({1, 18, 17, 13}));
  }
}

TEST_CASE("hrnet: outputs match the PyTorch port of mmseg (train and eval BN, odd size)", "[hrnet]") {
  // Each case starts from freshly filled weights and running statistics (as in hrnet_reference.py):
  // `fill` in eval mode, `fill_hashed` in train mode, where batch norm over the batch statistics of
  // `fill`'s rank-2 convolutions would be ill-conditioned (model_test_support.hpp); train mode on
  // 1x3x128x128 and 2x3x66x50 keeps at least 12 values per channel in the deepest branch. The 2x3x66x50
  // cases exercise mmseg's double interpolation in the fuse layers (upsample by 2^(j-i), then resize
  // to the branch size): resizing directly once moves the outputs by 1.2% (train) and 4.4e-5 (eval)
  // of their L1 norm, align_corners=true by 0.6% and 0.4%. Outputs are ReLU'd, so `sum` is also the
  // L1 norm; both numbers within kTrainTolerance (3e-5) or kEvalTolerance (1e-6) of it, where the
  // worst deviation over kernels and thread counts is 4e-6 and 1.6e-7 (docs/testing.md).
  auto model = hrnet(18);
  torch::NoGradGuard no_grad;
  struct Case {
    std::vector<int64_t> shape;
    bool train;
    std::vector<Golden> golden;
  };
  const std::vector<Case> cases{
      {{1, 3, 128, 128},
       true,
       {{{1, 18, 32, 32}, 26825.28482, -13.21653609},
        {{1, 36, 16, 16}, 14867.07577, -50.57953075},
        {{1, 72, 8, 8}, 7103.871094, -49.53855429},
        {{1, 144, 4, 4}, 2280.302167, -56.26350399}}},
      {{1, 3, 64, 64},
       false,
       {{{1, 18, 16, 16}, 107668.912, 38.55325691},
        {{1, 36, 8, 8}, 39516.55827, -169.2660918},
        {{1, 72, 4, 4}, 11867.67153, 16.61250957},
        {{1, 144, 2, 2}, 1682.607651, 34.39455025}}},
      {{2, 3, 66, 50},
       true,
       {{{2, 18, 17, 13}, 11808.41667, 83.09997394},
        {{2, 36, 9, 7}, 7265.183534, -71.96796763},
        {{2, 72, 5, 4}, 4482.854331, 14.16643856},
        {{2, 144, 3, 2}, 1709.486333, 15.14115008}}},
      {{2, 3, 66, 50},
       false,
       {{{2, 18, 17, 13}, 176090.1128, -2.774500833},
        {{2, 36, 9, 7}, 67878.82886, 194.8331324},
        {{2, 72, 5, 4}, 22856.43965, -3.013172078},
        {{2, 144, 3, 2}, 4120.319858, 8.051936665}}},
  };
  for (const auto& c : cases) {
    std::ostringstream name;
    name << "HRNetV2-W18 input " << torch::IntArrayRef(c.shape) << (c.train ? " train" : " eval");
    INFO(name.str());
    if (c.train) {
      fill_hashed(*model);
    } else {
      fill(*model);
    }
    model->train(c.train);
    check_golden(model->forward(image(c.shape)), c.golden, c.train ? kTrainTolerance : kEvalTolerance, name.str());
  }
}

TEST_CASE("hrnet: train vs eval batch norm, norm_eval", "[hrnet]") {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({2, 3, 40, 36});
  SECTION("train mode uses batch statistics and updates the running ones; eval does neither") {
    auto model = hrnet(18);
    fill(*model);
    auto buffers = model->named_buffers();
    const torch::Tensor mean = buffers["stage4.2.fuse_layers.3.0.2.1.running_mean"].clone();

    torch::NoGradGuard no_grad;
    model->eval();
    const auto both = model->forward(x);
    const auto alone = model->forward(x.slice(0, 0, 1));
    for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(both[i].slice(0, 0, 1), alone[i], 1e-4, 1e-4));
    CHECK(torch::equal(buffers["stage4.2.fuse_layers.3.0.2.1.running_mean"], mean));
    CHECK(buffers["bn1.num_batches_tracked"].item<int64_t>() == 0);

    model->train();
    const auto train_both = model->forward(x);
    const auto train_alone = model->forward(x.slice(0, 0, 1));
    CHECK_FALSE(torch::allclose(train_both[0].slice(0, 0, 1), train_alone[0], 1e-3, 1e-3));
    CHECK_FALSE(torch::allclose(train_both[0], both[0], 1e-3, 1e-3));
    CHECK_FALSE(torch::equal(buffers["stage4.2.fuse_layers.3.0.2.1.running_mean"], mean));
    CHECK(buffers["bn1.num_batches_tracked"].item<int64_t>() == 2);
  }
  SECTION("norm_eval keeps every batch norm in eval mode in training") {
    auto frozen = hrnet(18, HRNetOptions().norm_eval(true));
    auto reference = hrnet(18);
    fill(*frozen);
    fill(*reference);
    frozen->train();
    reference->eval();
    CHECK(frozen->is_training());
    for (const auto& module : frozen->modules()) {
      if (auto* norm = module->as<cac_models::Norm2dImpl>()) CHECK_FALSE(norm->is_training());
    }
    torch::NoGradGuard no_grad;
    const auto a = frozen->forward(x);
    const auto b = reference->forward(x);
    for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(a[i], b[i]));
    CHECK(frozen->named_buffers()["bn1.num_batches_tracked"].item<int64_t>() == 0);
  }
}

TEST_CASE("hrnet: every parameter gets a gradient; CPU autocast runs", "[hrnet]") {
  torch::manual_seed(5);
  auto model = hrnet(18);
  model->train();
  const torch::Tensor x = torch::randn({2, 3, 33, 47});
  SECTION("float32 gradients") {
    torch::Tensor loss = torch::zeros({});
    for (const auto& y : model->forward(x)) loss = loss + y.pow(2).mean();
    check_every_parameter_learns(*model, loss);
  }
  SECTION("bfloat16 autocast forward, backward outside it") {
    autocast_outputs_loss(model, x).backward();
    CHECK(model->conv1->weight.grad().defined());
  }
}

TEST_CASE("hrnet: invalid configurations and inputs", "[hrnet]") {
  CHECK_THROWS_WITH(make_hrnetv2(0), Catch::Contains("cac_models::make_hrnetv2: expected a positive width"));
  auto stages = hrnetv2_stages(18);
  stages[2].num_channels({18, 36});
  CHECK_THROWS_AS(HRNet(stages), c10::Error);
  CHECK_THROWS_WITH(HRNet(stages),
                    Catch::Contains("cac_models::HRNet: expected stage3 to have as many num_channels as num_blocks"));
  auto three = hrnetv2_stages(18);
  three.pop_back();
  CHECK_THROWS_WITH(HRNet(three), Catch::Contains("cac_models::HRNet: expected 4 stages but got 3"));
  auto model = hrnet(18);
  CHECK_THROWS_WITH(
      model->forward(torch::randn({1, 1, 32, 32})),
      Catch::Contains("cac_models::HRNet: expected an input of shape [B, 3, H, W] but got [1, 1, 32, 32]"));
}
