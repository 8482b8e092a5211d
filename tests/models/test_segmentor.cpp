// What the segmentor answers about itself (has_cac, align_corners, forward_branches), the loss map
// (terms for logging, total from the heads' totals), the CAC head settings and the single copy of
// a head's options, on the registry's small `fcn_tiny` model.
#include "models/heads/fcn_head.hpp"
#include "models/registry.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

using namespace cac_models;

namespace {

constexpr int64_t kClasses = 4;

torch::Tensor labels_for(int64_t batch, int64_t h, int64_t w) {
  torch::Tensor labels = torch::randint(0, kClasses, {batch, h, w}, torch::kLong);
  labels.index_put_({torch::rand({batch, h, w}) < 0.1}, 255);
  return labels;
}

}  // namespace

TEST_CASE("segmentor: has_cac and align_corners", "[models][segmentor]") {
  CHECK_FALSE(make_model("fcn_tiny", {kClasses, false})->has_cac());
  CHECK(make_model("fcn_tiny", {kClasses, true})->has_cac());
  CHECK(make_model("ocrnet_hrnetv2_w18", {kClasses, true})->has_cac());  // the OCR stage, the last head
  CHECK_FALSE(make_model("fcn_tiny", {kClasses, true})->align_corners());
}

TEST_CASE("segmentor: forward_branches gives p, pp and py at the image size", "[models][segmentor]") {
  torch::manual_seed(11);
  EncoderDecoder model = make_model("fcn_tiny", {kClasses, true});
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::randn({2, 3, 30, 34});
  const torch::Tensor labels = labels_for(2, 30, 34);
  const auto branches = model->forward_branches(images, labels);
  REQUIRE(branches.size() == 3);
  for (const auto& [name, logits] : branches) {
    INFO(name);
    CHECK(logits.sizes() == torch::IntArrayRef({2, kClasses, 30, 34}));
  }
  // pp is what inference returns; p is conv_seg on the head's features; py differs from both.
  CHECK(torch::allclose(branches.at("context"), model->forward(images), 1e-6, 1e-6));
  const auto& head = model->decode_head;
  const torch::Tensor p = head->logits(head->features(model->extract_features(images)));
  CHECK(torch::allclose(branches.at("logits"), resize(p, {30, 34}, false), 1e-6, 1e-6));
  CHECK_FALSE(torch::allclose(branches.at("oracle"), branches.at("context")));

  EncoderDecoder baseline = make_model("fcn_tiny", {kClasses, false});
  CHECK_THROWS_WITH(baseline->forward_branches(images, labels),
                    Catch::StartsWith("cac_models::EncoderDecoder: expected a model whose last decode head has the "
                                      "context-aware classifier for forward_branches but it has none"));
}

TEST_CASE("segmentor: total is the sum of the heads' totals; terms are for logging", "[models][segmentor]") {
  torch::manual_seed(12);
  for (const char* name : {"fcn_tiny", "fcn_mobilenetv2"}) {
    INFO(name);
    EncoderDecoder model = make_model(name, {kClasses, true});
    model->train();
    const torch::Tensor images = torch::randn({2, 3, 32, 32});
    const auto losses = model->forward_train(images, labels_for(2, 32, 32));
    double sum = 0.0;
    for (const auto& [key, value] : losses) {
      if (key == "total") continue;
      CHECK_FALSE(value.requires_grad());
      sum += value.item<double>();
    }
    CHECK(losses.at("total").requires_grad());
    CHECK(losses.at("total").item<double>() == Approx(sum).epsilon(1e-6));
  }
}

TEST_CASE("segmentor: the CAC head settings reach cac::ContextAwareHead", "[models][segmentor]") {
  SECTION("defaults: the library's (tau 15, batch scope, bottleneck d/2)") {
    EncoderDecoder model = make_model("fcn_tiny", {kClasses, true});
    const auto& head = model->decode_head->cac->options;
    CHECK(head.channels() == 48);
    CHECK(head.num_classes() == kClasses);
    CHECK(head.hidden_channels() == 24);
    CHECK(head.tau() == 15.0);
    CHECK(head.oracle_scope() == cac::OracleScope::Batch);
    CHECK(head.ignore_index() == 255);
  }
  SECTION("set") {
    ModelOptions options{kClasses, true};
    options.cac_head.tau(10).oracle_scope(cac::OracleScope::Image).hidden_channels(8);
    options.cac_loss.kl_weight(0.5).align_corners(true).ignore_index(7);  // the last two come from the head
    EncoderDecoder model = make_model("fcn_tiny", options);
    const auto& head = model->decode_head->cac->options;
    CHECK(head.hidden_channels() == 8);
    CHECK(head.tau() == 10.0);
    CHECK(head.oracle_scope() == cac::OracleScope::Image);
    CHECK(model->decode_head->cac->context_projector->parameters()[0].sizes() == torch::IntArrayRef({8, 96}));
    const auto& loss = model->decode_head->criterion->options;
    CHECK(loss.kl_weight() == 0.5);
    CHECK_FALSE(loss.align_corners());
    CHECK(loss.ignore_index() == 255);
  }
  SECTION("a bad bottleneck is the library's error") {
    ModelOptions options{kClasses, true};
    options.cac_head.hidden_channels(0);
    CHECK_THROWS_WITH(make_model("fcn_tiny", options), Catch::Contains("cac::ContextAwareHead: expected"));
  }
}

TEST_CASE("segmentor: a head keeps one copy of its options", "[models][segmentor]") {
  ModelOptions options{kClasses, false};
  options.dropout_ratio = 0.3;
  EncoderDecoder model = make_model("fcn_tiny", options);
  auto* head = model->decode_head->as<FCNHeadImpl>();
  REQUIRE(head != nullptr);
  CHECK(head->options.decode().dropout_ratio() == 0.3);  // was 0.1 in a stale copy before
  CHECK(&head->decode_options() == &head->options.decode());
  CHECK(head->dropout->options.p() == 0.3);
  head->set_dropout_ratio(0);
  CHECK(head->options.decode().dropout_ratio() == 0.0);
  CHECK_FALSE(head->dropout);
  CHECK(head->options.num_convs() == 1);
}
