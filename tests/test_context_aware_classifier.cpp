// cac::ContextAwareClassifier: the drop-in wrapper around a model's own classifier, and the test
// that a model with it trains.

#include <cac/cac.hpp>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "support/builders.hpp"
#include "support/test_support.hpp"

#include <sstream>

namespace {

const cac::ContextAwareHeadOptions kHead(6, 4);

// pp of the wrapper's head called by hand with the classifier's own weight and logits.
template <class Classifier>
torch::Tensor by_hand(cac::ContextAwareClassifier<Classifier>& wrapper, const torch::Tensor& f,
                      const torch::Tensor& logits) {
  return wrapper->head->forward(f, wrapper->classifier->weight, logits);
}

}  // namespace

TEST_CASE("ContextAwareClassifier wraps the user's classifier as is", "[ContextAwareClassifier]") {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(6, 4, 1));
  cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper(conv, kHead, 0.0);
  // The very module and the very tensors: the user's trained weights stay where they are.
  CHECK(wrapper->classifier.ptr() == conv.ptr());
  CHECK(wrapper->classifier->weight.data_ptr() == conv->weight.data_ptr());
  CHECK(wrapper->classifier->bias.data_ptr() == conv->bias.data_ptr());
  CHECK(wrapper->named_parameters()["classifier.weight"].is_same(conv->weight));
  const auto names = wrapper->named_parameters();
  std::vector<std::string> keys;
  for (const auto& item : names) keys.push_back(item.key());
  CHECK(keys == std::vector<std::string>{"classifier.weight", "classifier.bias", "head.context_projector.0.weight",
                                         "head.context_projector.2.weight", "head.context_projector.2.bias",
                                         "head.oracle_projector.0.weight", "head.oracle_projector.2.weight",
                                         "head.oracle_projector.2.bias"});
  std::ostringstream s;
  wrapper->pretty_print(s);
  CHECK(s.str() == "cac::ContextAwareClassifier(channels=6, num_classes=4, dropout=0)");
  const auto f = torch::randn({2, 6, 5, 7});
  CHECK(torch::equal(wrapper->classifier_logits(f), conv->forward(f)));
  CHECK(torch::equal(wrapper->forward(f), by_hand(wrapper, f, conv->forward(f))));
}

