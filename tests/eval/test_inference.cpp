// Whole, slide and multi-scale/flip inference: mmseg's window layout, slide == whole where it must
// be, batched == unbatched windows, hand-checked overlap averaging, test-scale sizes, errors.
#include "eval/inference.hpp"
#include "models/heads/fcn_head.hpp"
#include "models/registry.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

using namespace cac_eval;
using Catch::Matchers::Contains;

namespace {

constexpr int64_t kClasses = 5;
constexpr int64_t kWidth = 8;

// One stage at the input resolution: a 1×1 conv (per-pixel, so translation- and flip-equivariant),
// or with `global` the image mean (average pooling to 1×1) through the same conv. Records the
// input sizes it sees.
class StubBackboneImpl : public cac_models::BackboneImpl {
 public:
  explicit StubBackboneImpl(bool global) : global_(global) {
    conv_ = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, kWidth, 1)));
  }
  std::vector<torch::Tensor> forward(const torch::Tensor& x) override {
    sizes.push_back({x.size(0), x.size(2), x.size(3)});
    return {conv_->forward(global_ ? torch::adaptive_avg_pool2d(x, {1, 1}) : x)};
  }
  std::vector<int64_t> out_channels() const override { return {kWidth}; }
  std::vector<std::vector<int64_t>> sizes;

 private:
  bool global_;
  torch::nn::Conv2d conv_{nullptr};
};

// The stub backbone with an FCN head without convs: logits = conv_seg(conv(x)) per pixel.
cac_models::EncoderDecoder stub_model(bool global, std::shared_ptr<StubBackboneImpl>* backbone = nullptr) {
  auto stub = std::make_shared<StubBackboneImpl>(global);
  if (backbone) *backbone = stub;
  auto head = std::make_shared<cac_models::FCNHeadImpl>(
      cac_models::FCNHeadOptions(cac_models::DecodeHeadOptions({kWidth}, kWidth, kClasses))
          .num_convs(0)
          .concat_input(false));
  torch::nn::init::normal_(head->conv_seg->weight, 0.0, 1.0);  // mmseg's N(0, 0.01) makes near-uniform softmax
  cac_models::EncoderDecoder model(stub, head);
  model->eval();
  return model;
}

cac_models::EncoderDecoder zoo_model(bool cac = false) {
  auto model = cac_models::make_model("fcn_mobilenetv2", {kClasses, cac});
  model->eval();
  return model;
}

void check_close(const torch::Tensor& a, const torch::Tensor& b, double atol) {
  REQUIRE(a.sizes() == b.sizes());
  const double diff = (a - b).abs().max().item<double>();
  INFO("max |a - b| = " << diff);
  CHECK(diff <= atol);
}

}  // namespace

TEST_CASE("inference: mmseg's sliding windows", "[inference]") {
  // {y1, y2, x1, x2}; compared in parentheses (Catch cannot print std::array).
  using W = std::array<int64_t, 4>;
  // ADE20K's 512×683 image, crop 512, stride 341: one row, two windows, the last ending at the border.
  CHECK((slide_windows(512, 683, {512, 512}, {341, 341}) == std::vector<W>{{0, 512, 0, 512}, {0, 512, 171, 683}}));
  CHECK((slide_windows(4, 6, {4, 4}, {2, 2}) == std::vector<W>{{0, 4, 0, 4}, {0, 4, 2, 6}}));
  // A crop larger than the image: one window, clipped.
  CHECK((slide_windows(30, 40, {64, 64}, {20, 20}) == std::vector<W>{{0, 30, 0, 40}}));
  // 64×80 with crop 48 stride 16: rows y1 ∈ {0, 16}, columns x1 ∈ {0, 16, 32}.
  const auto windows = slide_windows(64, 80, {48, 48}, {16, 16});
  REQUIRE(windows.size() == 6);
  CHECK((windows[5] == W{16, 64, 32, 80}));
  CHECK(rescale_size({512, 683}, {2048, 512}) == std::vector<int64_t>{512, 683});
  CHECK(rescale_size({375, 500}, {2048, 512}) == std::vector<int64_t>{512, 683});  // factor 512/375
  CHECK(rescale_size({30, 40}, {40, 20}) == std::vector<int64_t>{20, 27});
}

