// cac::ContextAwareHead: against the PyTorch port of the released code (tests/fixtures), the naive
// loops (support/naive.hpp), finite differences, its options, errors and lean inference.

#include <cac/cac.hpp>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "support/builders.hpp"
#include "support/test_support.hpp"

#include <cmath>
#include <limits>
#include <sstream>

using cac_test::make_head;
using cac_test::make_problem;

namespace {

// A head loaded with a fixture's projector weights.
cac::ContextAwareHead head_from_fixture(const std::map<std::string, torch::Tensor>& fx,
                                        cac::OracleScope scope = cac::OracleScope::Batch) {
  const auto d = fx.at("features").size(1), n = fx.at("weight").size(0);
  cac::ContextAwareHead head(cac::ContextAwareHeadOptions(d, n).oracle_scope(scope));
  head->to(torch::kDouble);
  cac_test::set_projector(head->context_projector, fx.at("proj_w1"), fx.at("proj_w2"), fx.at("proj_b2"));
  cac_test::set_projector(head->oracle_projector, fx.at("apd_w1"), fx.at("apd_w2"), fx.at("apd_b2"));
  return head;
}

}  // namespace

TEST_CASE("ContextAwareHead reproduces the released code (PyTorch fixtures)", "[ContextAwareHead]") {
  // Fixtures: tests/fixtures/make_fixtures.py, a CPU port of fcn_head_cac.py in float64. The
  // oracle branch there uses F.normalize (clamp 1e-12) where we add 1e-12, hence 1e-9 tolerances.
  for (const std::string name : {"cac_2d", "cac_2d_oddsize", "cac_1d", "cac_3d"}) {
    DYNAMIC_SECTION(name) {
      const auto fx = cac_test::load_fixture(name);
      const auto& f = fx.at("features");
      auto head = head_from_fixture(fx);
      auto out = head->forward_train(f, fx.at("weight"), fx.at("logits"), fx.at("labels"));
      CHECK(cac_test::all_close(out.context_logits, fx.at("pp"), 1e-9, 1e-10));
      CHECK(cac_test::all_close(out.oracle_logits, fx.at("py"), 1e-9, 1e-10));
      CHECK(torch::equal(out.logits, fx.at("logits")));
      CHECK(cac_test::all_close(head->forward(f, fx.at("weight"), fx.at("logits")), fx.at("pp"), 1e-9, 1e-10));
      auto image_head = head_from_fixture(fx, cac::OracleScope::Image);
      CHECK(cac_test::all_close(
          image_head->forward_train(f, fx.at("weight"), fx.at("logits"), fx.at("labels")).oracle_logits,
          fx.at("py_image"), 1e-9, 1e-10));
    }
  }
  SECTION("labels on an exact 2x grid") {
    const auto fx = cac_test::load_fixture("cac_2d_oddsize");
    auto head = head_from_fixture(fx);
    auto out = head->forward_train(fx.at("features"), fx.at("weight"), fx.at("logits"), fx.at("labels_x2"));
    CHECK(cac_test::all_close(out.oracle_logits, fx.at("py_x2"), 1e-9, 1e-10));
  }
}

