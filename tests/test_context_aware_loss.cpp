// cac::ContextAwareLoss: the terms of paper Eq. 8 against the PyTorch fixtures and hand
// computations, the weights of Table 2, and its errors.

#include <cac/cac.hpp>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "support/builders.hpp"
#include "support/test_support.hpp"

#include <cmath>
#include <limits>
#include <sstream>

namespace F = torch::nn::functional;

namespace {

cac::ContextAwareOutput output_from_fixture(const std::map<std::string, torch::Tensor>& fx) {
  return {fx.at("logits"), fx.at("pp"), fx.at("py")};
}

}  // namespace

TEST_CASE("ContextAwareLoss terms equal the released code's (PyTorch fixtures)", "[ContextAwareLoss]") {
  // tests/fixtures/make_fixtures.py: CE after (bi/tri)linear upsampling with align_corners=False,
  // mean over valid pixels; KL = get_distill_loss of the released fcn_head_cac.py.
  for (const std::string name : {"cac_2d", "cac_2d_oddsize", "cac_1d", "cac_3d"}) {
    DYNAMIC_SECTION(name) {
      const auto fx = cac_test::load_fixture(name);
      cac::ContextAwareLoss criterion;
      const auto losses = criterion->forward(output_from_fixture(fx), fx.at("labels"));
      CHECK(losses.logits_ce.item<double>() == Approx(fx.at("ce_p").item<double>()).epsilon(1e-10));
      CHECK(losses.context_ce.item<double>() == Approx(fx.at("ce_pp").item<double>()).epsilon(1e-10));
      CHECK(losses.oracle_ce.item<double>() == Approx(fx.at("ce_py").item<double>()).epsilon(1e-10));
      CHECK(losses.kl.item<double>() == Approx(fx.at("kl").item<double>()).epsilon(1e-9));
      CHECK(losses.total.item<double>() == Approx(fx.at("total").item<double>()).epsilon(1e-9));
      // Image-scope oracle logits: the fixture's ce_py_image, kl_image, total_image.
      const auto image = criterion->forward({fx.at("logits"), fx.at("pp"), fx.at("py_image")}, fx.at("labels"));
      CHECK(image.oracle_ce.item<double>() == Approx(fx.at("ce_py_image").item<double>()).epsilon(1e-10));
      CHECK(image.kl.item<double>() == Approx(fx.at("kl_image").item<double>()).epsilon(1e-9));
      CHECK(image.total.item<double>() == Approx(fx.at("total_image").item<double>()).epsilon(1e-9));
    }
  }
}

TEST_CASE("ContextAwareLoss agrees with the naive loops", "[ContextAwareLoss]") {
  // naive::cross_entropy on logits upsampled by torch::nn::functional::interpolate, naive::distill.
  for (const auto& spatial : std::vector<std::vector<int64_t>>{{7}, {4, 5}, {2, 3, 4}}) {
    std::vector<int64_t> label_spatial;
    for (const auto s : spatial) label_spatial.push_back(2 * s + 1);
    const auto pb = cac_test::make_problem(2, 6, 4, spatial, label_spatial, 101);
    const cac::ContextAwareOutput out{pb.logits, pb.logits * 0.7 + 0.1, pb.logits.flip(1)};
    const auto losses = cac::ContextAwareLoss()->forward(out, pb.labels);
    const auto mode = spatial.size() == 1   ? F::InterpolateFuncOptions::mode_t(torch::kLinear)
                      : spatial.size() == 2 ? F::InterpolateFuncOptions::mode_t(torch::kBilinear)
                                            : F::InterpolateFuncOptions::mode_t(torch::kTrilinear);
    auto naive_ce = [&](const torch::Tensor& logits) {
      const auto up =
          F::interpolate(logits, F::InterpolateFuncOptions().size(label_spatial).mode(mode).align_corners(false));
      return naive::cross_entropy(up, pb.labels, 255).item<double>();
    };
    CHECK(losses.logits_ce.item<double>() == Approx(naive_ce(out.logits)).epsilon(1e-12));
    CHECK(losses.context_ce.item<double>() == Approx(naive_ce(out.context_logits)).epsilon(1e-12));
    CHECK(losses.oracle_ce.item<double>() == Approx(naive_ce(out.oracle_logits)).epsilon(1e-12));
    const double kl =
        naive::distill(out.context_logits, out.oracle_logits, pb.labels, 0.5, true, true, 255).item<double>();
    CHECK(losses.kl.item<double>() == Approx(kl).epsilon(1e-12));
    CHECK(
        losses.total.item<double>() ==
        Approx(naive_ce(out.logits) + naive_ce(out.context_logits) + naive_ce(out.oracle_logits) + kl).epsilon(1e-12));
  }
}