TEST_CASE("ContextAwareClassifier with Conv1d, Conv3d and Linear classifiers", "[ContextAwareClassifier]") {
  SECTION("Conv1d over sequences") {
    cac::ContextAwareClassifier<torch::nn::Conv1d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    const auto f = torch::randn({2, 6, 9});
    CHECK(torch::equal(wrapper->forward(f), by_hand(wrapper, f, wrapper->classifier->forward(f))));
    const auto labels = torch::randint(0, 4, {2, 20});
    const auto out = wrapper->forward_train(f, labels);
    const auto expected =
        wrapper->head->forward_train(f, wrapper->classifier->weight, wrapper->classifier->forward(f), labels);
    CHECK(torch::equal(out.logits, expected.logits));
    CHECK(torch::equal(out.context_logits, expected.context_logits));
    CHECK(torch::equal(out.oracle_logits, expected.oracle_logits));
    CHECK(out.oracle_logits.sizes() == torch::IntArrayRef({2, 4, 9}));
    CHECK(std::isfinite(cac::ContextAwareLoss()->forward(out, labels).total.item<double>()));
  }
  SECTION("Conv3d over volumes") {
    cac::ContextAwareClassifier<torch::nn::Conv3d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    const auto f = torch::randn({2, 6, 3, 4, 5});
    CHECK(torch::equal(wrapper->forward(f), by_hand(wrapper, f, wrapper->classifier->forward(f))));
    const auto labels = torch::randint(0, 4, {2, 6, 8, 10});
    const auto out = wrapper->forward_train(f, labels);
    const auto expected =
        wrapper->head->forward_train(f, wrapper->classifier->weight, wrapper->classifier->forward(f), labels);
    CHECK(torch::equal(out.context_logits, expected.context_logits));
    CHECK(torch::equal(out.oracle_logits, expected.oracle_logits));
    CHECK(out.oracle_logits.sizes() == torch::IntArrayRef({2, 4, 3, 4, 5}));
  }
  SECTION("Linear acts on the channel dim of channels-first features") {
    cac::ContextAwareClassifier<torch::nn::Linear> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    const auto tokens = torch::randn({2, 11, 6});  // [B, N, d] as a transformer gives them
    const auto f = tokens.transpose(1, 2);         // [B, d, N]
    const auto p = wrapper->classifier->forward(tokens).transpose(1, 2);
    CHECK(cac_test::all_close(wrapper->classifier_logits(f), p, 1e-6, 1e-6));
    CHECK(cac_test::all_close(wrapper->forward(f), by_hand(wrapper, f, p), 1e-6, 1e-6));
    // Channels-first features with 2 spatial dims work as well (the Linear maps dim 1).
    const auto image = torch::randn({2, 6, 3, 4});
    const auto image_p = wrapper->classifier->forward(image.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
    CHECK(cac_test::all_close(wrapper->forward(image), by_hand(wrapper, image, image_p), 1e-6, 1e-6));
  }
}

TEST_CASE("ContextAwareClassifier dropout feeds the classifier only", "[ContextAwareClassifier]") {
  cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead).dropout(0.5)};
  const auto f = torch::randn({2, 6, 4, 4});
  SECTION("training: p = C(channel_dropout(f)), prototypes and cosine from the un-dropped f") {
    wrapper->train();
    torch::manual_seed(5);
    const auto pp = wrapper->forward(f);
    torch::manual_seed(5);
    const auto dropped = at::feature_dropout(f, 0.5, true);
    CHECK_FALSE(torch::equal(dropped, f));
    CHECK(torch::equal(pp, by_hand(wrapper, f, wrapper->classifier->forward(dropped))));
    // Another seed drops other channels: pp changes.
    torch::manual_seed(6);
    CHECK_FALSE(torch::equal(wrapper->forward(f), pp));
    // forward_train: p is the dropped classifier output, pp and py use the un-dropped f.
    const auto labels = torch::randint(0, 4, {2, 8, 8});
    torch::manual_seed(5);
    const auto out = wrapper->forward_train(f, labels);
    const auto p = wrapper->classifier->forward(dropped);
    CHECK(torch::equal(out.logits, p));
    const auto expected = wrapper->head->forward_train(f, wrapper->classifier->weight, p, labels);
    CHECK(torch::equal(out.context_logits, expected.context_logits));
    CHECK(torch::equal(out.oracle_logits, expected.oracle_logits));
  }
  SECTION("evaluation: no dropout") {
    wrapper->eval();
    CHECK(torch::equal(wrapper->forward(f), by_hand(wrapper, f, wrapper->classifier->forward(f))));
    CHECK(torch::equal(wrapper->classifier_logits(f), wrapper->classifier->forward(f)));
  }
}

TEST_CASE("ContextAwareClassifier clone is deep", "[ContextAwareClassifier]") {
  cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead).dropout(0.1)};
  wrapper->eval();
  auto copy = std::dynamic_pointer_cast<cac::ContextAwareClassifierImpl<torch::nn::Conv2d>>(wrapper->clone());
  REQUIRE(copy);
  CHECK_FALSE(copy->is_training());
  CHECK(copy->options.dropout() == 0.1);
  const auto f = torch::randn({1, 6, 3, 3});
  CHECK(torch::equal(copy->forward(f), wrapper->forward(f)));
  CHECK(copy->classifier.get() != wrapper->classifier.get());
  CHECK(copy->head.get() != wrapper->head.get());
  std::ostringstream a, b;
  wrapper->pretty_print(a);
  copy->pretty_print(b);
  CHECK(a.str() == b.str());
  const auto original = wrapper->named_parameters(), cloned = copy->named_parameters();
  REQUIRE(cloned.size() == original.size());
  for (const auto& item : original) {
    CHECK(torch::equal(item.value(), cloned[item.key()]));
    CHECK(item.value().data_ptr() != cloned[item.key()].data_ptr());
  }
  // The copy's own submodules are registered under the same names.
  CHECK(copy->named_parameters()["classifier.weight"].is_same(copy->classifier->weight));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : copy->parameters()) p.mul_(2.0);
  }
  for (const auto& item : original) CHECK_FALSE(torch::equal(item.value(), cloned[item.key()]));
}