TEST_CASE("inference: slide equals whole when the crop covers the image (zoo model)", "[inference]") {
  torch::manual_seed(0);
  auto model = zoo_model();
  const torch::Tensor image = torch::randn({1, 3, 64, 64});
  const torch::Tensor whole = predict_logits(model, image);
  CHECK(whole.sizes() == torch::IntArrayRef({1, kClasses, 64, 64}));
  CHECK(whole.sum(1).sub(1).abs().max().item<double>() < 1e-5);  // softmax probabilities
  {
    torch::NoGradGuard no_grad;
    check_close(whole, torch::softmax(model->forward(image), 1), 0.0);  // scale 1, no flip: plain whole
  }
  for (int64_t crop : {64, 96}) {
    INFO("crop " << crop);
    check_close(predict_logits(model, image, InferenceOptions().mode("slide").crop({crop, crop}).stride({32, 32})),
                whole, 1e-6);
  }
  CHECK(torch::equal(predict(model, image), whole.argmax(1)[0]));
  CHECK(predict(model, image).scalar_type() == torch::kLong);
  CHECK(predict(model, image).sizes() == torch::IntArrayRef({64, 64}));
}

TEST_CASE("inference: batched windows equal unbatched ones", "[inference]") {
  torch::manual_seed(1);
  for (bool cac : {false, true}) {
    INFO("cac " << cac);
    auto model = zoo_model(cac);
    const torch::Tensor image = torch::randn({1, 3, 64, 80});
    const auto options = InferenceOptions().mode("slide").crop({48, 48}).stride({16, 16});
    const torch::Tensor unbatched = predict_logits(model, image, InferenceOptions(options).batch_crops(false));
    check_close(predict_logits(model, image, options), unbatched, 1e-5);
    check_close(predict_logits(model, image, InferenceOptions(options).max_crops_per_batch(4)), unbatched, 1e-5);
    check_close(predict_logits(model, image, InferenceOptions(options).softmax(false).batch_crops(false)),
                predict_logits(model, image, InferenceOptions(options).softmax(false)), 1e-4);
  }
}

TEST_CASE("inference: overlapping windows on a per-pixel model equal whole", "[inference]") {
  torch::manual_seed(2);
  std::shared_ptr<StubBackboneImpl> backbone;
  auto model = stub_model(false, &backbone);
  const torch::Tensor image = torch::randn({1, 3, 37, 45});
  for (bool softmax : {true, false}) {
    INFO("softmax " << softmax);
    const torch::Tensor whole = predict_logits(model, image, InferenceOptions().softmax(softmax));
    backbone->sizes.clear();
    const auto slide = InferenceOptions().mode("slide").crop({16, 20}).stride({7, 9}).softmax(softmax);
    check_close(predict_logits(model, image, slide), whole, 1e-5);
    CHECK(backbone->sizes ==
          std::vector<std::vector<int64_t>>{{int64_t(slide_windows(37, 45, {16, 20}, {7, 9}).size()), 16, 20}});
    check_close(predict_logits(model, image, InferenceOptions(slide).batch_crops(false)), whole, 1e-5);
    // Flipping commutes with a per-pixel model: flip-averaged == plain.
    check_close(predict_logits(model, image, InferenceOptions(slide).flip(true)), whole, 1e-5);
  }
}

TEST_CASE("inference: overlap averaging by hand on a window-mean model", "[inference]") {
  torch::manual_seed(3);
  auto model = stub_model(true);
  // 4×6 image, crop 4×4, stride 2: windows A = columns 0-3, B = columns 2-5. The model's output
  // on a window is constant (the window mean through the convs): columns 0-1 get A's logits,
  // 2-3 their mean, 4-5 B's.
  const torch::Tensor image = torch::randn({1, 3, 4, 6});
  torch::Tensor a, b;
  {
    torch::NoGradGuard no_grad;
    a = model->forward(image.slice(3, 0, 4)).select(3, 0).select(2, 0);  // [1, n]
    b = model->forward(image.slice(3, 2, 6)).select(3, 0).select(2, 0);
  }
  const auto options = InferenceOptions().mode("slide").crop({4, 4}).stride({2, 2}).softmax(false);
  for (bool batched : {true, false}) {
    const torch::Tensor out = predict_logits(model, image, InferenceOptions(options).batch_crops(batched));
    for (int64_t x = 0; x < 6; ++x) {
      const torch::Tensor expected = x < 2 ? a : x < 4 ? (a + b) / 2 : b;
      for (int64_t y = 0; y < 4; ++y) check_close(out.select(3, x).select(2, y), expected, 1e-6);
    }
  }
  // With softmax: softmax of the averaged logits (mmseg applies it after slide_inference).
  check_close(predict_logits(model, image, InferenceOptions(options).softmax(true)),
              torch::softmax(predict_logits(model, image, options), 1), 1e-6);
}