TEST_CASE("ContextAwareHead gradients equal the released code's (PyTorch fixtures)", "[ContextAwareHead]") {
  // Golden values: tests/fixtures/make_fixtures.py, autograd of the float64 port of the released
  // code; `total` = CE(p) + CE(pp) + CE(py) + KL with p = convNd(f, C, b) built here with autograd,
  // and d total / d every input and projector parameter (measured agreement ~1e-12).
  for (const std::string name : {"cac_2d", "cac_2d_oddsize", "cac_1d", "cac_3d"}) {
    DYNAMIC_SECTION(name) {
      const auto fx = cac_test::load_fixture(name);
      auto head = head_from_fixture(fx);
      auto f = fx.at("features").clone().requires_grad_();
      auto weight = fx.at("weight").clone().requires_grad_();
      auto bias = fx.at("bias").clone().requires_grad_();
      auto p = cac_test::classifier_logits(f, weight, bias);
      cac::ContextAwareLoss criterion;
      auto losses = criterion->forward(head->forward_train(f, weight, p, fx.at("labels")), fx.at("labels"));
      CHECK(losses.total.item<double>() == Approx(fx.at("total").item<double>()).epsilon(1e-10));
      losses.total.backward();
      const double tol = 1e-10;
      CHECK(cac_test::all_close(f.grad(), fx.at("grad_features"), tol, tol));
      CHECK(cac_test::all_close(weight.grad(), fx.at("grad_weight"), tol, tol));
      CHECK(cac_test::all_close(bias.grad(), fx.at("grad_bias"), tol, tol));
      const auto params = head->named_parameters();
      CHECK(cac_test::all_close(params["context_projector.0.weight"].grad(), fx.at("grad_proj_w1"), tol, tol));
      CHECK(cac_test::all_close(params["context_projector.2.weight"].grad(), fx.at("grad_proj_w2"), tol, tol));
      CHECK(cac_test::all_close(params["context_projector.2.bias"].grad(), fx.at("grad_proj_b2"), tol, tol));
      CHECK(cac_test::all_close(params["oracle_projector.0.weight"].grad(), fx.at("grad_apd_w1"), tol, tol));
      CHECK(cac_test::all_close(params["oracle_projector.2.weight"].grad(), fx.at("grad_apd_w2"), tol, tol));
      CHECK(cac_test::all_close(params["oracle_projector.2.bias"].grad(), fx.at("grad_apd_b2"), tol, tol));
      // Image scope: the fixture's total_image (same loss with py pooled per image).
      auto image_head = head_from_fixture(fx, cac::OracleScope::Image);
      const auto image_total =
          criterion->forward(image_head->forward_train(f, weight, p, fx.at("labels")), fx.at("labels")).total;
      CHECK(image_total.item<double>() == Approx(fx.at("total_image").item<double>()).epsilon(1e-10));
    }
  }
}

TEST_CASE("ContextAwareHead agrees with the naive loops", "[ContextAwareHead]") {
  for (const auto& spatial : std::vector<std::vector<int64_t>>{{7}, {5, 6}, {2, 3, 4}}) {
    auto label_spatial = spatial;
    for (auto& s : label_spatial) s = s * 2 + 1;
    const auto pb = make_problem(3, 6, 4, spatial, label_spatial, 11);
    for (const auto scope : {cac::OracleScope::Batch, cac::OracleScope::Image}) {
      auto head = make_head(6, 4, 5, scope);
      const auto out = head->forward_train(pb.features, pb.weight, pb.logits, pb.labels);
      const auto theta_p = cac::ContextAwareHeadImpl::projector_weights(head->context_projector);
      const auto theta_y = cac::ContextAwareHeadImpl::projector_weights(head->oracle_projector);
      CHECK(cac_test::all_close(out.context_logits,
                                naive::context_logits(pb.features, pb.weight, pb.logits, theta_p, 15.0), 1e-10, 1e-12));
      CHECK(cac_test::all_close(
          out.oracle_logits,
          naive::oracle_logits(pb.features, pb.weight, pb.labels, theta_y, 15.0, scope == cac::OracleScope::Batch, 255),
          1e-10, 1e-12));
    }
  }
}

TEST_CASE("OracleScope::Image equals Batch run on each image alone", "[ContextAwareHead]") {
  const auto pb = make_problem(3, 8, 5, {6, 5}, {12, 10}, 21);
  auto image_head = make_head(8, 5, 3, cac::OracleScope::Image);
  auto batch_head = make_head(8, 5, 3, cac::OracleScope::Batch);
  const auto together = image_head->forward_train(pb.features, pb.weight, pb.logits, pb.labels).oracle_logits;
  for (int64_t b = 0; b < 3; ++b) {
    const auto alone = batch_head
                           ->forward_train(pb.features.narrow(0, b, 1), pb.weight, pb.logits.narrow(0, b, 1),
                                           pb.labels.narrow(0, b, 1))
                           .oracle_logits;
    CHECK(cac_test::all_close(together.narrow(0, b, 1), alone, 1e-12, 1e-12));
  }
  // ...and Batch differs from Image when images share classes (pooling really is batch-wide).
  CHECK_FALSE(cac_test::all_close(batch_head->forward_train(pb.features, pb.weight, pb.logits, pb.labels).oracle_logits,
                                  together, 1e-6, 1e-6));
}

