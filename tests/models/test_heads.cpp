// Decode heads and the EncoderDecoder on a tiny stub backbone: shapes, mmseg key names, gradients
// of every parameter, baseline vs CAC logits, train vs eval, the mmseg loss normalisation and a
// two-step SGD run per head family.
#include "models/heads/fcn_head.hpp"
#include "models/heads/ocr_head.hpp"
#include "models/heads/sep_aspp_head.hpp"
#include "models/heads/uper_head.hpp"
#include "models/segmentor.hpp"

#include <cac/autocast.hpp>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <set>

using namespace cac_models;

namespace {

// Four stages at strides 4, 8, 16, 32 with the given channels: average pooling then a 1×1 conv.
class StubBackboneImpl : public BackboneImpl {
 public:
  explicit StubBackboneImpl(std::vector<int64_t> channels, std::vector<int64_t> strides = {4, 8, 16, 32})
      : channels_(std::move(channels)), strides_(std::move(strides)) {
    for (size_t i = 0; i < channels_.size(); ++i) {
      convs_.push_back(register_module("stage" + std::to_string(i),
                                       torch::nn::Conv2d(torch::nn::Conv2dOptions(3, channels_[i], 1))));
    }
  }
  std::vector<torch::Tensor> forward(const torch::Tensor& x) override {
    std::vector<torch::Tensor> out;
    for (size_t i = 0; i < convs_.size(); ++i) {
      const int64_t s = strides_[i];
      const int64_t h = (x.size(2) + s - 1) / s, w = (x.size(3) + s - 1) / s;
      out.push_back(torch::relu(convs_[i]->forward(torch::adaptive_avg_pool2d(x, {h, w}))));
    }
    return out;
  }
  std::vector<int64_t> out_channels() const override { return channels_; }

 private:
  std::vector<int64_t> channels_, strides_;
  std::vector<torch::nn::Conv2d> convs_;
};

const std::vector<int64_t> kStages{8, 12, 16, 20};
constexpr int64_t kClasses = 5;
constexpr int64_t kChannels = 16;

DecodeHeadOptions single(int64_t index, int64_t channels = kChannels) {
  return DecodeHeadOptions({kStages[static_cast<size_t>(index)]}, channels, kClasses).in_index({index});
}

std::shared_ptr<DecodeHeadImpl> aux_head() {
  return std::make_shared<FCNHeadImpl>(FCNHeadOptions(single(2, 8).loss_weight(0.4)).num_convs(1).concat_input(false));
}

// Every head family as its segmentor (FCN and DeepLabV3+ and UperNet with an auxiliary head,
// OCRNet as a cascade without one).
EncoderDecoder make(const std::string& family, bool cac) {
  auto backbone = std::make_shared<StubBackboneImpl>(kStages);
  if (family == "fcn") {
    return EncoderDecoder(backbone, std::make_shared<FCNHeadImpl>(FCNHeadOptions(single(3).cac(cac))), aux_head());
  }
  if (family == "aspp") {
    return EncoderDecoder(
        backbone,
        std::make_shared<DepthwiseSeparableASPPHeadImpl>(
            DepthwiseSeparableASPPHeadOptions(single(3).cac(cac), kStages[0], 6).dilations({1, 2, 3})),
        aux_head());
  }
  if (family == "uper") {
    auto options = DecodeHeadOptions(kStages, kChannels, kClasses)
                       .in_index({0, 1, 2, 3})
                       .input_transform(InputTransform::MultipleSelect)
                       .cac(cac);
    return EncoderDecoder(backbone, std::make_shared<UPerHeadImpl>(UPerHeadOptions(options)), aux_head());
  }
  REQUIRE(family == "ocr");
  const int64_t sum = 8 + 12 + 16 + 20;
  auto fcn = std::make_shared<FCNHeadImpl>(FCNHeadOptions(DecodeHeadOptions(kStages, sum, kClasses)
                                                              .in_index({0, 1, 2, 3})
                                                              .input_transform(InputTransform::ResizeConcat)
                                                              .dropout_ratio(-1)
                                                              .loss_weight(0.4))
                                               .num_convs(1)
                                               .kernel_size(1)
                                               .concat_input(false));
  auto ocr = std::make_shared<OCRHeadImpl>(OCRHeadOptions(DecodeHeadOptions(kStages, kChannels, kClasses)
                                                              .in_index({0, 1, 2, 3})
                                                              .input_transform(InputTransform::ResizeConcat)
                                                              .dropout_ratio(-1)
                                                              .cac(cac))
                                               .ocr_channels(8));
  return EncoderDecoder(backbone, std::vector<std::shared_ptr<DecodeHeadImpl>>{fcn, ocr});
}

torch::Tensor random_labels(int64_t batch, int64_t h, int64_t w) {
  torch::Tensor labels = torch::randint(0, kClasses, {batch, h, w}, torch::kLong);
  labels.index_put_({torch::rand({batch, h, w}) < 0.1}, 255);
  return labels;
}

int64_t count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

std::set<std::string> keys(const torch::nn::Module& module) {
  std::set<std::string> names;
  for (const auto& item : module.named_parameters()) names.insert(item.key());
  for (const auto& item : module.named_buffers()) names.insert(item.key());
  return names;
}

const std::vector<std::string> kFamilies{"fcn", "aspp", "uper", "ocr"};

}  // namespace