TEST_CASE("ContextAwareClassifier rejects a classifier that does not fit", "[ContextAwareClassifier]") {
  using Catch::Matchers::Contains;
  using Catch::Matchers::StartsWith;
  const std::string who = "cac::ContextAwareClassifier: expected ";
  SECTION("a 3x3 convolution") {
    REQUIRE_THROWS_WITH(
        cac::ContextAwareClassifier<torch::nn::Conv2d>(torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 4, 3)), kHead),
        StartsWith(who + "a classifier with weight of shape [4, 6, 1, ...]") && Contains("but got [4, 6, 3, 3]"));
  }
  SECTION("a classifier with another d") {
    REQUIRE_THROWS_WITH(
        cac::ContextAwareClassifier<torch::nn::Conv2d>(torch::nn::Conv2d(torch::nn::Conv2dOptions(5, 4, 1)), kHead),
        StartsWith(who + "a classifier with weight of shape [4, 6, 1, ...]") && Contains("but got [4, 5, 1, 1]"));
  }
  SECTION("a classifier with another n") {
    REQUIRE_THROWS_WITH(
        cac::ContextAwareClassifier<torch::nn::Linear>(torch::nn::Linear(6, 5), kHead),
        StartsWith(who + "a classifier with weight of shape [4, 6, 1, ...]") && Contains("but got [5, 6]"));
  }
  SECTION("dropout outside [0, 1)") {
    REQUIRE_THROWS_WITH(
        cac::ContextAwareClassifier<torch::nn::Conv2d>(cac::ContextAwareClassifierOptions(kHead).dropout(1)),
        StartsWith(who + "dropout in [0, 1) but got 1"));
    REQUIRE_THROWS_WITH(
        cac::ContextAwareClassifier<torch::nn::Conv2d>(cac::ContextAwareClassifierOptions(kHead).dropout(-0.1)),
        StartsWith(who + "dropout in [0, 1) but got -0.1"));
  }
  SECTION("bad head options") {
    REQUIRE_THROWS_WITH(cac::ContextAwareClassifier<torch::nn::Conv2d>(cac::ContextAwareClassifierOptions(6, 0)),
                        StartsWith(who + "num_classes > 0 but got 0"));
  }
  cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
  SECTION("features with another number of spatial dims than the convolution") {
    REQUIRE_THROWS_WITH(
        wrapper->forward(torch::randn({2, 6, 9})),
        StartsWith(who + "features with 2 spatial dims for this convolution classifier but got [2, 6, 9]"));
  }
  SECTION("features with another d") {
    REQUIRE_THROWS_WITH(wrapper->forward(torch::randn({2, 5, 3, 3})),
                        StartsWith(who + "features of shape [B, 6, *spatial] (d = 6) but got [2, 5, 3, 3]"));
  }
  SECTION("labels of another batch size (checked by the head)") {
    REQUIRE_THROWS_WITH(wrapper->forward_train(torch::randn({2, 6, 3, 3}), torch::zeros({3, 6, 6}, torch::kLong)),
                        StartsWith("cac::ContextAwareHead: expected labels of shape [2, 2 spatial dims]"));
  }
}

namespace {

// A generated segmentation problem: 16x16 images, 4 classes, each image containing exactly 2 of
// them (a random rectangle of one class on a background of another), colour-coded with noise.
std::pair<torch::Tensor, torch::Tensor> two_class_images(int64_t batch, torch::Generator& gen) {
  const int64_t size = 16;
  auto labels = torch::empty({batch, size, size}, torch::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    const auto classes = torch::randperm(4, gen);
    const auto corner = torch::randint(0, size / 2, {2}, gen);
    const auto extent = torch::randint(4, size / 2 + 1, {2}, gen);
    const int64_t y0 = corner[0].item<int64_t>(), x0 = corner[1].item<int64_t>();
    labels[b].fill_(classes[0].item<int64_t>());
    labels[b]
        .slice(0, y0, y0 + extent[0].item<int64_t>())
        .slice(1, x0, x0 + extent[1].item<int64_t>())
        .fill_(classes[1].item<int64_t>());
  }
  const auto palette = torch::tensor({{1.f, 0.f, 0.f}, {0.f, 1.f, 0.f}, {0.f, 0.f, 1.f}, {1.f, 1.f, 0.f}});
  const auto images = palette.index({labels}).permute({0, 3, 1, 2}) + torch::randn({batch, 3, size, size}, gen) * 0.3;
  return {images.contiguous(), labels};
}

}  // namespace