TEST_CASE("ContextAwareHead gradients match finite differences", "[ContextAwareHead]") {
  // Every input (features, classifier weight, logits) and every projector parameter, in double.
  const auto pb = make_problem(2, 4, 3, {3, 3}, {5, 4}, 31);
  for (const auto scope : {cac::OracleScope::Batch, cac::OracleScope::Image}) {
    auto head = make_head(4, 3, 7, scope);
    std::vector<torch::Tensor> inputs = {pb.features.clone().requires_grad_(), pb.weight.clone().requires_grad_(),
                                         pb.logits.detach().clone().requires_grad_()};
    for (auto& parameter : head->parameters()) inputs.push_back(parameter);
    const auto labels = pb.labels;
    SECTION(std::string("forward (pp), scope ") + (scope == cac::OracleScope::Batch ? "Batch" : "Image")) {
      const auto r = cac_test::gradcheck([&](const auto& x) { return head->forward(x[0], x[1], x[2]); }, inputs);
      CHECK(r.ok);
      CHECK(r.max_error < 1e-6);
    }
    SECTION(std::string("forward_train (pp), scope ") + (scope == cac::OracleScope::Batch ? "Batch" : "Image")) {
      const auto r = cac_test::gradcheck(
          [&](const auto& x) { return head->forward_train(x[0], x[1], x[2], labels).context_logits; }, inputs);
      CHECK(r.ok);
      CHECK(r.max_error < 1e-6);
    }
    SECTION(std::string("forward_train (py), scope ") + (scope == cac::OracleScope::Batch ? "Batch" : "Image")) {
      const auto r = cac_test::gradcheck(
          [&](const auto& x) { return head->forward_train(x[0], x[1], x[2], labels).oracle_logits; }, inputs);
      CHECK(r.ok);
      CHECK(r.max_error < 1e-6);
    }
    SECTION(std::string("CE terms of the loss, scope ") + (scope == cac::OracleScope::Batch ? "Batch" : "Image")) {
      // The KL stops the gradient at its teacher (py), so finite differences of a total that includes
      // it differ from autograd by design; the KL is checked with a fixed teacher in its own suite.
      cac::ContextAwareLoss criterion(cac::ContextAwareLossOptions().kl_weight(0));
      const auto r = cac_test::gradcheck(
          [&](const auto& x) {
            return criterion->forward(head->forward_train(x[0], x[1], x[2], labels), labels).total;
          },
          inputs);
      CHECK(r.ok);
    }
  }
}