TEST_CASE("heads: output shapes at the input resolution, odd sizes included", "[heads]") {
  torch::manual_seed(0);
  for (const auto& family : kFamilies) {
    for (bool cac : {false, true}) {
      INFO(family << " cac=" << cac);
      EncoderDecoder model = make(family, cac);
      model->eval();
      torch::NoGradGuard no_grad;
      for (auto size : {std::array<int64_t, 2>{64, 64}, std::array<int64_t, 2>{37, 45}}) {
        const torch::Tensor out = model->forward(torch::randn({2, 3, size[0], size[1]}));
        CHECK(out.sizes() == torch::IntArrayRef({2, kClasses, size[0], size[1]}));
        CHECK(torch::isfinite(out).all().item<bool>());
      }
    }
  }
}

TEST_CASE("heads: head outputs at the feature resolution", "[heads]") {
  torch::manual_seed(0);
  StubBackboneImpl backbone(kStages);
  const auto x = backbone.forward(torch::randn({2, 3, 64, 64}));  // 16, 8, 4, 2
  FCNHeadImpl fcn(FCNHeadOptions(single(3)));
  CHECK(fcn.features(x).sizes() == torch::IntArrayRef({2, kChannels, 2, 2}));
  CHECK(fcn.forward_test(x).sizes() == torch::IntArrayRef({2, kClasses, 2, 2}));
  DepthwiseSeparableASPPHeadImpl aspp(DepthwiseSeparableASPPHeadOptions(single(3), kStages[0], 6));
  CHECK(aspp.features(x).sizes() == torch::IntArrayRef({2, kChannels, 16, 16}));  // stage 0's resolution
  UPerHeadImpl uper(UPerHeadOptions(DecodeHeadOptions(kStages, kChannels, kClasses)
                                        .in_index({0, 1, 2, 3})
                                        .input_transform(InputTransform::MultipleSelect)));
  CHECK(uper.features(x).sizes() == torch::IntArrayRef({2, kChannels, 16, 16}));
  OCRHeadImpl ocr(OCRHeadOptions(DecodeHeadOptions(kStages, kChannels, kClasses)
                                     .in_index({0, 1, 2, 3})
                                     .input_transform(InputTransform::ResizeConcat)));
  CHECK(ocr.input_channels() == 56);
  const torch::Tensor prev = torch::randn({2, kClasses, 16, 16});
  CHECK(ocr.forward_test(x, prev).sizes() == torch::IntArrayRef({2, kClasses, 16, 16}));
  CHECK_THROWS_WITH(ocr.features(x), Catch::Contains("cac_models::OCRHead: expected the previous head's logits"));
  CHECK_THROWS_WITH(
      ocr.forward_test(x, torch::randn({2, kClasses, 8, 8})),
      Catch::Contains("cac_models::OCRHead: expected the previous head's logits of shape [2, n, 16, 16]"));
}