TEST_CASE("a tiny network with ContextAwareClassifier trains every term down", "[ContextAwareClassifier][train]") {
  // Conv-ReLU-Conv-ReLU-AvgPool(2): features at 8x8 while labels stay at 16x16, so the head
  // nearest-resizes them and the losses upsample the logits. Seeded (weights and data).
  torch::manual_seed(0);
  auto gen = at::detail::createCPUGenerator(7);
  torch::nn::Sequential body(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1)), torch::nn::ReLU(),
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 16, 3).padding(1)), torch::nn::ReLU(),
                             torch::nn::AvgPool2d(2));
  cac::ContextAwareClassifier<torch::nn::Conv2d> classifier(cac::ContextAwareClassifierOptions(16, 4).dropout(0.1));
  cac::ContextAwareLoss criterion;
  std::vector<torch::Tensor> parameters = body->parameters();
  for (const auto& p : classifier->parameters()) parameters.push_back(p);
  torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(3e-3));
  const int steps = 120, window = 10;
  std::vector<std::array<double, 4>> history;
  for (int step = 0; step < steps; ++step) {
    auto [images, labels] = two_class_images(8, gen);
    const auto losses = criterion->forward(classifier->forward_train(body->forward(images), labels), labels);
    optimizer.zero_grad();
    losses.total.backward();
    optimizer.step();
    history.push_back({losses.logits_ce.item<double>(), losses.context_ce.item<double>(),
                       losses.oracle_ce.item<double>(), losses.kl.item<double>()});
  }
  auto mean = [&](int term, int from) {
    double sum = 0;
    for (int i = from; i < from + window; ++i) sum += history[i][term];
    return sum / window;
  };
  const char* names[] = {"logits_ce", "context_ce", "oracle_ce", "kl"};
  for (int term = 0; term < 4; ++term) {
    // Measured ratios (last 10 / first 10 steps), 7 data seeds: 0.12-0.32, 0.08-0.16, 0.06-0.11, 0.30-0.38.
    INFO(names[term] << ": first 10 steps " << mean(term, 0) << ", last 10 steps " << mean(term, steps - window));
    CHECK(mean(term, steps - window) < 0.5 * mean(term, 0));
  }
  // Held-out batch, inference path: pp upsampled bilinearly to the label size, argmax per pixel.
  classifier->eval();
  torch::NoGradGuard no_grad;
  auto [images, labels] = two_class_images(32, gen);
  const auto pp = classifier->forward(body->forward(images));
  const auto upsampled = torch::nn::functional::interpolate(pp, torch::nn::functional::InterpolateFuncOptions()
                                                                    .size(std::vector<int64_t>{16, 16})
                                                                    .mode(torch::kBilinear)
                                                                    .align_corners(false));
  const double accuracy = (upsampled.argmax(1) == labels).to(torch::kDouble).mean().item<double>();
  INFO("held-out pixel accuracy " << accuracy);
  CHECK(accuracy > 0.9);  // measured 0.95-0.97 over 7 data seeds
}

TEST_CASE("ContextAwareClassifier checks dtypes and devices before running the classifier",
          "[ContextAwareClassifier][dtype]") {
  using Catch::Matchers::Contains;
  using Catch::Matchers::StartsWith;
  const std::string who = "cac::ContextAwareClassifier: expected ";
  const auto f = torch::randn({2, 6, 5, 7});
  SECTION("a float64 classifier with float32 features (was a torch error without the cac:: prefix)") {
    cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    wrapper->classifier->to(torch::kDouble);
    REQUIRE_THROWS_WITH(wrapper->forward(f),
                        StartsWith(who + "features of the classifier's dtype Double but got Float (float32, float16 "
                                         "and bfloat16 may be mixed only under autocast: cac::AutocastGuard)"));
    REQUIRE_THROWS_WITH(wrapper->forward_train(f, torch::zeros({2, 5, 7}, torch::kLong)),
                        StartsWith(who + "features of the classifier's dtype Double but got Float"));
  }
  SECTION("float32 and bfloat16 meet without autocast: refused; under autocast: accepted") {
    cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    REQUIRE_THROWS_WITH(wrapper->forward(f.to(torch::kBFloat16)),
                        StartsWith(who + "features of the classifier's dtype Float but got BFloat16"));
    cac::AutocastGuard autocast(torch::kCPU, torch::kBFloat16);
    const auto pp = wrapper->forward(f.to(torch::kBFloat16));
    CHECK(pp.scalar_type() == torch::kFloat);
    CHECK(pp.sizes() == torch::IntArrayRef({2, 4, 5, 7}));
    // float64 never mixes, autocast or not.
    wrapper->classifier->to(torch::kDouble);
    REQUIRE_THROWS_WITH(wrapper->forward(f),
                        StartsWith(who + "features of the classifier's dtype Double but got Float "
                                         "(under autocast only float32, float16 and bfloat16 may be mixed)"));
  }
  SECTION("features on another device than the classifier") {
    cac::ContextAwareClassifier<torch::nn::Linear> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    REQUIRE_THROWS_WITH(wrapper->forward(torch::empty({2, 6, 5, 7}, torch::TensorOptions().device(torch::kMeta))),
                        StartsWith(who + "features on the classifier's device cpu but got meta"));
  }
  SECTION("features with a spatial size 0") {
    cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    REQUIRE_THROWS_WITH(
        wrapper->forward(f.narrow(3, 0, 0)),
        StartsWith(who + "features with non-empty spatial dims but got [2, 6, 5, 0] (spatial dim 1 is 0)"));
  }
}