TEST_CASE("ContextAwareHead module contract", "[ContextAwareHead]") {
  SECTION("parameter names and shapes follow the released proj / apd_proj") {
    cac::ContextAwareHead head(cac::ContextAwareHeadOptions(512, 150));
    const auto params = head->named_parameters();
    REQUIRE(params.size() == 6);
    CHECK(params["context_projector.0.weight"].sizes() == torch::IntArrayRef({256, 1024}));
    CHECK(params["context_projector.2.weight"].sizes() == torch::IntArrayRef({512, 256}));
    CHECK(params["context_projector.2.bias"].sizes() == torch::IntArrayRef({512}));
    CHECK(params["oracle_projector.0.weight"].sizes() == torch::IntArrayRef({256, 1024}));
    CHECK(params["oracle_projector.2.weight"].sizes() == torch::IntArrayRef({512, 256}));
    CHECK(params["oracle_projector.2.bias"].sizes() == torch::IntArrayRef({512}));
    int64_t count = 0;
    for (const auto& p : head->parameters()) count += p.numel();
    CHECK(count == 787456);  // paper: +0.79M = 2·(2d·d/2 + d/2·d + d) for d = 512
  }
  SECTION("pretty_print") {
    cac::ContextAwareHead head(cac::ContextAwareHeadOptions(64, 21).tau(10).oracle_scope(cac::OracleScope::Image));
    std::ostringstream s;
    head->pretty_print(s);
    CHECK(s.str() ==
          "cac::ContextAwareHead(channels=64, num_classes=21, hidden_channels=32, tau=10, oracle_scope=Image, "
          "ignore_index=255)");
  }
  SECTION("clone gives independent parameters with equal values") {
    auto head = make_head(6, 4, 1);
    auto copy = std::dynamic_pointer_cast<cac::ContextAwareHeadImpl>(head->clone());
    REQUIRE(copy);
    const auto original = head->named_parameters(), cloned = copy->named_parameters();
    for (const auto& item : original) {
      CHECK(torch::equal(item.value(), cloned[item.key()]));
      CHECK(item.value().data_ptr() != cloned[item.key()].data_ptr());
    }
    {
      torch::NoGradGuard no_grad;
      for (auto& p : copy->parameters()) p.add_(1.0);
    }
    for (const auto& item : original) CHECK_FALSE(torch::equal(item.value(), cloned[item.key()]));
    CHECK(copy->options.channels() == 6);
  }
  SECTION("a 1x1 convolution weight [n, d, 1, 1] equals its [n, d] form") {
    const auto pb = make_problem(2, 6, 4, {4, 5}, {4, 5}, 41);
    auto head = make_head(6, 4, 2);
    CHECK(torch::equal(head->forward(pb.features, pb.weight.view({4, 6, 1, 1}), pb.logits),
                       head->forward(pb.features, pb.weight, pb.logits)));
    // ...in training too, gradient included (it flows back to the 4-D tensor).
    auto flat = pb.weight.clone().requires_grad_();
    auto conv = pb.weight.view({4, 6, 1, 1}).clone().requires_grad_();
    const auto a = head->forward_train(pb.features, flat, pb.logits, pb.labels);
    const auto b = head->forward_train(pb.features, conv, pb.logits, pb.labels);
    CHECK(torch::equal(a.context_logits, b.context_logits));
    CHECK(torch::equal(a.oracle_logits, b.oracle_logits));
    (a.context_logits.sum() + a.oracle_logits.square().sum()).backward();
    (b.context_logits.sum() + b.oracle_logits.square().sum()).backward();
    CHECK(conv.grad().sizes() == torch::IntArrayRef({4, 6, 1, 1}));
    CHECK(torch::equal(conv.grad().view({4, 6}), flat.grad()));
  }
  SECTION("two calls give bitwise-identical results") {
    const auto pb = make_problem(2, 6, 4, {4, 5}, {9, 7}, 43);
    auto head = make_head(6, 4, 2);
    const auto a = head->forward_train(pb.features, pb.weight, pb.logits, pb.labels);
    const auto b = head->forward_train(pb.features, pb.weight, pb.logits, pb.labels);
    CHECK(torch::equal(a.context_logits, b.context_logits));
    CHECK(torch::equal(a.oracle_logits, b.oracle_logits));
  }
}