TEST_CASE("heads: parameter names follow mmseg's state-dict keys", "[heads]") {
  const auto fcn = keys(*make("fcn", true));
  for (const char* key :
       {"backbone.stage0.weight", "decode_head.conv_seg.weight", "decode_head.conv_seg.bias",
        "decode_head.convs.0.conv.weight", "decode_head.convs.1.bn.running_mean", "decode_head.conv_cat.conv.weight",
        "decode_head.conv_cat.bn.num_batches_tracked", "decode_head.cac.context_projector.0.weight",
        "decode_head.cac.context_projector.2.bias", "decode_head.cac.oracle_projector.0.weight",
        "auxiliary_head.convs.0.conv.weight", "auxiliary_head.conv_seg.weight"}) {
    CHECK(fcn.count(key) == 1);
  }
  CHECK(fcn.count("decode_head.convs.0.conv.bias") == 0);  // bias only without a norm (mmcv bias='auto')
  CHECK(fcn.count("auxiliary_head.conv_cat.conv.weight") == 0);

  const auto aspp = keys(*make("aspp", false));
  for (const char* key :
       {"decode_head.image_pool.1.conv.weight", "decode_head.image_pool.1.bn.weight",
        "decode_head.aspp_modules.0.conv.weight", "decode_head.aspp_modules.1.depthwise_conv.conv.weight",
        "decode_head.aspp_modules.2.pointwise_conv.bn.bias", "decode_head.bottleneck.conv.weight",
        "decode_head.c1_bottleneck.conv.weight", "decode_head.sep_bottleneck.0.depthwise_conv.conv.weight",
        "decode_head.sep_bottleneck.1.pointwise_conv.bn.running_var"}) {
    CHECK(aspp.count(key) == 1);
  }
  CHECK(aspp.count("decode_head.cac.context_projector.0.weight") == 0);

  const auto uper = keys(*make("uper", false));
  for (const char* key : {"decode_head.psp_modules.0.1.conv.weight", "decode_head.psp_modules.3.1.bn.weight",
                          "decode_head.bottleneck.conv.weight", "decode_head.lateral_convs.2.conv.weight",
                          "decode_head.fpn_convs.0.conv.weight", "decode_head.fpn_bottleneck.conv.weight"}) {
    CHECK(uper.count(key) == 1);
  }
  CHECK(uper.count("decode_head.lateral_convs.3.conv.weight") == 0);

  const auto ocr = keys(*make("ocr", true));
  for (const char* key :
       {"decode_head.0.convs.0.conv.weight", "decode_head.0.conv_seg.weight", "decode_head.1.bottleneck.conv.weight",
        "decode_head.1.object_context_block.query_project.0.conv.weight",
        "decode_head.1.object_context_block.query_project.1.bn.weight",
        "decode_head.1.object_context_block.key_project.1.conv.weight",
        "decode_head.1.object_context_block.value_project.conv.weight",
        "decode_head.1.object_context_block.out_project.bn.weight",
        "decode_head.1.object_context_block.bottleneck.conv.weight", "decode_head.1.conv_seg.weight",
        "decode_head.1.cac.oracle_projector.2.weight"}) {
    CHECK(ocr.count(key) == 1);
  }
  CHECK(ocr.count("decode_head.0.cac.context_projector.0.weight") == 0);  // only the OCR stage gets CAC
}

TEST_CASE("heads: the CAC part is 2·(2d·d/2 + d/2·d + d) parameters", "[heads]") {
  for (const auto& family : kFamilies) {
    INFO(family);
    const int64_t d = kChannels;
    CHECK(count(*make(family, true)) - count(*make(family, false)) == 2 * (2 * d * (d / 2) + (d / 2) * d + d));
  }
}

TEST_CASE("heads: every parameter gets a gradient from the total loss", "[heads]") {
  torch::manual_seed(1);
  for (const auto& family : kFamilies) {
    for (bool cac : {false, true}) {
      INFO(family << " cac=" << cac);
      EncoderDecoder model = make(family, cac);
      model->train();
      const auto losses = model->forward_train(torch::randn({2, 3, 64, 64}), random_labels(2, 64, 64));
      std::set<std::string> expected;
      if (family == "ocr") {
        expected = {"decode_0.loss_ce", "decode_1.loss_ce", "total"};
        if (cac) expected.insert({"decode_1.loss_pre_self", "decode_1.loss_pre", "decode_1.loss_kl"});
      } else {
        expected = {"decode.loss_ce", "aux.loss_ce", "total"};
        if (cac) expected.insert({"decode.loss_pre_self", "decode.loss_pre", "decode.loss_kl"});
      }
      std::set<std::string> names;
      torch::Tensor sum = torch::zeros({});
      for (const auto& entry : losses) {
        names.insert(entry.first);
        CHECK(entry.second.dim() == 0);
        CHECK(std::isfinite(entry.second.item<double>()));
        if (entry.first != "total") sum = sum + entry.second;
      }
      CHECK(names == expected);
      CHECK(losses.at("total").item<double>() == Approx(sum.item<double>()).epsilon(1e-6));
      losses.at("total").backward();
      for (const auto& item : model->named_parameters()) {
        if (item.key().rfind("backbone.", 0) == 0) continue;  // the stub has stages some heads do not read
        INFO(item.key());
        const torch::Tensor& grad = item.value().grad();
        REQUIRE(grad.defined());
        CHECK(grad.abs().sum().item<double>() > 0);
        CHECK(torch::isfinite(grad).all().item<bool>());
      }
    }
  }
}