TEST_CASE("inference: multi-scale and flip", "[inference]") {
  torch::manual_seed(4);
  auto model = zoo_model();
  const torch::Tensor image = torch::randn({1, 3, 48, 64});
  const std::vector<int64_t> out_size{60, 80};

  SECTION("scale 1 without flip is whole inference resized to out_size") {
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = torch::nn::functional::interpolate(
        model->forward(image),
        torch::nn::functional::InterpolateFuncOptions().size(out_size).mode(torch::kBilinear).align_corners(false));
    check_close(predict_logits(model, image, {}, out_size), torch::softmax(logits, 1), 1e-6);
    check_close(predict_logits(model, image, InferenceOptions().softmax(false), out_size), logits, 1e-6);
    check_close(predict_logits(model, image, InferenceOptions().scales({1.0, 1.0}), out_size),
                torch::softmax(logits, 1), 1e-6);
  }
  SECTION("shapes and probabilities") {
    const auto options = InferenceOptions().scales({0.5, 0.75, 1.0, 1.5}).flip(true);
    const torch::Tensor scores = predict_logits(model, image, options, out_size);
    CHECK(scores.sizes() == torch::IntArrayRef({1, kClasses, 60, 80}));
    CHECK(scores.sum(1).sub(1).abs().max().item<double>() < 1e-5);
    CHECK(predict(model, image, options, out_size).sizes() == torch::IntArrayRef({60, 80}));
    const torch::Tensor slide =
        predict_logits(model, image, InferenceOptions(options).mode("slide").crop({32, 32}).stride({21, 21}), out_size);
    CHECK(slide.sizes() == torch::IntArrayRef({1, kClasses, 60, 80}));
    CHECK(torch::isfinite(slide).all().item<bool>());
  }
  SECTION("flip alone is the mean of the image and its mirror") {
    torch::NoGradGuard no_grad;
    const torch::Tensor plain = torch::softmax(model->forward(image), 1);
    const torch::Tensor mirrored = torch::softmax(model->forward(image.flip({3})), 1).flip({3});
    check_close(predict_logits(model, image, InferenceOptions().flip(true)), (plain + mirrored) / 2, 1e-6);
  }
}

TEST_CASE("inference: the sizes each test scale runs at", "[inference]") {
  std::shared_ptr<StubBackboneImpl> backbone;
  auto model = stub_model(false, &backbone);
  const torch::Tensor image = torch::randn({1, 3, 30, 40});
  predict_logits(model, image, InferenceOptions().scales({0.5, 1.5}).flip(true), {30, 40});
  CHECK(backbone->sizes == std::vector<std::vector<int64_t>>{{1, 15, 20}, {1, 15, 20}, {1, 45, 60}, {1, 45, 60}});
  // With mmseg's img_scale: mmcv's keep-ratio resize of the original (out_size) image to
  // (int(long·r), int(short·r)): r = 0.5 → (40, 20) → 20×27; r = 1 → (80, 40) → 40×53.
  backbone->sizes.clear();
  const torch::Tensor out =
      predict_logits(model, image, InferenceOptions().scales({0.5, 1.0}).img_scale({80, 40}), {30, 40});
  CHECK(backbone->sizes == std::vector<std::vector<int64_t>>{{1, 20, 27}, {1, 40, 53}});
  CHECK(out.sizes() == torch::IntArrayRef({1, kClasses, 30, 40}));
}

TEST_CASE("inference: errors", "[inference]") {
  auto model = stub_model(false);
  const torch::Tensor image = torch::randn({1, 3, 8, 8});
  CHECK_THROWS_WITH(predict_logits(model, image, InferenceOptions().mode("sliding")),
                    Contains("cac_eval::predict_logits: expected mode \"whole\" or \"slide\" but got \"sliding\""));
  CHECK_THROWS_WITH(predict_logits(model, torch::randn({3, 8, 8})),
                    Contains("expected an image of shape [B, C, h, w] but got [3, 8, 8]"));
  CHECK_THROWS_WITH(predict_logits(model, image, InferenceOptions().mode("slide").stride({0, 4})),
                    Contains("expected stride {h, w} with positive sides but got [0, 4]"));
  CHECK_THROWS_WITH(predict_logits(model, image, InferenceOptions().scales({})), Contains("at least one scale"));
  CHECK_THROWS_WITH(predict_logits(model, image, {}, {8}), Contains("expected out_size {H, W}"));
  CHECK_THROWS_WITH(predict(model, torch::randn({2, 3, 8, 8})),
                    Contains("cac_eval::predict: expected an image of shape [1, C, h, w] but got [2, 3, 8, 8]"));
  // B > 1 is fine for predict_logits.
  CHECK(predict_logits(model, torch::randn({2, 3, 8, 8})).sizes() == torch::IntArrayRef({2, kClasses, 8, 8}));
}