TEST_CASE("ContextAwareLoss weights remove exactly their term (paper Table 2)", "[ContextAwareLoss]") {
  const auto fx = cac_test::load_fixture("cac_2d");
  const auto out = output_from_fixture(fx);
  const auto& y = fx.at("labels");
  const auto all = cac::ContextAwareLoss()->forward(out, y);
  const double ce_p = all.logits_ce.item<double>(), ce_pp = all.context_ce.item<double>();
  const double ce_py = all.oracle_ce.item<double>(), kl = all.kl.item<double>();
  auto total = [&](const cac::ContextAwareLossOptions& o) {
    return cac::ContextAwareLoss(o)->forward(out, y).total.item<double>();
  };
  CHECK(total(cac::ContextAwareLossOptions().kl_weight(0)) == Approx(ce_p + ce_pp + ce_py).epsilon(1e-12));
  CHECK(total(cac::ContextAwareLossOptions().logits_weight(0)) == Approx(ce_pp + ce_py + kl).epsilon(1e-12));
  CHECK(total(cac::ContextAwareLossOptions().context_weight(0)) == Approx(ce_p + ce_py + kl).epsilon(1e-12));
  CHECK(total(cac::ContextAwareLossOptions().oracle_weight(0)) == Approx(ce_p + ce_pp + kl).epsilon(1e-12));
  CHECK(total(cac::ContextAwareLossOptions().kl_weight(2.5).oracle_weight(0.5)) ==
        Approx(ce_p + ce_pp + 0.5 * ce_py + 2.5 * kl).epsilon(1e-12));
  // A zero-weight term is still reported, unchanged, as are the others.
  for (const auto& options :
       {cac::ContextAwareLossOptions().kl_weight(0), cac::ContextAwareLossOptions().logits_weight(0),
        cac::ContextAwareLossOptions().context_weight(0), cac::ContextAwareLossOptions().oracle_weight(0)}) {
    const auto losses = cac::ContextAwareLoss(options)->forward(out, y);
    CHECK(losses.logits_ce.item<double>() == ce_p);
    CHECK(losses.context_ce.item<double>() == ce_pp);
    CHECK(losses.oracle_ce.item<double>() == ce_py);
    CHECK(losses.kl.item<double>() == kl);
  }
  // ...and a zero-weight term is out of the gradient too: with only the KL weighted 0, d total / d py
  // is d CE(py) / d py (the KL never sends gradient to its teacher anyway), and with only the
  // context weight 0, d total / d pp is the KL's alone.
  SECTION("zero weights remove their term from the gradient") {
    auto pp = out.context_logits.clone().requires_grad_();
    cac::ContextAwareLoss(cac::ContextAwareLossOptions().context_weight(0))
        ->forward({out.logits, pp, out.oracle_logits}, y)
        .total.backward();
    auto pp_kl = out.context_logits.clone().requires_grad_();
    cac::functional::entropy_aware_kl(pp_kl, out.oracle_logits, y).backward();
    CHECK(cac_test::all_close(pp.grad(), pp_kl.grad(), 1e-12, 1e-14));
  }
  SECTION("undefined oracle logits work only without the oracle and KL terms") {
    const cac::ContextAwareOutput inference{out.logits, out.context_logits, torch::Tensor()};
    const auto losses =
        cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl_weight(0).oracle_weight(0))->forward(inference, y);
    CHECK(losses.total.item<double>() == Approx(ce_p + ce_pp).epsilon(1e-12));
    CHECK(losses.oracle_ce.item<double>() == 0.0);
    CHECK_THROWS_WITH(cac::ContextAwareLoss()->forward(inference, y),
                      Catch::StartsWith("cac::ContextAwareLoss: expected defined oracle_logits"));
  }
  SECTION("the distillation options reach the KL term") {
    const auto options = cac::EntropyAwareKLOptions().teacher_weight(1.0).class_wise(false);
    const auto losses = cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl(options))->forward(out, y);
    CHECK(losses.kl.item<double>() == Approx(fx.at("kl_w10_e1_c0").item<double>()).epsilon(1e-9));
  }
}

