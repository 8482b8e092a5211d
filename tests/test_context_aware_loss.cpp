// cac::ContextAwareLoss: the terms of paper Eq. 8 against the PyTorch fixtures and hand
// computations, the weights of Table 2, and its errors.

#include <cac/cac.hpp>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "support/builders.hpp"
#include "support/test_support.hpp"

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
    }
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
  // A zero-weight term is still reported.
  const auto no_kl = cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl_weight(0))->forward(out, y);
  CHECK(no_kl.kl.item<double>() == Approx(kl).epsilon(1e-12));
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
    const auto losses = cac::ContextAwareLoss(cac::ContextAwareLossOptions().align_corners(align))->forward(out, pb.labels);
    CHECK(losses.logits_ce.item<double>() == Approx(by_hand(out.logits, align)).epsilon(1e-12));
    CHECK(losses.context_ce.item<double>() == Approx(by_hand(out.context_logits, align)).epsilon(1e-12));
    CHECK(losses.oracle_ce.item<double>() == Approx(by_hand(out.oracle_logits, align)).epsilon(1e-12));
  }
  CHECK(by_hand(out.logits, false) != Approx(by_hand(out.logits, true)));  // the option matters here
  SECTION("all labels ignored gives 0, not NaN") {
    const auto ignored = torch::full_like(pb.labels, 255);
    const auto losses = cac::ContextAwareLoss()->forward(out, ignored);
    CHECK(losses.logits_ce.item<double>() == 0.0);
    CHECK(losses.total.item<double>() == 0.0);
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
          "align_corners=false, ignore_index=255, teacher_weight=0.5, entropy_weighted=true, class_wise=true)");
  }
  const auto pb = cac_test::make_problem(2, 6, 4, {4, 5}, {8, 10}, 91);
  const cac::ContextAwareOutput out{pb.logits, pb.logits, pb.logits};
  cac::ContextAwareLoss criterion;
  using Catch::Matchers::StartsWith;
  CHECK_THROWS_WITH(criterion->forward(out, pb.labels.to(torch::kFloat)),
                    StartsWith("cac::ContextAwareLoss: expected integer labels"));
  CHECK_THROWS_WITH(criterion->forward(out, pb.labels.narrow(0, 0, 1)),
                    StartsWith("cac::ContextAwareLoss: expected labels of shape [2"));
  CHECK_THROWS_WITH(criterion->forward(out, pb.labels.clone().fill_(9)),
                    StartsWith("cac::ContextAwareLoss: expected label values in [0, 4)"));
  CHECK_THROWS_WITH(criterion->forward({pb.logits.narrow(1, 0, 3), pb.logits, pb.logits}, pb.labels),
                    StartsWith("cac::ContextAwareLoss: expected logits of shape [2, 4, 4, 5]"));
  CHECK_THROWS_WITH(criterion->forward({pb.logits, pb.logits.flatten(2), pb.logits}, pb.labels.flatten(1)),
                    StartsWith("cac::ContextAwareLoss: expected logits of shape [2, 4, 20]"));
  CHECK_THROWS_WITH(criterion->forward({pb.logits, pb.logits.unsqueeze(-1).unsqueeze(-1), pb.logits}, pb.labels),
                    StartsWith("cac::ContextAwareLoss: expected context_logits with 1 to 3 spatial dims"));
  CHECK_THROWS_WITH(cac::ContextAwareLoss(cac::ContextAwareLossOptions().kl(cac::EntropyAwareKLOptions().teacher_weight(2))),
                    StartsWith("cac::ContextAwareLoss: expected teacher_weight in [0, 1] but got 2"));
}