TEST_CASE("heads: the CAC variant keeps the baseline logits p with the same weights", "[heads]") {
  torch::manual_seed(2);
  for (const auto& family : kFamilies) {
    INFO(family);
    EncoderDecoder baseline = make(family, false);
    EncoderDecoder with_cac = make(family, true);
    {
      // Copy every shared parameter and buffer by name.
      torch::NoGradGuard no_grad;
      auto target = with_cac->named_parameters();
      for (const auto& item : baseline->named_parameters()) target[item.key()].copy_(item.value());
      auto target_buffers = with_cac->named_buffers();
      for (const auto& item : baseline->named_buffers()) target_buffers[item.key()].copy_(item.value());
    }
    baseline->eval();
    with_cac->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor images = torch::randn({2, 3, 64, 64});
    const auto xb = baseline->extract_features(images), xc = with_cac->extract_features(images);
    const auto& hb = baseline->decode_heads().back();
    const auto& hc = with_cac->decode_heads().back();
    torch::Tensor fb, fc;
    if (family == "ocr") {
      auto prev_b = baseline->decode_heads().front()->forward_test(xb);
      auto prev_c = with_cac->decode_heads().front()->forward_test(xc);
      fb = std::static_pointer_cast<OCRHeadImpl>(hb)->features(xb, prev_b);
      fc = std::static_pointer_cast<OCRHeadImpl>(hc)->features(xc, prev_c);
    } else {
      fb = hb->features(xb);
      fc = hc->features(xc);
    }
    CHECK(torch::equal(fb, fc));
    const torch::Tensor p = hb->logits(fb);
    CHECK(torch::equal(p, hc->logits(fc)));
    CHECK(torch::equal(hb->predict(fb), p));   // the baseline predicts p
    const torch::Tensor pp = hc->predict(fc);  // the CAC variant predicts pp = cac(f, C, p)
    CHECK(torch::allclose(pp, hc->cac->forward(fc, hc->conv_seg->weight, p)));
    CHECK_FALSE(torch::allclose(pp, p));
    CHECK(torch::allclose(with_cac->forward(images), resize(pp, {64, 64}, false)));
  }
}

TEST_CASE("heads: dropout only in training, BN batch statistics only in training", "[heads]") {
  torch::manual_seed(3);
  FCNHeadImpl head(FCNHeadOptions(single(3).dropout_ratio(0.5)));
  REQUIRE(head.dropout);
  const torch::Tensor f = torch::randn({4, kChannels, 6, 6});
  head.eval();
  const torch::Tensor plain = head.conv_seg->forward(f);
  CHECK(torch::equal(head.logits(f), plain));
  CHECK(torch::equal(head.logits(f), head.logits(f)));
  head.train();
  const torch::Tensor dropped = head.logits(f);
  CHECK_FALSE(torch::allclose(dropped, plain));
  // No dropout layer at all for ratio ≤ 0 (OCR configs).
  FCNHeadImpl no_dropout(FCNHeadOptions(single(3).dropout_ratio(-1)));
  CHECK_FALSE(no_dropout.dropout);
  no_dropout.train();
  CHECK(torch::equal(no_dropout.logits(f), no_dropout.conv_seg->forward(f)));

  // BN: training normalises with the batch statistics and updates the running ones; eval uses them.
  StubBackboneImpl backbone(kStages);
  const auto x = backbone.forward(torch::randn({2, 3, 64, 64}));
  FCNHeadImpl fcn(FCNHeadOptions(single(3)));
  auto& bn = fcn.convs->at<ConvModuleImpl>(0).bn;
  const torch::Tensor before = bn->running_mean.clone();
  fcn.train();
  const torch::Tensor train_features = fcn.features(x);
  CHECK_FALSE(torch::equal(bn->running_mean, before));
  fcn.eval();
  const torch::Tensor running = bn->running_mean.clone();
  const torch::Tensor eval_features = fcn.features(x);
  CHECK(torch::equal(bn->running_mean, running));
  CHECK_FALSE(torch::allclose(train_features, eval_features));
}