TEST_CASE("ContextAwareLoss cross-entropy: upsampling, align_corners, ignored pixels", "[ContextAwareLoss]") {
  const auto pb = cac_test::make_problem(2, 6, 4, {4, 5}, {9, 11}, 81);
  const cac::ContextAwareOutput out{pb.logits, pb.logits * 0.5, pb.logits * 2.0};
  // By hand: interpolate to the label size, then CrossEntropy(ignore_index=255, mean over valid pixels).
  auto by_hand = [&](const torch::Tensor& logits, bool align_corners) {
    const auto up = F::interpolate(logits, F::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{9, 11})
                                               .mode(torch::kBilinear)
                                               .align_corners(align_corners));
    return F::cross_entropy(up, pb.labels, F::CrossEntropyFuncOptions().ignore_index(255)).item<double>();
  };
  for (const bool align : {false, true}) {
    const auto losses =
        cac::ContextAwareLoss(cac::ContextAwareLossOptions().align_corners(align))->forward(out, pb.labels);
    CHECK(losses.logits_ce.item<double>() == Approx(by_hand(out.logits, align)).epsilon(1e-12));
    CHECK(losses.context_ce.item<double>() == Approx(by_hand(out.context_logits, align)).epsilon(1e-12));
    CHECK(losses.oracle_ce.item<double>() == Approx(by_hand(out.oracle_logits, align)).epsilon(1e-12));
  }
  CHECK(by_hand(out.logits, false) != Approx(by_hand(out.logits, true)));  // the option matters here
  SECTION("1-D logits use linear and 3-D logits trilinear upsampling") {
    for (const auto& spatial : std::vector<std::vector<int64_t>>{{6}, {2, 3, 4}}) {
      std::vector<int64_t> label_spatial;
      for (const auto s : spatial) label_spatial.push_back(3 * s - 1);
      const auto q = cac_test::make_problem(2, 5, 3, spatial, label_spatial, 83);
      const auto mode = spatial.size() == 1 ? F::InterpolateFuncOptions::mode_t(torch::kLinear)
                                            : F::InterpolateFuncOptions::mode_t(torch::kTrilinear);
      for (const bool align : {false, true}) {
        const auto up =
            F::interpolate(q.logits, F::InterpolateFuncOptions().size(label_spatial).mode(mode).align_corners(align));
        const double expected =
            F::cross_entropy(up, q.labels, F::CrossEntropyFuncOptions().ignore_index(255)).item<double>();
        const auto losses = cac::ContextAwareLoss(cac::ContextAwareLossOptions().align_corners(align))
                                ->forward({q.logits, q.logits, q.logits}, q.labels);
        CHECK(losses.logits_ce.item<double>() == Approx(expected).epsilon(1e-12));
        CHECK(losses.context_ce.item<double>() == Approx(expected).epsilon(1e-12));
      }
    }
  }
  SECTION("labels at the logits' size: no resampling") {
    const auto q = cac_test::make_problem(2, 6, 4, {4, 5}, {4, 5}, 84);
    const auto losses = cac::ContextAwareLoss()->forward({q.logits, q.logits, q.logits}, q.labels);
    CHECK(losses.logits_ce.item<double>() ==
          Approx(naive::cross_entropy(q.logits, q.labels, 255).item<double>()).epsilon(1e-12));
  }
  SECTION("all labels ignored gives 0, not NaN, with a finite zero gradient") {
    const auto ignored = torch::full_like(pb.labels, 255);
    auto logits = pb.logits.detach().clone().requires_grad_();
    const auto losses = cac::ContextAwareLoss()->forward({logits, logits * 0.5, logits * 2.0}, ignored);
    CHECK(losses.logits_ce.item<double>() == 0.0);
    CHECK(losses.context_ce.item<double>() == 0.0);
    CHECK(losses.oracle_ce.item<double>() == 0.0);
    CHECK(losses.kl.item<double>() == 0.0);
    CHECK(losses.total.item<double>() == 0.0);
    losses.total.backward();
    CHECK(logits.grad().abs().max().item<double>() == 0.0);
  }
  SECTION("half and bfloat16 logits give float32 losses close to double") {
    const auto reference = cac::ContextAwareLoss()->forward(out, pb.labels);
    for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
      const auto losses = cac::ContextAwareLoss()->forward(
          {out.logits.to(dtype), out.context_logits.to(dtype), out.oracle_logits.to(dtype)}, pb.labels);
      CHECK(losses.total.scalar_type() == torch::kFloat);
      // bfloat16 keeps 8 mantissa bits: logits of size ~3 move by ~1e-2, the total by less.
      CHECK(losses.total.item<double>() ==
            Approx(reference.total.item<double>()).epsilon(dtype == torch::kFloat ? 1e-6 : 2e-2));
    }
  }
  SECTION("another ignore_index") {
    auto labels = pb.labels.masked_fill(pb.labels == 255, 7);
    const auto a = cac::ContextAwareLoss(cac::ContextAwareLossOptions().ignore_index(7))->forward(out, labels);
    const auto b = cac::ContextAwareLoss()->forward(out, pb.labels);
    CHECK(a.total.item<double>() == Approx(b.total.item<double>()).epsilon(1e-12));
  }
}