TEST_CASE("ContextAwareHead rejects bad input with a clear error", "[ContextAwareHead]") {
  // Each message starts with the module name and states the expected and the actual value.
  const auto pb = make_problem(2, 6, 4, {4, 5}, {8, 10}, 51);
  auto head = make_head(6, 4, 2);
  const auto& f = pb.features;
  const auto& C = pb.weight;
  const auto& p = pb.logits;
  const auto& y = pb.labels;
  using Catch::Matchers::Contains;
  using Catch::Matchers::StartsWith;
  const std::string who = "cac::ContextAwareHead: expected ";
  SECTION("features without a spatial dim") {
    REQUIRE_THROWS_WITH(head->forward(f.flatten(1), C, p),
                        StartsWith(who + "features of shape [B, d, *spatial] with at least one spatial dim") &&
                            Contains("but got [2, 120]"));
  }
  SECTION("undefined features") {
    REQUIRE_THROWS_WITH(head->forward(torch::Tensor(), C, p), StartsWith(who + "a defined features tensor"));
  }
  SECTION("classifier weight of rank 1") {
    REQUIRE_THROWS_WITH(head->forward(f, C.flatten(), p),
                        StartsWith(who + "classifier_weight of shape [n, d] or [n, d, 1, ...] but got [24]"));
  }
  SECTION("classifier weight of a 3x3 convolution") {
    REQUIRE_THROWS_WITH(head->forward(f, torch::randn({4, 6, 3, 3}, torch::kDouble), p),
                        StartsWith(who + "classifier_weight of shape [n, d] or [n, d, 1, ...] but got [4, 6, 3, 3]"));
  }
  SECTION("logits of the wrong rank") {
    REQUIRE_THROWS_WITH(head->forward(f, C, p.flatten(2)),
                        StartsWith(who + "logits of shape [2, 4, 4, 5]") && Contains("but got [2, 4, 20]"));
  }
  SECTION("labels of the wrong rank") {
    REQUIRE_THROWS_WITH(head->forward_train(f, C, p, y.flatten(1)),
                        StartsWith(who + "labels of shape [2, 2 spatial dims] but got [2, 80]"));
  }
  SECTION("features whose d disagrees with the options") {
    auto wider = make_head(8, 4, 2);
    REQUIRE_THROWS_WITH(wider->forward(f, C, p),
                        StartsWith(who + "features of shape [B, 8, *spatial] (d = 8) but got [2, 6, 4, 5]"));
  }
  SECTION("classifier weight whose n disagrees with the options") {
    auto more = make_head(6, 5, 2);
    REQUIRE_THROWS_WITH(more->forward(f, C, p),
                        StartsWith(who + "classifier_weight with n = 5 rows (num_classes) but got [4, 6]"));
  }
  SECTION("classifier weight whose d disagrees with the features") {
    REQUIRE_THROWS_WITH(head->forward(f, torch::randn({4, 7}, torch::kDouble), p),
                        StartsWith(who + "classifier_weight with d = 6 columns") && Contains("but got [4, 7]"));
  }
  SECTION("logits whose n disagrees with the options") {
    REQUIRE_THROWS_WITH(head->forward(f, C, p.narrow(1, 0, 3)),
                        StartsWith(who + "logits of shape [2, 4, 4, 5]") && Contains("but got [2, 3, 4, 5]"));
  }
  SECTION("logits of another spatial size than the features") {
    REQUIRE_THROWS_WITH(head->forward(f, C, p.narrow(3, 0, 4)),
                        StartsWith(who + "logits of shape [2, 4, 4, 5]") && Contains("but got [2, 4, 4, 4]"));
  }
  SECTION("logits of another batch size than the features") {
    REQUIRE_THROWS_WITH(head->forward(f, C, p.narrow(0, 0, 1)),
                        StartsWith(who + "logits of shape [2, 4, 4, 5]") && Contains("but got [1, 4, 4, 5]"));
  }
  SECTION("labels with the wrong batch size") {
    REQUIRE_THROWS_WITH(head->forward_train(f, C, p, y.narrow(0, 0, 1)),
                        StartsWith(who + "labels of shape [2, 2 spatial dims] but got [1, 8, 10]"));
  }
  SECTION("floating labels") {
    REQUIRE_THROWS_WITH(head->forward_train(f, C, p, y.to(torch::kFloat)),
                        StartsWith(who + "integer labels but got dtype Float"));
  }
  SECTION("a label value of n") {
    REQUIRE_THROWS_WITH(head->forward_train(f, C, p, y.clone().fill_(4)),
                        StartsWith(who + "label values in [0, 4) or ignore_index 255 but got 4"));
  }
  SECTION("a negative label value") {
    auto bad = y.clone();
    bad[1][3][2] = -1;
    REQUIRE_THROWS_WITH(head->forward_train(f, C, p, bad),
                        StartsWith(who + "label values in [0, 4) or ignore_index 255 but got -1"));
  }
  SECTION("255 is fine, another ignore_index makes it out of range") {
    CHECK_NOTHROW(head->forward_train(f, C, p, y.clone().fill_(255)));
    cac::ContextAwareHead other(cac::ContextAwareHeadOptions(6, 4).ignore_index(-1));
    other->to(torch::kDouble);
    CHECK_NOTHROW(other->forward_train(f, C, p, y.clone().fill_(-1)));
    REQUIRE_THROWS_WITH(other->forward_train(f, C, p, y.clone().fill_(255)),
                        StartsWith(who + "label values in [0, 4) or ignore_index -1 but got 255"));
  }
  SECTION("classifier weight of another dtype") {
    REQUIRE_THROWS_WITH(head->forward(f, C.to(torch::kFloat), p),
                        StartsWith(who + "classifier_weight of the features' dtype Double but got Float"));
  }
  SECTION("logits of another dtype") {
    REQUIRE_THROWS_WITH(head->forward(f, C, p.to(torch::kFloat)),
                        StartsWith(who + "logits of the features' dtype Double but got Float"));
  }
  SECTION("integer features") {
    REQUIRE_THROWS_WITH(head->forward(f.to(torch::kLong), C, p),
                        StartsWith(who + "floating-point features but got dtype Long"));
  }
  SECTION("tensors on different devices") {
    // A CPU-only machine has no second real device, so CUDA-vs-CPU cannot run here. The checks
    // read only the device, so a meta tensor (shape and dtype, no storage) exercises the same code.
    const auto meta = torch::TensorOptions().dtype(torch::kDouble).device(torch::kMeta);
    REQUIRE_THROWS_WITH(head->forward(f, torch::empty({4, 6}, meta), p),
                        StartsWith(who + "classifier_weight on the features' device cpu but got meta"));
    REQUIRE_THROWS_WITH(head->forward(f, C, torch::empty({2, 4, 4, 5}, meta)),
                        StartsWith(who + "logits on the features' device cpu but got meta"));
    REQUIRE_THROWS_WITH(head->forward_train(f, C, p, torch::empty({2, 8, 10}, meta.dtype(torch::kLong))),
                        StartsWith(who + "labels on the features' device cpu but got meta"));
  }
  SECTION("options: channels <= 0") {
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(0, 4)),
                        StartsWith(who + "channels > 0 but got 0"));
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(-2, 4)),
                        StartsWith(who + "channels > 0 but got -2"));
  }
  SECTION("options: num_classes <= 0") {
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(8, 0)),
                        StartsWith(who + "num_classes > 0 but got 0"));
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(8, -1)),
                        StartsWith(who + "num_classes > 0 but got -1"));
  }
  SECTION("options: hidden_channels <= 0") {
    // channels = 1 makes the default channels / 2 zero.
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(1, 4)),
                        StartsWith(who + "hidden_channels > 0 but got 0"));
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(8, 4).hidden_channels(-3)),
                        StartsWith(who + "hidden_channels > 0 but got -3"));
  }
  SECTION("options: tau <= 0") {
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(8, 4).tau(0)),
                        StartsWith(who + "tau > 0 but got 0"));
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(8, 4).tau(-1.5)),
                        StartsWith(who + "tau > 0 but got -1.5"));
  }
  SECTION("every error is a c10::Error") {
    CHECK_THROWS_AS(head->forward(f, C, p.narrow(3, 0, 4)), c10::Error);
    CHECK_THROWS_AS(head->forward_train(f, C, p, y.to(torch::kFloat)), c10::Error);
    CHECK_THROWS_AS(cac::ContextAwareHead(cac::ContextAwareHeadOptions(8, 4).tau(0)), c10::Error);
  }
}

