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
  CHECK(wrapper->classifier->weight.data_ptr() == conv->weight.data_ptr());
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
    CHECK(out.oracle_logits.sizes() == torch::IntArrayRef({2, 4, 9}));
    CHECK(std::isfinite(cac::ContextAwareLoss()->forward(out, labels).total.item<double>()));
  }
  SECTION("Conv3d over volumes") {
    cac::ContextAwareClassifier<torch::nn::Conv3d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    const auto f = torch::randn({2, 6, 3, 4, 5});
    CHECK(torch::equal(wrapper->forward(f), by_hand(wrapper, f, wrapper->classifier->forward(f))));
    CHECK(wrapper->forward_train(f, torch::randint(0, 4, {2, 6, 8, 10})).oracle_logits.sizes() ==
          torch::IntArrayRef({2, 4, 3, 4, 5}));
  }
  SECTION("Linear acts on the channel dim of channels-first features") {
    cac::ContextAwareClassifier<torch::nn::Linear> wrapper{cac::ContextAwareClassifierOptions(kHead)};
    const auto tokens = torch::randn({2, 11, 6});  // [B, N, d] as a transformer gives them
    const auto f = tokens.transpose(1, 2);         // [B, d, N]
    const auto p = wrapper->classifier->forward(tokens).transpose(1, 2);
    CHECK(cac_test::all_close(wrapper->classifier_logits(f), p, 1e-6, 1e-6));
    CHECK(cac_test::all_close(wrapper->forward(f), by_hand(wrapper, f, p), 1e-6, 1e-6));
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
  }
  SECTION("evaluation: no dropout") {
    wrapper->eval();
    CHECK(torch::equal(wrapper->forward(f), by_hand(wrapper, f, wrapper->classifier->forward(f))));
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
  const auto original = wrapper->named_parameters(), cloned = copy->named_parameters();
  REQUIRE(cloned.size() == original.size());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : copy->parameters()) p.mul_(2.0);
  }
  for (const auto& item : original) CHECK_FALSE(torch::equal(item.value(), cloned[item.key()]));
}

TEST_CASE("ContextAwareClassifier rejects a classifier that does not fit", "[ContextAwareClassifier]") {
  using Catch::Matchers::StartsWith;
  CHECK_THROWS_WITH(cac::ContextAwareClassifier<torch::nn::Conv2d>(
                        torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 4, 3)), kHead),
                    StartsWith("cac::ContextAwareClassifier: expected a classifier with weight of shape [4, 6, 1, ...]"));
  CHECK_THROWS_WITH(cac::ContextAwareClassifier<torch::nn::Linear>(torch::nn::Linear(6, 5), kHead),
                    StartsWith("cac::ContextAwareClassifier: expected a classifier with weight of shape [4, 6"));
  CHECK_THROWS_WITH(cac::ContextAwareClassifier<torch::nn::Conv2d>(cac::ContextAwareClassifierOptions(kHead).dropout(1)),
                    StartsWith("cac::ContextAwareClassifier: expected dropout in [0, 1) but got 1"));
  cac::ContextAwareClassifier<torch::nn::Conv2d> wrapper{cac::ContextAwareClassifierOptions(kHead)};
  CHECK_THROWS_WITH(wrapper->forward(torch::randn({2, 6, 9})),
                    StartsWith("cac::ContextAwareClassifier: expected features with 2 spatial dims"));
  CHECK_THROWS_WITH(wrapper->forward(torch::randn({2, 5, 3, 3})),
                    StartsWith("cac::ContextAwareClassifier: expected features of shape [B, 6, *spatial]"));
}

namespace {

// Images of 4 classes (0 = background) with two class-coloured squares each; labels at full size.
std::pair<torch::Tensor, torch::Tensor> squares(int64_t batch, torch::Generator& gen) {
  const int64_t size = 16;
  auto labels = torch::zeros({batch, size, size}, torch::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    const auto classes = torch::randperm(3, gen).add(1);
    for (int64_t r = 0; r < 2; ++r) {
      const auto corner = torch::randint(0, size / 2, {2}, gen);
      const int64_t y0 = corner[0].item<int64_t>(), x0 = corner[1].item<int64_t>();
      labels[b].slice(0, y0, y0 + size / 2).slice(1, x0, x0 + size / 2).fill_(classes[r].item<int64_t>());
    }
  }
  const auto palette = torch::tensor({{0.f, 0.f, 0.f}, {1.f, -1.f, 0.f}, {-1.f, 1.f, 0.5f}, {0.f, -0.5f, 1.f}});
  auto images = palette.index({labels}).permute({0, 3, 1, 2}) + torch::randn({batch, 3, size, size}, gen) * 0.5;
  return {images, labels};
}

}  // namespace

TEST_CASE("a tiny network with ContextAwareClassifier trains every term down", "[ContextAwareClassifier][train]") {
  torch::manual_seed(0);
  auto gen = at::detail::createCPUGenerator(7);
  torch::nn::Sequential body(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1)), torch::nn::ReLU(),
                             torch::nn::AvgPool2d(2),  // labels are nearest-resized to the 8x8 feature grid
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 16, 3).padding(1)), torch::nn::ReLU());
  cac::ContextAwareClassifier<torch::nn::Conv2d> classifier(cac::ContextAwareClassifierOptions(16, 4).dropout(0.1));
  cac::ContextAwareLoss criterion;
  std::vector<torch::Tensor> parameters = body->parameters();
  for (const auto& p : classifier->parameters()) parameters.push_back(p);
  torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(3e-3));
  const int steps = 300, window = 20;
  std::vector<std::array<double, 4>> history;
  for (int step = 0; step < steps; ++step) {
    auto [images, labels] = squares(8, gen);
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
  const char* names[] = {"CE(p)", "CE(pp)", "CE(py)", "KL"};
  for (int term = 0; term < 4; ++term) {
    INFO(names[term] << ": first " << mean(term, 0) << ", last " << mean(term, steps - window));
    // The KL is a cross-entropy against a soft target, so it keeps the target's entropy as a floor.
    CHECK(mean(term, steps - window) < (term == 3 ? 0.75 : 0.5) * mean(term, 0));
  }
  classifier->eval();
  torch::NoGradGuard no_grad;
  auto [images, labels] = squares(32, gen);
  // Scored on the 8x8 feature grid, so the 2x resolution loss at square borders does not count.
  const auto prediction = classifier->forward(body->forward(images)).argmax(1);
  const auto grid_labels = cac::functional::resize_labels(labels, {8, 8});
  const double accuracy = (prediction == grid_labels).to(torch::kDouble).mean().item<double>();
  INFO("held-out pixel accuracy " << accuracy);
  CHECK(accuracy > 0.9);  // measured 0.95; mixed 2x2 cells at square borders are ambiguous
}