TEST_CASE("ContextAwareLoss module contract and errors", "[ContextAwareLoss]") {
  SECTION("pretty_print") {
    std::ostringstream s;
    cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl_weight(0.5))->pretty_print(s);
    CHECK(s.str() ==
          "cac::ContextAwareLoss(kl_weight=0.5, logits_weight=1, context_weight=1, oracle_weight=1, "
          "align_corners=false, ignore_index=255, teacher_weight=0.5, entropy_weighted=true, class_wise=true, "
          "check_finite=false)");
  }
  const auto pb = cac_test::make_problem(2, 6, 4, {4, 5}, {8, 10}, 91);
  const auto& p = pb.logits;
  const auto& y = pb.labels;
  const cac::ContextAwareOutput out{p, p, p};
  cac::ContextAwareLoss criterion;
  using Catch::Matchers::Contains;
  using Catch::Matchers::StartsWith;
  const std::string who = "cac::ContextAwareLoss: expected ";
  SECTION("floating labels") {
    REQUIRE_THROWS_WITH(criterion->forward(out, y.to(torch::kFloat)),
                        StartsWith(who + "integer labels but got dtype Float"));
  }
  SECTION("labels with the wrong batch size") {
    REQUIRE_THROWS_WITH(criterion->forward(out, y.narrow(0, 0, 1)),
                        StartsWith(who + "labels of shape [2, 2 spatial dims] but got [1, 8, 10]"));
  }
  SECTION("labels with the wrong rank") {
    REQUIRE_THROWS_WITH(criterion->forward(out, y.flatten(1)),
                        StartsWith(who + "labels of shape [2, 2 spatial dims] but got [2, 80]"));
  }
  SECTION("label values out of range") {
    REQUIRE_THROWS_WITH(criterion->forward(out, y.clone().fill_(9)),
                        StartsWith(who + "label values in [0, 4) or ignore_index 255 but got 9"));
  }
  SECTION("p with another number of classes than pp") {
    REQUIRE_THROWS_WITH(criterion->forward({p.narrow(1, 0, 3), p, p}, y),
                        StartsWith(who + "logits of shape [2, 4, 4, 5]") && Contains("but got [2, 3, 4, 5]"));
  }
  SECTION("py of another spatial size than pp") {
    REQUIRE_THROWS_WITH(criterion->forward({p, p, p.narrow(2, 0, 3)}, y),
                        StartsWith(who + "oracle_logits of shape [2, 4, 4, 5]") && Contains("but got [2, 4, 3, 5]"));
  }
  SECTION("p of another rank than pp") {
    REQUIRE_THROWS_WITH(criterion->forward({p, p.flatten(2), p}, y.flatten(1)),
                        StartsWith(who + "logits of shape [2, 4, 20]"));
  }
  SECTION("pp with 4 spatial dims") {
    REQUIRE_THROWS_WITH(criterion->forward({p, p.unsqueeze(-1).unsqueeze(-1), p}, y),
                        StartsWith(who + "context_logits with 1 to 3 spatial dims"));
  }
  SECTION("undefined pp") {
    REQUIRE_THROWS_WITH(criterion->forward({p, torch::Tensor(), p}, y),
                        StartsWith(who + "a defined context_logits tensor"));
  }
  SECTION("integer pp") {
    REQUIRE_THROWS_WITH(criterion->forward({p, p.to(torch::kLong), p}, y),
                        StartsWith(who + "floating-point context_logits but got dtype Long"));
  }
  SECTION("different dtypes") {
    REQUIRE_THROWS_WITH(criterion->forward({p.to(torch::kFloat), p, p}, y),
                        StartsWith(who + "logits of the features' dtype Double but got Float"));
    REQUIRE_THROWS_WITH(criterion->forward({p, p, p.to(torch::kFloat)}, y),
                        StartsWith(who + "oracle_logits of the features' dtype Double but got Float"));
  }
  SECTION("undefined p with logits_weight != 0") {
    REQUIRE_THROWS_WITH(criterion->forward({torch::Tensor(), p, p}, y),
                        StartsWith(who + "defined logits (p) for logits_weight 1"));
    const auto losses =
        cac::ContextAwareLoss(cac::ContextAwareLossOptions().logits_weight(0))->forward({torch::Tensor(), p, p}, y);
    CHECK(losses.logits_ce.item<double>() == 0.0);
    CHECK(std::isfinite(losses.total.item<double>()));
  }
  SECTION("teacher_weight outside [0, 1]") {
    REQUIRE_THROWS_WITH(
        cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl(cac::EntropyAwareKLOptions().teacher_weight(2))),
        StartsWith(who + "teacher_weight in [0, 1] but got 2"));
    CHECK_THROWS_AS(
        cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl(cac::EntropyAwareKLOptions().teacher_weight(-0.5))),
        c10::Error);
  }
}