TEST_CASE("ContextAwareHead edge cases stay finite", "[ContextAwareHead]") {
  auto head = make_head(6, 4, 2);
  auto finite = [](const torch::Tensor& t) { return torch::isfinite(t).all().item<bool>(); };
  auto run = [&](const cac_test::Problem& pb) {
    auto f = pb.features.clone().requires_grad_();
    auto out = head->forward_train(f, pb.weight, pb.logits.detach(), pb.labels);
    cac::ContextAwareLoss criterion;
    auto losses = criterion->forward(out, pb.labels);
    losses.total.backward();
    CHECK(finite(out.context_logits));
    CHECK(finite(out.oracle_logits));
    CHECK(finite(losses.total));
    CHECK(finite(f.grad()));
    return losses;
  };
  SECTION("all labels ignored: the oracle keeps C, the losses are 0") {
    auto pb = make_problem(2, 6, 4, {4, 4}, {4, 4}, 61);
    pb.labels.fill_(255);
    const auto losses = run(pb);
    CHECK(losses.kl.item<double>() == 0.0);
    CHECK(losses.context_ce.item<double>() == 0.0);
    CHECK(losses.total.item<double>() == 0.0);
    // Every class absent: the oracle classifier is θy(C ⊕ C) (naive loops).
    const auto theta_y = cac::ContextAwareHeadImpl::projector_weights(head->oracle_projector);
    CHECK(cac_test::all_close(head->forward_train(pb.features, pb.weight, pb.logits, pb.labels).oracle_logits,
                              naive::oracle_logits(pb.features, pb.weight, pb.labels, theta_y, 15.0, true, 255), 1e-10,
                              1e-12));
  }
  SECTION("a batch of one") { run(make_problem(1, 6, 4, {4, 4}, {7, 7}, 62)); }
  SECTION("a class present in one image only") {
    auto pb = make_problem(2, 6, 4, {4, 4}, {4, 4}, 63);
    pb.labels[0].fill_(0);
    pb.labels[1].fill_(1);
    pb.labels[1][0][0] = 3;
    run(pb);
    // Class 0 only in image 0, classes 1 and 3 only in image 1, class 2 nowhere: both scopes
    // still match the naive loops.
    for (const auto scope : {cac::OracleScope::Batch, cac::OracleScope::Image}) {
      auto scoped = make_head(6, 4, 2, scope);
      const auto theta_y = cac::ContextAwareHeadImpl::projector_weights(scoped->oracle_projector);
      CHECK(cac_test::all_close(
          scoped->forward_train(pb.features, pb.weight, pb.logits, pb.labels).oracle_logits,
          naive::oracle_logits(pb.features, pb.weight, pb.labels, theta_y, 15.0, scope == cac::OracleScope::Batch, 255),
          1e-10, 1e-12));
    }
  }
  SECTION("zero feature vectors") {
    auto pb = make_problem(2, 6, 4, {4, 4}, {4, 4}, 64);
    pb.features.select(2, 1).zero_();
    pb.logits = cac_test::classifier_logits(pb.features, pb.weight, pb.bias);
    run(pb);
    const auto pp = head->forward(pb.features, pb.weight, pb.logits);
    CHECK(pp.select(2, 1).abs().max().item<double>() == 0.0);  // cos with a zero vector: 0
  }
  SECTION("huge logits") {
    auto pb = make_problem(2, 6, 4, {4, 4}, {4, 4}, 65);
    pb.logits = pb.logits.sign() * 1e4;
    run(pb);
  }
  SECTION("B = 0") {
    const auto pb = make_problem(0, 6, 4, {4, 4}, {8, 8}, 66);
    auto f = pb.features.clone().requires_grad_();
    auto C = pb.weight.clone().requires_grad_();
    const auto out = head->forward_train(f, C, cac_test::classifier_logits(f, C, pb.bias), pb.labels);
    CHECK(out.context_logits.sizes() == torch::IntArrayRef({0, 4, 4, 4}));
    CHECK(out.oracle_logits.sizes() == torch::IntArrayRef({0, 4, 4, 4}));
    CHECK(head->forward(pb.features, pb.weight, pb.logits).sizes() == torch::IntArrayRef({0, 4, 4, 4}));
    cac::ContextAwareLoss criterion;
    const auto losses = criterion->forward(out, pb.labels);
    CHECK(losses.total.item<double>() == 0.0);
    losses.total.backward();
    CHECK(f.grad().sizes() == f.sizes());
    CHECK(finite(C.grad()));
  }
}