TEST_CASE("heads: baseline loss_ce follows mmseg 0.x (mean over all pixels, ignored ones count as 0)", "[heads]") {
  torch::manual_seed(4);
  FCNHeadImpl head(FCNHeadOptions(single(3).loss_weight(0.4).dropout_ratio(0)));
  head.eval();
  const torch::Tensor f = torch::randn({2, kChannels, 4, 4});
  torch::Tensor labels = torch::randint(0, kClasses, {2, 16, 16}, torch::kLong);
  labels.slice(1, 0, 8).fill_(255);  // half the pixels ignored
  const auto losses = head.losses(f, labels);
  REQUIRE(losses.size() == 2);  // loss_ce (detached, for logging) and total (what trains)
  // Reference: valid-pixel mean × valid fraction (here 1/2), times the loss weight.
  const torch::Tensor up = resize(head.logits(f), {16, 16}, false);
  const torch::Tensor valid_mean = torch::nn::functional::cross_entropy(
      up, labels, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(255));
  CHECK(losses.at("loss_ce").item<double>() == Approx(0.4 * 0.5 * valid_mean.item<double>()).epsilon(1e-6));
  CHECK(losses.at("total").item<double>() == losses.at("loss_ce").item<double>());
  CHECK_FALSE(losses.at("loss_ce").requires_grad());
  CHECK(losses.at("total").requires_grad());

  // With CAC: the four terms of cac::ContextAwareLoss, each times the loss weight.
  FCNHeadImpl cac_head(FCNHeadOptions(single(3).loss_weight(0.4).dropout_ratio(0).cac(true)));
  cac_head.train();
  const auto terms = cac_head.losses(f, labels);
  cac::ContextAwareLoss criterion;
  const torch::Tensor p = cac_head.logits(f);
  const auto reference =
      criterion->forward(cac_head.cac->forward_train(f, cac_head.conv_seg->weight, p, labels), labels);
  CHECK(terms.at("loss_ce").item<double>() == Approx(0.4 * reference.context_ce.item<double>()));
  CHECK(terms.at("loss_pre_self").item<double>() == Approx(0.4 * reference.logits_ce.item<double>()));
  CHECK(terms.at("loss_pre").item<double>() == Approx(0.4 * reference.oracle_ce.item<double>()));
  CHECK(terms.at("loss_kl").item<double>() == Approx(0.4 * reference.kl.item<double>()));
  CHECK(terms.at("total").item<double>() == Approx(0.4 * reference.total.item<double>()));
  CHECK(terms.at("total").item<double>() ==
        Approx(0.4 * (reference.context_ce + reference.logits_ce + reference.oracle_ce + reference.kl).item<double>()));

  // A zero-weight term is reported as 0 and stays out of the total and its gradient, as
  // cac::ContextAwareLoss decides (the head only multiplies by its loss weight).
  FCNHeadImpl no_kl(FCNHeadOptions(
      single(3).loss_weight(0.4).dropout_ratio(0).cac(true).cac_loss(cac::ContextAwareLossOptions().kl_weight(0))));
  no_kl.train();
  const auto partial = no_kl.losses(f, labels);
  const auto expected =
      cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl_weight(0))
          ->forward(no_kl.cac->forward_train(f, no_kl.conv_seg->weight, no_kl.logits(f), labels), labels);
  CHECK(partial.at("loss_kl").item<double>() == 0.0);
  CHECK(expected.kl.item<double>() > 0.0);
  CHECK(partial.at("total").item<double>() ==
        Approx(0.4 * (expected.context_ce + expected.logits_ce + expected.oracle_ce).item<double>()));
}