TEST_CASE("ContextAwareLoss gradients match finite differences", "[ContextAwareLoss]") {
  // In double on a tiny problem. The KL stops the gradient at its teacher py by design, so py is
  // checked with kl_weight 0 and p, pp with the full loss.
  const auto pb = cac_test::make_problem(2, 4, 3, {3, 3}, {5, 4}, 111);
  std::vector<torch::Tensor> inputs = {pb.logits.detach().clone().requires_grad_(),
                                       (pb.logits.detach() * 0.5).requires_grad_(), pb.logits.detach().flip(1).clone()};
  for (const bool align : {false, true}) {
    cac::ContextAwareLoss full(cac::ContextAwareLossOptions().align_corners(align));
    const auto r = cac_test::gradcheck(
        [&](const auto& x) {
          return full->forward({x[0], x[1], x[2]}, pb.labels).total;
        },
        inputs);
    CHECK(r.ok);
    CHECK(r.max_error < 1e-7);
  }
  inputs[2].requires_grad_();
  cac::ContextAwareLoss no_kl(cac::ContextAwareLossOptions().kl_weight(0));
  const auto r = cac_test::gradcheck(
      [&](const auto& x) {
        return no_kl->forward({x[0], x[1], x[2]}, pb.labels).total;
      },
      inputs);
  CHECK(r.ok);
  CHECK(r.max_error < 1e-7);
}