TEST_CASE("ContextAwareClassifier in float16 on the CPU computes C in float32", "[ContextAwareClassifier][dtype]") {
  // LibTorch 1.13 has no CPU float16 conv2d ("slow_conv2d_cpu") nor addmm; the wrapper runs the
  // 1x1 classifier as W.f + b in float32 and returns p in float16. Reference: the same float16
  // weights and features, everything in float64 (p by the naive matmul, pp by a double head).
  torch::manual_seed(131);
  const auto f16 = torch::randn({2, 6, 5, 7}).to(torch::kHalf);
  const auto labels = torch::randint(0, 4, {2, 10, 14});
  for (const bool linear : {false, true}) {
    DYNAMIC_SECTION((linear ? "Linear" : "Conv2d")) {
      torch::Tensor p, pp, weight, bias;
      cac::ContextAwareHead head{nullptr};
      auto run = [&](auto& wrapper) {
        wrapper->to(torch::kHalf);
        p = wrapper->classifier_logits(f16);
        pp = wrapper->forward(f16);
        weight = wrapper->classifier->weight;
        bias = wrapper->classifier->bias;
        head = wrapper->head;
        const auto out = wrapper->forward_train(f16, labels);
        cac::ContextAwareLoss()->forward(out, labels).total.backward();
      };
      if (linear) {
        cac::ContextAwareClassifier<torch::nn::Linear> wrapper{cac::ContextAwareClassifierOptions(kHead)};
        run(wrapper);
      } else {
        cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
        run(wrapper);
      }
      CHECK(p.scalar_type() == torch::kHalf);
      CHECK(pp.scalar_type() == torch::kHalf);
      const auto f64 = f16.to(torch::kDouble);
      const auto w64 = weight.detach().reshape({4, 6}).to(torch::kDouble);
      const auto p64 = cac_test::classifier_logits(f64, w64, bias.detach().to(torch::kDouble));
      // p: one float16 rounding of values of size ~2: within 2^-11 relative, 4e-3 absolute here.
      CHECK(cac_test::all_close(p.to(torch::kDouble), p64, 4e-3, 2e-3));
      auto head64 = std::dynamic_pointer_cast<cac::ContextAwareHeadImpl>(head->clone());
      head64->to(torch::kDouble);
      const auto pp64 = head64->forward(f64, w64, p.to(torch::kDouble));
      // pp is computed in float32 from the float16 inputs, then rounded once to float16 (|pp| <= tau = 15).
      CHECK(cac_test::all_close(pp.to(torch::kDouble), pp64, 1e-2, 2e-3));
      REQUIRE(weight.grad().defined());
      CHECK(weight.grad().scalar_type() == torch::kHalf);
      CHECK(torch::isfinite(weight.grad()).all().item<bool>());
      CHECK(weight.grad().abs().max().item<double>() > 0.0);
    }
  }
  SECTION("with dropout in training (LibTorch has no CPU float16 bernoulli): dropped in float32") {
    cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead).dropout(0.5)};
    wrapper->to(torch::kHalf);
    const auto p_eval = [&] {
      wrapper->eval();
      return wrapper->classifier_logits(f16);
    }();
    wrapper->train();
    torch::manual_seed(132);
    const auto p_train = wrapper->classifier_logits(f16);
    CHECK(p_train.scalar_type() == torch::kHalf);
    // Channel dropout with ratio 0.5: each channel is dropped or doubled, so p differs from the
    // eval-mode p (W.f + b without dropout) whichever channels are dropped.
    CHECK(!torch::equal(p_train, p_eval));
    const auto out = wrapper->forward_train(f16, labels);
    CHECK(torch::isfinite(cac::ContextAwareLoss()->forward(out, labels).total).item<bool>());
  }
  SECTION("a strided 1x1 convolution cannot be computed as W.f + b: refused clearly") {
    cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 4, 1).stride(2)), kHead);
    wrapper->to(torch::kHalf);
    REQUIRE_THROWS_WITH(wrapper->forward(f16),
                        Catch::StartsWith("cac::ContextAwareClassifier: float16 on the CPU runs the classifier in "
                                          "float32 as a 1x1 map, which needs stride 1 and padding 0, but the "
                                          "classifier has stride [2, 2]"));
  }
}