TEST_CASE("heads: two SGD steps lower the loss for every head family", "[heads]") {
  for (const auto& family : kFamilies) {
    for (bool cac : {false, true}) {
      INFO(family << " cac=" << cac);
      torch::manual_seed(5);
      EncoderDecoder model = make(family, cac);
      model->train();
      torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
      const torch::Tensor images = torch::randn({2, 3, 32, 32});
      const torch::Tensor labels = random_labels(2, 32, 32);
      std::vector<double> totals;
      for (int step = 0; step < 3; ++step) {
        torch::manual_seed(6);  // the same dropout masks at every step
        sgd.zero_grad();
        torch::Tensor total = model->forward_train(images, labels).at("total");
        totals.push_back(total.item<double>());
        total.backward();
        sgd.step();
      }
      CHECK(std::isfinite(totals[0]));
      CHECK(totals[2] < totals[0]);
    }
  }
}

TEST_CASE("heads: option and input checks", "[heads]") {
  CHECK_THROWS_WITH(FCNHeadImpl(FCNHeadOptions(DecodeHeadOptions({8, 12}, 16, 5))),
                    Catch::Contains("cac_models::FCNHead: expected as many in_index as in_channels values"));
  CHECK_THROWS_WITH(UPerHeadImpl(UPerHeadOptions(single(3))),
                    Catch::Contains("cac_models::UPerHead: expected InputTransform::MultipleSelect"));
  CHECK_THROWS_WITH(FCNHeadImpl(FCNHeadOptions(single(3)).num_convs(0)),
                    Catch::Contains("expected in_channels == channels (16) when num_convs is 0"));
  FCNHeadImpl head(FCNHeadOptions(single(3)));
  StubBackboneImpl backbone({8, 12, 16, 24});
  const auto x = backbone.forward(torch::randn({1, 3, 32, 32}));
  CHECK_THROWS_WITH(head.features(x), Catch::Contains("cac_models::FCNHead: expected stage 3 of shape [B, 20, h, w]"));
  CHECK_THROWS_WITH(head.losses(torch::randn({1, 16, 2, 2}), torch::zeros({1, 8, 8}, torch::kInt)),
                    Catch::Contains("cac_models::FCNHead: expected int64 labels of shape [B, H, W]"));
  CHECK_THROWS_WITH(
      EncoderDecoder(
          std::make_shared<StubBackboneImpl>(kStages),
          std::make_shared<OCRHeadImpl>(OCRHeadOptions(
              DecodeHeadOptions(kStages, 16, 5).in_index({0, 1, 2, 3}).input_transform(InputTransform::ResizeConcat)))),
      Catch::Contains("cac_models::EncoderDecoder: expected an ordinary decode head first"));
  std::ostringstream printed;
  head.pretty_print(printed);
  CHECK(printed.str() ==
        "cac_models::FCNHead(in_channels=[20], in_index=[3], input_transform=Single, channels=16, num_classes=5, "
        "dropout_ratio=0.1, align_corners=false, loss_weight=1, cac=false, num_convs=2, kernel_size=3, "
        "concat_input=true, dilation=1)");
}

TEST_CASE("heads: float64 and CPU autocast (bfloat16) run without dtype errors", "[heads]") {
  for (const auto& family : kFamilies) {
    for (bool cac : {false, true}) {
      INFO(family << " cac=" << cac);
      torch::manual_seed(7);
      EncoderDecoder model = make(family, cac);
      model->train();
      model->to(torch::kDouble);
      auto losses = model->forward_train(torch::randn({2, 3, 32, 32}, torch::kDouble), random_labels(2, 32, 32));
      CHECK(losses.at("total").scalar_type() == torch::kDouble);
      losses.at("total").backward();
      model->to(torch::kFloat);
      // Forward under autocast, backward outside it (as PyTorch recommends).
      std::map<std::string, torch::Tensor> mixed;
      torch::Tensor prediction;
      {
        cac::AutocastGuard autocast(torch::kCPU, torch::kBFloat16);
        mixed = model->forward_train(torch::randn({2, 3, 32, 32}), random_labels(2, 32, 32));
        model->eval();
        torch::NoGradGuard no_grad;
        prediction = model->forward(torch::randn({2, 3, 32, 32}));
      }
      CHECK(std::isfinite(mixed.at("total").item<double>()));
      mixed.at("total").backward();
      CHECK(prediction.sizes() == torch::IntArrayRef({2, kClasses, 32, 32}));
      CHECK(torch::isfinite(prediction).all().item<bool>());
    }
  }
}