TEST_CASE("ContextAwareLoss check_finite names the non-finite terms and inputs", "[ContextAwareLoss][finite]") {
  // Every label is class 0 (none ignored), so a NaN anywhere in pp reaches CE(pp) through the
  // bilinear upsampling and the class-wise KL through its [B, n, S] x [B, S, 3] product.
  const auto pb = cac_test::make_problem(2, 6, 4, {4, 5}, {8, 10}, 121);
  const auto y = torch::zeros({2, 8, 10}, torch::kLong);
  const cac::ContextAwareOutput clean{pb.logits, pb.logits * 0.5, pb.logits.flip(1)};
  using Catch::Matchers::Contains;
  using Catch::Matchers::StartsWith;
  const auto checked = cac::ContextAwareLossOptions().check_finite(true);
  SECTION("finite inputs: the same terms, bit for bit, as without the check") {
    const auto a = cac::ContextAwareLoss()->forward(clean, y);
    const auto b = cac::ContextAwareLoss(checked)->forward(clean, y);
    for (const auto& [x, z] :
         {std::make_pair(a.total, b.total), std::make_pair(a.kl, b.kl), std::make_pair(a.context_ce, b.context_ce)}) {
      CHECK(torch::equal(x, z));
    }
    CHECK(std::isfinite(b.total.item<double>()));
  }
  SECTION("one NaN in pp: CE(pp), KL and the total are named; p and py are finite") {
    auto pp = clean.context_logits.clone();
    pp[1][2][3][4] = std::nan("");
    // Without the check the NaN comes back silently (the documented default).
    const auto silent = cac::ContextAwareLoss()->forward({clean.logits, pp, clean.oracle_logits}, y);
    CHECK(std::isnan(silent.total.item<double>()));
    CHECK(std::isfinite(silent.logits_ce.item<double>()));
    CHECK(std::isfinite(silent.oracle_ce.item<double>()));
    REQUIRE_THROWS_WITH(cac::ContextAwareLoss(checked)->forward({clean.logits, pp, clean.oracle_logits}, y),
                        StartsWith("cac::ContextAwareLoss: expected finite loss terms (check_finite) but got "
                                   "context_ce = nan, kl = nan, total = nan; inputs: logits finite, "
                                   "context_logits 1 nan and 0 inf of 160 values, oracle_logits finite"));
    // The functional twin says the same under its own name.
    REQUIRE_THROWS_WITH(cac::functional::context_aware_loss({clean.logits, pp, clean.oracle_logits}, y, checked),
                        StartsWith("cac::functional::context_aware_loss: expected finite loss terms (check_finite) "
                                   "but got context_ce = nan, kl = nan, total = nan;"));
  }
  SECTION("an Inf in p and two in py: counted per input") {
    auto p = clean.logits.clone();
    p[0][0][0][0] = std::numeric_limits<double>::infinity();
    auto py = clean.oracle_logits.clone();
    py[0][1][0][0] = -std::numeric_limits<double>::infinity();
    py[1][1][1][1] = std::numeric_limits<double>::infinity();
    REQUIRE_THROWS_WITH(cac::ContextAwareLoss(checked)->forward({p, clean.context_logits, py}, y),
                        Contains("logits_ce = nan") && Contains("oracle_ce = nan") &&
                            Contains("inputs: logits 0 nan and 1 inf of 160 values, context_logits finite, "
                                     "oracle_logits 0 nan and 2 inf of 160 values"));
  }
  SECTION("a NaN in a term with weight 0 is still reported") {
    auto p = clean.logits.clone();
    p[0][0][0][0] = std::nan("");
    const auto options = cac::ContextAwareLossOptions().logits_weight(0).check_finite(true);
    REQUIRE_THROWS_WITH(cac::ContextAwareLoss(options)->forward({p, clean.context_logits, clean.oracle_logits}, y),
                        Contains("but got logits_ce = nan; inputs: logits 1 nan and 0 inf of 160 values"));
  }
  SECTION("NaN features reach the loss through the head and are caught there") {
    auto head = cac_test::make_head(6, 4, 122);
    auto f = pb.features.clone();
    f[0][3][2][2] = std::nan("");
    const auto out = head->forward_train(f, pb.weight, cac_test::classifier_logits(f, pb.weight, pb.bias), y);
    REQUIRE_THROWS_WITH(cac::ContextAwareLoss(checked)->forward(out, y),
                        StartsWith("cac::ContextAwareLoss: expected finite loss terms (check_finite) but got ") &&
                            Contains("total = nan"));
  }
}

