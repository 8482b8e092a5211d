// cac::ContextAwareHead: against the PyTorch port of the released code (tests/fixtures), the naive
// loops (support/naive.hpp), finite differences, its options, errors and lean inference.

#include <cac/cac.hpp>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "support/builders.hpp"
#include "support/test_support.hpp"

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
      CHECK(cac_test::all_close(image_head->forward_train(f, fx.at("weight"), fx.at("logits"), fx.at("labels"))
                                    .oracle_logits,
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
  // d total / d every input and parameter, total = CE(p) + CE(pp) + CE(py) + KL as in the fixture.
  for (const std::string name : {"cac_2d", "cac_1d", "cac_3d"}) {
    DYNAMIC_SECTION(name) {
      const auto fx = cac_test::load_fixture(name);
      auto head = head_from_fixture(fx);
      auto f = fx.at("features").clone().requires_grad_();
      auto weight = fx.at("weight").clone().requires_grad_();
      auto bias = fx.at("bias").clone().requires_grad_();
      auto p = cac_test::classifier_logits(f, weight, bias);
      cac::ContextAwareLoss criterion;
      auto losses = criterion->forward(head->forward_train(f, weight, p, fx.at("labels")), fx.at("labels"));
      CHECK(losses.total.item<double>() == Approx(fx.at("total").item<double>()).epsilon(1e-9));
      losses.total.backward();
      CHECK(cac_test::all_close(f.grad(), fx.at("grad_features"), 1e-7, 1e-10));
      CHECK(cac_test::all_close(weight.grad(), fx.at("grad_weight"), 1e-7, 1e-10));
      CHECK(cac_test::all_close(bias.grad(), fx.at("grad_bias"), 1e-7, 1e-10));
      const auto params = head->named_parameters();
      CHECK(cac_test::all_close(params["context_projector.0.weight"].grad(), fx.at("grad_proj_w1"), 1e-7, 1e-10));
      CHECK(cac_test::all_close(params["context_projector.2.weight"].grad(), fx.at("grad_proj_w2"), 1e-7, 1e-10));
      CHECK(cac_test::all_close(params["context_projector.2.bias"].grad(), fx.at("grad_proj_b2"), 1e-7, 1e-10));
      CHECK(cac_test::all_close(params["oracle_projector.0.weight"].grad(), fx.at("grad_apd_w1"), 1e-7, 1e-10));
      CHECK(cac_test::all_close(params["oracle_projector.2.weight"].grad(), fx.at("grad_apd_w2"), 1e-7, 1e-10));
      CHECK(cac_test::all_close(params["oracle_projector.2.bias"].grad(), fx.at("grad_apd_b2"), 1e-7, 1e-10));
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
      CHECK(cac_test::all_close(out.oracle_logits,
                                naive::oracle_logits(pb.features, pb.weight, pb.labels, theta_y, 15.0,
                                                     scope == cac::OracleScope::Batch, 255),
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
  CHECK_FALSE(cac_test::all_close(
      batch_head->forward_train(pb.features, pb.weight, pb.logits, pb.labels).oracle_logits, together, 1e-6, 1e-6));
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
    SECTION(std::string("forward_train (py), scope ") + (scope == cac::OracleScope::Batch ? "Batch" : "Image")) {
      const auto r = cac_test::gradcheck(
          [&](const auto& x) { return head->forward_train(x[0], x[1], x[2], labels).oracle_logits; }, inputs);
      CHECK(r.ok);
    }
    SECTION(std::string("CE terms of the loss, scope ") + (scope == cac::OracleScope::Batch ? "Batch" : "Image")) {
      // The KL stops the gradient at its teacher (py), so finite differences of a total that includes
      // it differ from autograd by design; the KL is checked with a fixed teacher in its own suite.
      cac::ContextAwareLoss criterion(cac::ContextAwareLossOptions().kl_weight(0));
      const auto r = cac_test::gradcheck(
          [&](const auto& x) { return criterion->forward(head->forward_train(x[0], x[1], x[2], labels), labels).total; },
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
  const auto pb = make_problem(2, 6, 4, {4, 5}, {8, 10}, 51);
  auto head = make_head(6, 4, 2);
  const auto& f = pb.features;
  const auto& C = pb.weight;
  const auto& p = pb.logits;
  const auto& y = pb.labels;
  using Catch::Matchers::Contains;
  using Catch::Matchers::StartsWith;
  SECTION("wrong ranks") {
    CHECK_THROWS_WITH(head->forward(f.flatten(1), C, p), StartsWith("cac::ContextAwareHead: expected features"));
    CHECK_THROWS_WITH(head->forward(f, C.flatten(), p), StartsWith("cac::ContextAwareHead: expected classifier_weight"));
    CHECK_THROWS_WITH(head->forward(f, C, p.flatten(2)), StartsWith("cac::ContextAwareHead: expected logits"));
    CHECK_THROWS_WITH(head->forward_train(f, C, p, y.flatten(1)), StartsWith("cac::ContextAwareHead: expected labels"));
  }
  SECTION("d or n disagreeing with the options or between arguments") {
    auto other = make_head(8, 4, 2);
    CHECK_THROWS_WITH(other->forward(f, C, p), Contains("expected features of shape [B, 8, *spatial]") &&
                                                   Contains("but got [2, 6, 4, 5]"));
    auto wider = make_head(6, 5, 2);
    CHECK_THROWS_WITH(wider->forward(f, C, p), Contains("expected classifier_weight with n = 5 rows"));
    CHECK_THROWS_WITH(head->forward(f, torch::randn({4, 7}, torch::kDouble), p),
                      Contains("expected classifier_weight with d = 6 columns") && Contains("[4, 7]"));
    CHECK_THROWS_WITH(head->forward(f, C, p.narrow(1, 0, 3)),
                      Contains("expected logits of shape [2, 4, 4, 5]") && Contains("but got [2, 3, 4, 5]"));
    CHECK_THROWS_AS(head->forward(f, torch::randn({4, 6, 3, 3}, torch::kDouble), p), c10::Error);
  }
  SECTION("logits of another spatial size") {
    CHECK_THROWS_WITH(head->forward(f, C, p.narrow(3, 0, 4)),
                      StartsWith("cac::ContextAwareHead: expected logits of shape [2, 4, 4, 5]"));
  }
  SECTION("labels: batch size, floating type, values out of range") {
    CHECK_THROWS_WITH(head->forward_train(f, C, p, y.narrow(0, 0, 1)),
                      StartsWith("cac::ContextAwareHead: expected labels of shape [2"));
    CHECK_THROWS_WITH(head->forward_train(f, C, p, y.to(torch::kFloat)),
                      StartsWith("cac::ContextAwareHead: expected integer labels but got dtype Float"));
    CHECK_THROWS_WITH(head->forward_train(f, C, p, y.clone().fill_(4)),
                      StartsWith("cac::ContextAwareHead: expected label values in [0, 4) or ignore_index 255 but got 4"));
    CHECK_THROWS_WITH(head->forward_train(f, C, p, y.clone().fill_(-1)), Contains("but got -1"));
  }
  SECTION("different dtypes") {
    CHECK_THROWS_WITH(head->forward(f, C.to(torch::kFloat), p),
                      StartsWith("cac::ContextAwareHead: expected classifier_weight of the features' dtype Double "
                                 "but got Float"));
    CHECK_THROWS_WITH(head->forward(f, C, p.to(torch::kFloat)), Contains("expected logits of the features' dtype"));
    CHECK_THROWS_WITH(head->forward(f.to(torch::kLong), C, p), Contains("expected floating-point features"));
  }
  SECTION("bad options") {
    CHECK_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(0, 4)),
                      StartsWith("cac::ContextAwareHead: expected channels > 0 but got 0"));
    CHECK_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(8, -1)),
                      StartsWith("cac::ContextAwareHead: expected num_classes > 0 but got -1"));
    CHECK_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(1, 4)),
                      StartsWith("cac::ContextAwareHead: expected hidden_channels > 0 but got 0"));
    CHECK_THROWS_WITH(cac::ContextAwareHead(cac::ContextAwareHeadOptions(8, 4).tau(0)),
                      StartsWith("cac::ContextAwareHead: expected tau > 0 but got 0"));
  }
  // Different devices cannot be exercised on a CPU-only machine; the check is check_same_device_dtype.
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
  }
  SECTION("a batch of one") { run(make_problem(1, 6, 4, {4, 4}, {7, 7}, 62)); }
  SECTION("a class present in one image only") {
    auto pb = make_problem(2, 6, 4, {4, 4}, {4, 4}, 63);
    pb.labels[0].fill_(0);
    pb.labels[1].fill_(1);
    pb.labels[1][0][0] = 3;
    run(pb);
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
    const auto out = head->forward_train(pb.features, pb.weight, pb.logits, pb.labels);
    CHECK(out.context_logits.sizes() == torch::IntArrayRef({0, 4, 4, 4}));
    CHECK(out.oracle_logits.sizes() == torch::IntArrayRef({0, 4, 4, 4}));
    cac::ContextAwareLoss criterion;
    CHECK(criterion->forward(out, pb.labels).total.item<double>() == 0.0);
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
  const auto reference = head->forward(f, C, p);  // grad mode: the out-of-place path
  const size_t feature_bytes = B * d * h * w * sizeof(float);
  cac_test::AllocationTracker tracker;
  torch::Tensor lean;
  {
    torch::NoGradGuard no_grad;
    cac_test::AllocationTracker::Scope scope(tracker);
    lean = head->forward(f, C, p);
  }
  INFO("largest allocation " << tracker.largest << " B, total " << tracker.total << " B, features "
                             << feature_bytes << " B");
  CHECK(tracker.largest > 0);
  CHECK(tracker.largest < feature_bytes / 4);
  CHECK(tracker.total < feature_bytes);
  CHECK(cac_test::all_close(lean, reference, 1e-5, 1e-6));
}