TEST_CASE("ContextAwareHead in float32, half and bfloat16", "[ContextAwareHead]") {
  const auto pb = make_problem(2, 8, 5, {4, 6}, {8, 12}, 71);
  auto head = make_head(8, 5, 3);
  const auto reference = head->forward_train(pb.features, pb.weight, pb.logits, pb.labels);
  head->to(torch::kFloat);
  for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    const auto out = head->forward_train(pb.features.to(dtype), pb.weight.to(dtype), pb.logits.to(dtype), pb.labels);
    CHECK(out.context_logits.scalar_type() == dtype);
    CHECK(out.oracle_logits.scalar_type() == dtype);
    const double tolerance = dtype == torch::kFloat ? 1e-4 : 0.15;  // τ = 15 scales half's ~1e-3 rounding
    CHECK(cac_test::max_abs_diff(out.context_logits, reference.context_logits) < tolerance);
    CHECK(cac_test::max_abs_diff(out.oracle_logits, reference.oracle_logits) < tolerance);
  }
}

TEST_CASE("ContextAwareHead inference is lean", "[ContextAwareHead]") {
  // [B, d, S] = [2, 256, 1024] float32 = 2 MiB; n = 4 so [B, n, S] temporaries are 32 KiB.
  const int64_t B = 2, d = 256, n = 4, h = 32, w = 32;
  cac::ContextAwareHead head(cac::ContextAwareHeadOptions(d, n));
  const auto f = torch::randn({B, d, h, w});
  const auto C = torch::randn({n, d}) * 0.05;
  const auto p = torch::randn({B, n, h, w});
  // Reference: grad mode with features requiring grad, i.e. the autograd path (custom nodes).
  const auto reference = head->forward(f.clone().requires_grad_(), C, p).detach();
  const size_t feature_bytes = B * d * h * w * sizeof(float);
  cac_test::AllocationTracker tracker;
  torch::Tensor lean;
  {
    torch::NoGradGuard no_grad;
    cac_test::AllocationTracker::Scope scope(tracker);
    lean = head->forward(f, C, p);
  }
  INFO("largest allocation " << tracker.largest << " B, total " << tracker.total << " B, features " << feature_bytes
                             << " B");
  CHECK(tracker.largest > 0);
  CHECK(tracker.largest < feature_bytes / 4);
  CHECK(tracker.total < feature_bytes);
  CHECK(cac_test::all_close(lean, reference, 1e-5, 1e-6));
  // ...and both agree with the naive loops in double.
  const auto theta_p = cac::ContextAwareHeadImpl::projector_weights(head->context_projector);
  CHECK(cac_test::all_close(lean, naive::context_logits(f, C, p, theta_p, 15.0), 1e-5, 1e-5));
}