TEST_CASE("ContextAwareLoss weights must be finite and non-negative", "[ContextAwareLoss][finite]") {
  using Catch::Matchers::StartsWith;
  const std::string who = "cac::ContextAwareLoss: expected ";
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl_weight(nan)),
                      StartsWith(who + "kl_weight >= 0 but got nan"));
  REQUIRE_THROWS_WITH(cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl_weight(-1)),
                      StartsWith(who + "kl_weight >= 0 but got -1"));
  REQUIRE_THROWS_WITH(cac::ContextAwareLoss(cac::ContextAwareLossOptions().logits_weight(inf)),
                      StartsWith(who + "logits_weight >= 0 and finite but got inf"));
  REQUIRE_THROWS_WITH(cac::ContextAwareLoss(cac::ContextAwareLossOptions().context_weight(-0.5)),
                      StartsWith(who + "context_weight >= 0 but got -0.5"));
  REQUIRE_THROWS_WITH(cac::ContextAwareLoss(cac::ContextAwareLossOptions().oracle_weight(nan)),
                      StartsWith(who + "oracle_weight >= 0 but got nan"));
  SECTION("options changed after construction are checked by reset() and by the functional") {
    cac::ContextAwareLoss loss;
    loss->options.kl_weight(nan);
    REQUIRE_THROWS_WITH(loss->reset(), StartsWith(who + "kl_weight >= 0 but got nan"));
    const auto pb = cac_test::make_problem(2, 6, 4, {4, 5}, {8, 10}, 123);
    REQUIRE_THROWS_WITH(cac::functional::context_aware_loss({pb.logits, pb.logits, pb.logits}, pb.labels,
                                                            cac::ContextAwareLossOptions().kl_weight(nan)),
                        StartsWith("cac::functional::context_aware_loss: expected kl_weight >= 0 but got nan"));
  }
  SECTION("zero weights stay valid (Table 2)") {
    CHECK_NOTHROW(cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl_weight(0).logits_weight(0)));
  }
}

TEST_CASE("ContextAwareLoss degenerate shapes: empty grids refused, an empty batch gives 0", "[ContextAwareLoss]") {
  using Catch::Matchers::StartsWith;
  const auto pb = cac_test::make_problem(2, 6, 4, {4, 5}, {8, 8}, 124);
  const auto& p = pb.logits;
  SECTION("pp with a spatial size 0 and 8x8 labels (was a loss of exactly 0)") {
    const auto empty = p.narrow(2, 0, 0);
    REQUIRE_THROWS_WITH(cac::ContextAwareLoss()->forward({empty, empty, empty}, pb.labels),
                        StartsWith("cac::ContextAwareLoss: expected context_logits with non-empty spatial dims but "
                                   "got [2, 4, 0, 5] (spatial dim 0 is 0)"));
    REQUIRE_THROWS_WITH(cac::EntropyAwareKL()->forward(p.narrow(3, 0, 0), p.narrow(3, 0, 0), pb.labels),
                        StartsWith("cac::EntropyAwareKL: expected student with non-empty spatial dims but got "
                                   "[2, 4, 4, 0] (spatial dim 1 is 0)"));
  }
  SECTION("labels of another batch size") {
    REQUIRE_THROWS_WITH(
        cac::ContextAwareLoss()->forward({p, p, p}, pb.labels.narrow(0, 0, 1)),
        StartsWith("cac::ContextAwareLoss: expected labels of shape [2, 2 spatial dims] but got [1, 8, 8]"));
  }
  SECTION("B = 0: every term 0, also with check_finite (no pixel, as with all labels ignored)") {
    const auto empty = p.narrow(0, 0, 0);
    const auto losses = cac::ContextAwareLoss(cac::ContextAwareLossOptions().check_finite(true))
                            ->forward({empty, empty, empty}, pb.labels.narrow(0, 0, 0));
    CHECK(losses.total.item<double>() == 0.0);
    CHECK(losses.kl.item<double>() == 0.0);
    CHECK(losses.context_ce.item<double>() == 0.0);
  }
}