TEST_CASE("ContextAwareHead degenerate shapes and non-finite options", "[ContextAwareHead]") {
  const auto pb = make_problem(2, 6, 4, {4, 5}, {8, 8}, 141);
  auto head = make_head(6, 4, 142);
  const auto& f = pb.features;
  const auto& C = pb.weight;
  const auto& p = pb.logits;
  const auto& y = pb.labels;
  using Catch::Matchers::StartsWith;
  const std::string who = "cac::ContextAwareHead: expected ";
  SECTION("features with h = 0 and 8x8 labels (was pp and py of size 0 and a loss of exactly 0)") {
    REQUIRE_THROWS_WITH(
        head->forward_train(f.narrow(2, 0, 0), C, p.narrow(2, 0, 0), y),
        StartsWith(who + "features with non-empty spatial dims but got [2, 6, 0, 5] (spatial dim 0 is 0)"));
    REQUIRE_THROWS_WITH(
        head->forward(f.narrow(3, 0, 0), C, p.narrow(3, 0, 0)),
        StartsWith(who + "features with non-empty spatial dims but got [2, 6, 4, 0] (spatial dim 1 is 0)"));
  }
  SECTION("labels of another batch size than the features") {
    REQUIRE_THROWS_WITH(head->forward_train(f, C, p, y.narrow(0, 0, 1)),
                        StartsWith(who + "labels of shape [2, 2 spatial dims] but got [1, 8, 8]"));
  }
  SECTION("B = 0: empty pp and py of the right shape") {
    const auto out = head->forward_train(f.narrow(0, 0, 0), C, p.narrow(0, 0, 0), y.narrow(0, 0, 0));
    CHECK(out.context_logits.sizes() == torch::IntArrayRef({0, 4, 4, 5}));
    CHECK(out.oracle_logits.sizes() == torch::IntArrayRef({0, 4, 4, 5}));
  }
  SECTION("tau = inf or nan") {
    REQUIRE_THROWS_WITH(
        cac::ContextAwareHead(cac::ContextAwareHeadOptions(6, 4).tau(std::numeric_limits<double>::infinity())),
        StartsWith(who + "tau > 0 and finite but got inf"));
    REQUIRE_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(6, 4).tau(std::nan(""))),
                        StartsWith(who + "tau > 0 but got nan"));
  }
  SECTION("NaN propagate as documented: a NaN feature of image 0 spoils all of image 0's pp, not image 1's") {
    // pp pools soft prototypes over each image, so one NaN pixel reaches every pixel of its image.
    auto g = f.clone();
    g[0][1][2][3] = std::nan("");
    const auto pp = head->forward(g, C, cac_test::classifier_logits(g, C, pb.bias));
    CHECK(torch::isnan(pp[0]).all().item<bool>());
    CHECK(torch::isfinite(pp[1]).all().item<bool>());
    // A NaN in row 2 of the classifier weight reaches class 2 of every image (θp maps each class's
    // [prototype, C row] on its own), and no other class.
    auto D = C.clone();
    D[2][0] = std::nan("");
    const auto pd = head->forward(f, D, p);
    CHECK(torch::isnan(pd.select(1, 2)).all().item<bool>());
    CHECK(torch::isfinite(pd.index({torch::indexing::Slice(), torch::tensor({0, 1, 3})})).all().item<bool>());
  }
}
