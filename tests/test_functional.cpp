// Tests of cac::functional: agreement with the naive loops of support/naive.hpp, hand-derived
// tiny cases, finite-difference gradients, input validation, edge cases, dtypes, determinism.

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cac/cac.hpp>

#include "support/naive.hpp"
#include "support/test_support.hpp"

#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace F = cac::functional;

namespace {

// ---------------------------------------------------------------------------------------------
// Input builders

struct Case {
  int64_t B, d, n;
  std::vector<int64_t> spatial;
};

std::string describe(const Case& c) {
  std::ostringstream s;
  s << "B=" << c.B << " d=" << c.d << " n=" << c.n << " spatial=" << at::IntArrayRef(c.spatial);
  return s.str();
}

// 2-D, 1-D and 3-D spatial grids; B = 1 and a 1×1 grid included.
const std::vector<Case>& cases() {
  static const std::vector<Case> all{{2, 4, 3, {4, 4}}, {1, 5, 2, {7}},    {3, 3, 4, {2, 3, 2}},
                                     {2, 6, 5, {5, 3}}, {4, 2, 3, {1, 1}}, {2, 4, 3, {9}}};
  return all;
}

// The small case used by gradient checks and validation tests.
const Case kTiny{2, 4, 3, {4, 4}};

// Every spatial size times num/den (at least 1): labels at another resolution.
std::vector<int64_t> scaled(const std::vector<int64_t>& spatial, int64_t num, int64_t den) {
  std::vector<int64_t> out;
  for (int64_t s : spatial) out.push_back(std::max<int64_t>(1, s * num / den));
  return out;
}

// Features f, classifier C [n, d], original logits p, student (pp) and teacher (py) logits,
// labels y (at `label_spatial`, default the features' grid) and projector weights θ.
struct Inputs {
  torch::Tensor f, C, p, s, q, y;
  cac::ProjectorWeights theta;
};

Inputs make_inputs(const Case& c, uint64_t seed, std::vector<int64_t> label_spatial = {}) {
  if (label_spatial.empty()) label_spatial = c.spatial;
  Inputs in;
  in.f = naive::randn(naive::shape_of(c.B, c.d, c.spatial), seed);
  in.C = naive::randn({c.n, c.d}, seed + 1);
  in.p = naive::randn(naive::shape_of(c.B, c.n, c.spatial), seed + 2) * 2;
  in.s = naive::randn(naive::shape_of(c.B, c.n, c.spatial), seed + 3) * 3;
  in.q = naive::randn(naive::shape_of(c.B, c.n, c.spatial), seed + 4) * 3;
  in.y = naive::random_labels(c.B, label_spatial, c.n, seed + 5);
  in.theta = naive::random_projector(c.d, std::max<int64_t>(1, c.d / 2), seed + 6);
  return in;
}

// The floating inputs converted to `dtype` (labels and projector unchanged).
Inputs cast(const Inputs& in, torch::ScalarType dtype) {
  Inputs out = in;
  for (torch::Tensor* t : {&out.f, &out.C, &out.p, &out.s, &out.q}) *t = t->to(dtype);
  return out;
}

// A leaf copy of `t` that requires grad.
torch::Tensor leaf(const torch::Tensor& t) { return t.detach().clone().requires_grad_(true); }

// Per-image weights [B, n, d]: C with its rows rolled by b for image b.
torch::Tensor per_image_weight(const torch::Tensor& C, int64_t B) {
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) rows.push_back(torch::roll(C, {b}, {0}));
  return torch::stack(rows);
}

// Labels [B, *spatial] in which every class 0..n-1 occurs in every image.
torch::Tensor every_class_labels(int64_t B, const std::vector<int64_t>& spatial, int64_t n) {
  std::vector<int64_t> shape{B};
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  int64_t S = 1;
  for (int64_t s : spatial) S *= s;
  return (torch::arange(B * S, torch::kLong) % n).reshape(shape);
}

cac::ContextAwareHeadOptions head_options(const Case& c, double tau = 15.0,
                                          cac::OracleScope scope = cac::OracleScope::Batch) {
  return cac::ContextAwareHeadOptions(c.d, c.n).tau(tau).oracle_scope(scope);
}

// (Bi/tri)linear upsampling of class scores to `size` (the reference of the loss's resize).
torch::Tensor upsample(const torch::Tensor& logits, at::IntArrayRef size, bool align_corners) {
  if (logits.sizes().slice(2).equals(size)) return logits;
  auto options = torch::nn::functional::InterpolateFuncOptions().size(size.vec()).align_corners(align_corners);
  switch (size.size()) {
    case 1: options.mode(torch::kLinear); break;
    case 2: options.mode(torch::kBilinear); break;
    default: options.mode(torch::kTrilinear); break;
  }
  return torch::nn::functional::interpolate(logits, options);
}

// PyTorch's own nearest resize of labels (through float, as F.interpolate(y.float())).
torch::Tensor torch_nearest(const torch::Tensor& labels, const std::vector<int64_t>& size) {
  namespace nnf = torch::nn::functional;
  return nnf::interpolate(labels.to(torch::kFloat).unsqueeze(1),
                          nnf::InterpolateFuncOptions().size(size).mode(torch::kNearest))
      .squeeze(1)
      .to(torch::kLong);
}

// Reference of every term of context_aware_loss: naive CE of each (upsampled) logits tensor
// and naive::distill at the logits' resolution.
struct ReferenceLosses {
  double total, logits_ce, context_ce, oracle_ce, kl;
};

ReferenceLosses reference_losses(const cac::ContextAwareOutput& out, const torch::Tensor& y,
                                 const cac::ContextAwareLossOptions& o) {
  const at::IntArrayRef size = y.sizes().slice(1);
  const auto ce = [&](const torch::Tensor& logits) {
    return logits.defined()
               ? naive::cross_entropy(upsample(logits.to(torch::kDouble), size, o.align_corners()), y, o.ignore_index())
                     .item<double>()
               : 0.0;
  };
  ReferenceLosses r{};
  r.logits_ce = ce(out.logits);
  r.context_ce = ce(out.context_logits);
  r.oracle_ce = ce(out.oracle_logits);
  r.kl = out.oracle_logits.defined() ? naive::distill(out.context_logits, out.oracle_logits, y, o.kl().teacher_weight(),
                                                      o.kl().entropy_weighted(), o.kl().class_wise(), o.ignore_index())
                                           .item<double>()
                                     : 0.0;
  r.total = o.logits_weight() * r.logits_ce + o.context_weight() * r.context_ce + o.oracle_weight() * r.oracle_ce +
            o.kl_weight() * r.kl;
  return r;
}

void require_losses(const cac::ContextAwareLosses& got, const ReferenceLosses& want, double rtol = 1e-9) {
  CHECK(got.total.item<double>() == Approx(want.total).epsilon(rtol).margin(1e-12));
  CHECK(got.logits_ce.item<double>() == Approx(want.logits_ce).epsilon(rtol).margin(1e-12));
  CHECK(got.context_ce.item<double>() == Approx(want.context_ce).epsilon(rtol).margin(1e-12));
  CHECK(got.oracle_ce.item<double>() == Approx(want.oracle_ce).epsilon(rtol).margin(1e-12));
  REQUIRE(got.kl.item<double>() == Approx(want.kl).epsilon(rtol).margin(1e-12));
}

// ---------------------------------------------------------------------------------------------
// Assertion helpers

#define REQUIRE_CLOSE(actual, expected, rtol, atol)                                                                \
  do {                                                                                                             \
    const torch::Tensor actual_ = (actual), expected_ = (expected);                                                \
    INFO("max |diff| = " << cac_test::max_abs_diff(actual_, expected_) << ", shapes " << actual_.sizes() << " vs " \
                         << expected_.sizes());                                                                    \
    REQUIRE(cac_test::all_close(actual_, expected_, rtol, atol));                                                  \
  } while (0)

// Both the type and the text of a validation error.
#define REQUIRE_CAC_ERROR(expr, text)                 \
  do {                                                \
    REQUIRE_THROWS_AS(expr, c10::Error);              \
    REQUIRE_THROWS_WITH(expr, Catch::Contains(text)); \
  } while (0)

using Fn = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;

void require_gradcheck(const Fn& fn, const std::vector<torch::Tensor>& inputs) {
  const cac_test::GradCheckResult result = cac_test::gradcheck(fn, inputs);
  INFO("worst input #" << result.worst_input << ", max |analytic - numeric| = " << result.max_error);
  REQUIRE(result.ok);
}

bool all_finite(const torch::Tensor& t) { return torch::isfinite(t).all().item<bool>(); }

// ---------------------------------------------------------------------------------------------
// Every function as a runner from Inputs to its output tensors (for dtype and determinism tests).

struct Runner {
  std::string name;
  std::function<std::vector<torch::Tensor>(const Inputs&)> run;
  // Documented: true when half/bfloat16 inputs give outputs of the same dtype, false when they
  // give float32 (prototypes and losses, see functional.hpp and outputs.hpp).
  bool keeps_reduced_dtype;
};

std::vector<Runner> runners(const Case& c) {
  const auto loss_terms = [](const cac::ContextAwareLosses& l) {
    return std::vector<torch::Tensor>{l.total, l.logits_ce, l.context_ce, l.oracle_ce, l.kl};
  };
  return {
      {"soft_prototypes", [](const Inputs& in) { return std::vector<torch::Tensor>{F::soft_prototypes(in.f, in.p)}; },
       false},
      {"ground_truth_prototypes(Batch)",
       [](const Inputs& in) { return std::vector<torch::Tensor>{F::ground_truth_prototypes(in.f, in.C, in.y)}; },
       false},
      {"ground_truth_prototypes(Image)",
       [](const Inputs& in) {
         return std::vector<torch::Tensor>{F::ground_truth_prototypes(
             in.f, in.C, in.y, cac::GroundTruthPrototypesFuncOptions().scope(cac::OracleScope::Image))};
       },
       false},
      {"cosine_logits([n,d])",
       [](const Inputs& in) { return std::vector<torch::Tensor>{F::cosine_logits(in.f, in.C, 15.0)}; }, true},
      {"cosine_logits([B,n,d])",
       [c](const Inputs& in) {
         return std::vector<torch::Tensor>{F::cosine_logits(in.f, per_image_weight(in.C, c.B), 7.5)};
       },
       true},
      {"context_logits",
       [c](const Inputs& in) {
         return std::vector<torch::Tensor>{F::context_logits(in.f, in.C, in.p, in.theta, head_options(c))};
       },
       true},
      {"oracle_logits(Batch)",
       [c](const Inputs& in) {
         return std::vector<torch::Tensor>{F::oracle_logits(in.f, in.C, in.y, in.theta, head_options(c))};
       },
       true},
      {"oracle_logits(Image)",
       [c](const Inputs& in) {
         return std::vector<torch::Tensor>{
             F::oracle_logits(in.f, in.C, in.y, in.theta, head_options(c, 10.0, cac::OracleScope::Image))};
       },
       true},
      {"entropy_aware_kl",
       [](const Inputs& in) { return std::vector<torch::Tensor>{F::entropy_aware_kl(in.s, in.q, in.y)}; }, false},
      {"context_aware_loss",
       [loss_terms](const Inputs& in) {
         return loss_terms(F::context_aware_loss({in.p, in.s, in.q}, in.y));
       },
       false},
  };
}

}  // namespace

// =============================================================================================
// Agreement with the naive loops

TEST_CASE("soft_prototypes matches the naive loop of Eq. 4", "[functional]") {
  for (const Case& c : cases()) {
    INFO(describe(c));
    const Inputs in = make_inputs(c, 10);
    const torch::Tensor got = F::soft_prototypes(in.f, in.p);
    REQUIRE(got.sizes() == torch::IntArrayRef({c.B, c.n, c.d}));
    REQUIRE(got.scalar_type() == torch::kDouble);
    REQUIRE_CLOSE(got, naive::soft_prototypes(in.f, in.p), 1e-10, 1e-12);
  }
}

TEST_CASE("ground_truth_prototypes matches the naive loop of Eq. 1", "[functional]") {
  const auto image = cac::GroundTruthPrototypesFuncOptions().scope(cac::OracleScope::Image);
  SECTION("labels on the features' grid") {
    for (const Case& c : cases()) {
      INFO(describe(c));
      const Inputs in = make_inputs(c, 20);
      const torch::Tensor batch = F::ground_truth_prototypes(in.f, in.C, in.y);
      REQUIRE(batch.sizes() == torch::IntArrayRef({c.n, c.d}));
      REQUIRE_CLOSE(batch, naive::ground_truth_prototypes(in.f, in.C, in.y, true, 255), 1e-10, 1e-12);
      const torch::Tensor per_image = F::ground_truth_prototypes(in.f, in.C, in.y, image);
      REQUIRE(per_image.sizes() == torch::IntArrayRef({c.B, c.n, c.d}));
      REQUIRE_CLOSE(per_image, naive::ground_truth_prototypes(in.f, in.C, in.y, false, 255), 1e-10, 1e-12);
    }
  }
  SECTION("labels at 2x and 5/3x resolution are nearest-resized first") {
    for (const Case& c : cases()) {
      for (const auto& label_spatial : {scaled(c.spatial, 2, 1), scaled(c.spatial, 5, 3)}) {
        INFO(describe(c) << " labels " << at::IntArrayRef(label_spatial));
        const Inputs in = make_inputs(c, 21, label_spatial);
        const torch::Tensor grid = naive::resize_labels(in.y, c.spatial);
        REQUIRE_CLOSE(F::ground_truth_prototypes(in.f, in.C, in.y),
                      naive::ground_truth_prototypes(in.f, in.C, grid, true, 255), 1e-10, 1e-12);
        REQUIRE_CLOSE(F::ground_truth_prototypes(in.f, in.C, in.y, image),
                      naive::ground_truth_prototypes(in.f, in.C, grid, false, 255), 1e-10, 1e-12);
      }
    }
  }
  SECTION("a convolution-shaped weight [n, d, 1, ...] and a custom ignore_index") {
    for (const Case& c : cases()) {
      INFO(describe(c));
      const Inputs in = make_inputs(c, 22);
      std::vector<int64_t> conv_shape{c.n, c.d};
      conv_shape.insert(conv_shape.end(), c.spatial.size(), 1);
      // ignore_index 0: class 0 never gets a prototype and keeps its classifier row.
      const torch::Tensor y = in.y.clamp_max(c.n - 1);
      const torch::Tensor got = F::ground_truth_prototypes(in.f, in.C.reshape(conv_shape), y,
                                                           cac::GroundTruthPrototypesFuncOptions().ignore_index(0));
      REQUIRE_CLOSE(got, naive::ground_truth_prototypes(in.f, in.C, y, true, 0), 1e-10, 1e-12);
      REQUIRE(torch::equal(got[0], in.C[0]));
    }
  }
}

TEST_CASE("cosine_logits matches the naive loop of Eqs. 3/6", "[functional]") {
  for (const Case& c : cases()) {
    INFO(describe(c));
    const Inputs in = make_inputs(c, 30);
    const torch::Tensor per_image = per_image_weight(in.C, c.B);
    for (double tau : {15.0, 1.0, 0.25}) {
      INFO("tau = " << tau);
      const torch::Tensor want_shared = naive::cosine_logits(in.f, in.C, tau);
      const torch::Tensor want_image = naive::cosine_logits(in.f, per_image, tau);
      REQUIRE(want_shared.sizes() == torch::IntArrayRef(naive::shape_of(c.B, c.n, c.spatial)));
      // Without autograd (the in-place path) and with it (the graph path).
      REQUIRE_CLOSE(F::cosine_logits(in.f, in.C, tau), want_shared, 1e-10, 1e-12);
      REQUIRE_CLOSE(F::cosine_logits(in.f, per_image, tau), want_image, 1e-10, 1e-12);
      REQUIRE_CLOSE(F::cosine_logits(leaf(in.f), leaf(in.C), tau).detach(), want_shared, 1e-10, 1e-12);
      REQUIRE_CLOSE(F::cosine_logits(in.f, leaf(per_image), tau).detach(), want_image, 1e-10, 1e-12);
    }
  }
}

TEST_CASE("context_logits matches the naive loops of Eqs. 4-6", "[functional]") {
  for (const Case& c : cases()) {
    INFO(describe(c));
    Inputs in = make_inputs(c, 40);
    // With a second-layer bias.
    REQUIRE_CLOSE(F::context_logits(in.f, in.C, in.p, in.theta, head_options(c, 15.0)),
                  naive::context_logits(in.f, in.C, in.p, in.theta, 15.0), 1e-10, 1e-12);
    // Without a bias, tau 2, a convolution-shaped weight [n, d, 1, ...].
    in.theta.fc2_bias = torch::Tensor();
    std::vector<int64_t> conv_shape{c.n, c.d};
    conv_shape.insert(conv_shape.end(), c.spatial.size(), 1);
    const torch::Tensor got = F::context_logits(in.f, in.C.reshape(conv_shape), in.p, in.theta, head_options(c, 2.0));
    REQUIRE(got.sizes() == in.p.sizes());
    REQUIRE_CLOSE(got, naive::context_logits(in.f, in.C, in.p, in.theta, 2.0), 1e-10, 1e-12);
  }
}

TEST_CASE("oracle_logits matches the naive loops of Eqs. 1-3", "[functional]") {
  for (const Case& c : cases()) {
    INFO(describe(c));
    for (const auto& label_spatial : {c.spatial, scaled(c.spatial, 2, 1), scaled(c.spatial, 7, 3)}) {
      INFO("labels " << at::IntArrayRef(label_spatial));
      const Inputs in = make_inputs(c, 50, label_spatial);
      for (const auto scope : {cac::OracleScope::Batch, cac::OracleScope::Image}) {
        INFO("scope " << scope);
        const torch::Tensor got = F::oracle_logits(in.f, in.C, in.y, in.theta, head_options(c, 15.0, scope));
        REQUIRE(got.sizes() == in.p.sizes());
        REQUIRE_CLOSE(got,
                      naive::oracle_logits(in.f, in.C, in.y, in.theta, 15.0, scope == cac::OracleScope::Batch, 255),
                      1e-10, 1e-12);
      }
    }
  }
}

TEST_CASE("entropy_aware_kl matches the naive loop for every option", "[functional]") {
  SECTION("every case, labels at 3/2x resolution") {
    for (const Case& c : cases()) {
      INFO(describe(c));
      const Inputs in = make_inputs(c, 60, scaled(c.spatial, 3, 2));
      for (double w : {0.0, 0.3, 0.5, 1.0}) {
        for (bool entropy : {false, true}) {
          for (bool class_wise : {false, true}) {
            INFO("teacher_weight " << w << " entropy " << entropy << " class_wise " << class_wise);
            const auto options =
                cac::EntropyAwareKLOptions().teacher_weight(w).entropy_weighted(entropy).class_wise(class_wise);
            const torch::Tensor got = F::entropy_aware_kl(in.s, in.q, in.y, options);
            REQUIRE(got.dim() == 0);
            REQUIRE(
                got.item<double>() ==
                Approx(naive::distill(in.s, in.q, in.y, w, entropy, class_wise, 255).item<double>()).epsilon(1e-10));
          }
        }
      }
    }
  }
  SECTION("a custom ignore_index") {
    const Inputs in = make_inputs(kTiny, 61);
    const torch::Tensor y = in.y.masked_fill(in.y == 255, -1);
    const torch::Tensor got = F::entropy_aware_kl(in.s, in.q, y, cac::EntropyAwareKLOptions().ignore_index(-1));
    REQUIRE(got.item<double>() ==
            Approx(naive::distill(in.s, in.q, y, 0.5, true, true, -1).item<double>()).epsilon(1e-10));
  }
}

TEST_CASE("context_aware_loss matches the per-term references", "[functional]") {
  SECTION("every case, labels at 1x, 2x and 5/2x resolution, both align_corners") {
    for (const Case& c : cases()) {
      INFO(describe(c));
      for (const auto& label_spatial : {c.spatial, scaled(c.spatial, 2, 1), scaled(c.spatial, 5, 2)}) {
        INFO("labels " << at::IntArrayRef(label_spatial));
        const Inputs in = make_inputs(c, 70, label_spatial);
        const cac::ContextAwareOutput out{in.p, in.s, in.q};
        for (bool align : {false, true}) {
          const auto options = cac::ContextAwareLossOptions().align_corners(align);
          require_losses(F::context_aware_loss(out, in.y, options), reference_losses(out, in.y, options));
        }
      }
    }
  }
  const Inputs in = make_inputs(kTiny, 71, {8, 8});
  SECTION("non-default weights and distillation options") {
    const auto options =
        cac::ContextAwareLossOptions().kl_weight(0.3).logits_weight(0.5).context_weight(2.0).oracle_weight(0.25).kl(
            cac::EntropyAwareKLOptions().teacher_weight(0.8).class_wise(false));
    const cac::ContextAwareOutput out{in.p, in.s, in.q};
    require_losses(F::context_aware_loss(out, in.y, options), reference_losses(out, in.y, options));
  }
  SECTION("the loss's ignore_index overrides the distillation's") {
    const torch::Tensor y = in.y.masked_fill(in.y == 255, 7);
    const auto options =
        cac::ContextAwareLossOptions().ignore_index(7).kl(cac::EntropyAwareKLOptions().ignore_index(0));
    const cac::ContextAwareOutput out{in.p, in.s, in.q};
    require_losses(F::context_aware_loss(out, y, options), reference_losses(out, y, options));
  }
  SECTION("undefined p and py with zero weights: terms reported as 0, left out of the total") {
    const auto options = cac::ContextAwareLossOptions().logits_weight(0).oracle_weight(0).kl_weight(0);
    const cac::ContextAwareOutput out{torch::Tensor(), in.s, torch::Tensor()};
    const cac::ContextAwareLosses got = F::context_aware_loss(out, in.y, options);
    require_losses(got, reference_losses(out, in.y, options));
    REQUIRE(got.logits_ce.item<double>() == 0.0);
    REQUIRE(got.oracle_ce.item<double>() == 0.0);
    REQUIRE(got.kl.item<double>() == 0.0);
    REQUIRE(got.total.item<double>() == got.context_ce.item<double>());
  }
}

TEST_CASE("resize_labels equals PyTorch's interpolate(mode=nearest)", "[functional]") {
  SECTION("1-D: every (in, out) pair up to 24, plus large and non-integer ratios") {
    std::vector<std::pair<int64_t, int64_t>> pairs;
    for (int64_t in = 1; in <= 24; ++in)
      for (int64_t out = 1; out <= 24; ++out) pairs.emplace_back(in, out);
    for (auto pair :
         std::vector<std::pair<int64_t, int64_t>>{{97, 128},
                                                  {128, 97},
                                                  {33, 100},
                                                  {100, 33},
                                                  {512, 64},
                                                  {64, 512},
                                                  {300, 1000},
                                                  {1000, 300},
                                                  {511, 1023},
                                                  {1023, 511},
                                                  {129, 257},
                                                  {257, 129},
                                                  {640, 480},
                                                  {999, 1000},
                                                  {1000, 999},
                                                  // Pairs where evaluating the rule in float64 instead of float32 picks
                                                  // another source pixel (found by emulating float32 in Python).
                                                  {2, 82},
                                                  {2, 98},
                                                  {3, 123},
                                                  {510, 58},
                                                  {100, 774},
                                                  {255, 374},
                                                  {1000, 965}})
      pairs.push_back(pair);
    for (const auto& pair : pairs) {
      INFO("in " << pair.first << " out " << pair.second);
      const torch::Tensor y = naive::random_labels(2, {pair.first}, 1000, 80, 0.1);
      const torch::Tensor got = F::resize_labels(y, {pair.second});
      REQUIRE(got.scalar_type() == torch::kLong);
      REQUIRE(torch::equal(got, torch_nearest(y, {pair.second})));
      REQUIRE(torch::equal(got, naive::resize_labels(y, {pair.second})));
    }
  }
  SECTION("2-D: up, down, 2x, equal, mixed and non-integer ratios") {
    const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> pairs{
        {{4, 4}, {8, 8}},     {{8, 8}, {4, 4}},     {{5, 7}, {5, 7}},     {{5, 7}, {3, 11}},
        {{13, 9}, {6, 20}},   {{64, 48}, {17, 13}}, {{17, 13}, {64, 48}}, {{1, 5}, {4, 1}},
        {{10, 10}, {15, 15}}, {{3, 3}, {5, 6}},     {{2, 3}, {82, 123}}};
    for (const auto& pair : pairs) {
      INFO("in " << at::IntArrayRef(pair.first) << " out " << at::IntArrayRef(pair.second));
      const torch::Tensor y = naive::random_labels(3, pair.first, 150, 81);
      const torch::Tensor got = F::resize_labels(y, pair.second);
      REQUIRE(torch::equal(got, torch_nearest(y, pair.second)));
      REQUIRE(torch::equal(got, naive::resize_labels(y, pair.second)));
    }
  }
  SECTION("3-D") {
    const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> pairs{
        {{4, 5, 3}, {7, 2, 6}}, {{2, 2, 2}, {4, 4, 4}}, {{6, 6, 6}, {3, 4, 5}}, {{3, 4, 5}, {3, 4, 5}}};
    for (const auto& pair : pairs) {
      INFO("in " << at::IntArrayRef(pair.first) << " out " << at::IntArrayRef(pair.second));
      const torch::Tensor y = naive::random_labels(2, pair.first, 20, 82);
      const torch::Tensor got = F::resize_labels(y, pair.second);
      REQUIRE(torch::equal(got, torch_nearest(y, pair.second)));
      REQUIRE(torch::equal(got, naive::resize_labels(y, pair.second)));
    }
  }
  SECTION("uint8 and int32 labels are returned as int64") {
    const torch::Tensor y = naive::random_labels(2, {5, 5}, 10, 83);
    for (auto dtype : {torch::kByte, torch::kInt}) {
      const torch::Tensor got = F::resize_labels(y.to(dtype), {7, 3});
      REQUIRE(got.scalar_type() == torch::kLong);
      REQUIRE(torch::equal(got, torch_nearest(y, {7, 3})));
    }
  }
}

// =============================================================================================
// Hand-derived tiny cases

TEST_CASE("hand-derived tiny cases", "[functional]") {
  // f: d = 2, one image, 1×2 pixels: pixel 0 = (1, 0), pixel 1 = (0, 2).
  const torch::Tensor f = torch::tensor({1.0, 0.0, 0.0, 2.0}, torch::kDouble).reshape({1, 2, 1, 2});
  // C = [[3, 4], [0, -1]]: row norms 5 and 1.
  const torch::Tensor C = torch::tensor({3.0, 4.0, 0.0, -1.0}, torch::kDouble).reshape({2, 2});
  const double ln3 = std::log(3.0), ln2 = std::log(2.0), ln4 = std::log(4.0);
  // p: pixel 0 = (ln 3, 0) → softmax (3/4, 1/4); pixel 1 = (0, 0) → (1/2, 1/2).
  const torch::Tensor p = torch::tensor({ln3, 0.0, 0.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 2});

  SECTION("soft_prototypes") {
    // P0 = (3/4·(1,0) + 1/2·(0,2)) / (3/4 + 1/2) = (0.75, 1) / 1.25 = (0.6, 0.8)
    // P1 = (1/4·(1,0) + 1/2·(0,2)) / (1/4 + 1/2) = (0.25, 1) / 0.75 = (1/3, 4/3)
    const torch::Tensor want = torch::tensor({0.6, 0.8, 1.0 / 3, 4.0 / 3}, torch::kDouble).reshape({1, 2, 2});
    REQUIRE_CLOSE(F::soft_prototypes(f, p), want, 1e-10, 1e-12);
  }
  SECTION("cosine_logits") {
    // tau = 2. pixel 0: f/|f| = (1,0): cos with (3,4)/5 = 0.6 → 1.2; with (0,-1) = 0 → 0.
    //          pixel 1: f/|f| = (0,1): cos = 0.8 → 1.6; cos = -1 → -2.
    const torch::Tensor want = torch::tensor({1.2, 1.6, 0.0, -2.0}, torch::kDouble).reshape({1, 2, 1, 2});
    REQUIRE_CLOSE(F::cosine_logits(f, C, 2.0), want, 1e-10, 1e-12);
  }
  SECTION("ground_truth_prototypes, one image") {
    // labels: pixel 0 = 1, pixel 1 = 255 (ignored) → class 0 absent keeps C row (3, 4);
    // class 1 = mean of {(1, 0)} = (1, 0).
    const torch::Tensor y = torch::tensor({1, 255}, torch::kLong).reshape({1, 1, 2});
    const torch::Tensor want = torch::tensor({3.0, 4.0, 1.0, 0.0}, torch::kDouble).reshape({2, 2});
    REQUIRE_CLOSE(F::ground_truth_prototypes(f, C, y), want, 1e-10, 1e-12);
  }
  SECTION("ground_truth_prototypes, two images, batch vs image scope") {
    // image 0 pixels (1,0), (0,2) labelled 0, 1; image 1 pixels (2,2), (4,0) labelled 0, 255.
    // C3 = [[3,4], [0,-1], [5,5]].
    const torch::Tensor f2 =
        torch::tensor({1.0, 0.0, 0.0, 2.0, 2.0, 4.0, 2.0, 0.0}, torch::kDouble).reshape({2, 2, 1, 2});
    const torch::Tensor C3 = torch::tensor({3.0, 4.0, 0.0, -1.0, 5.0, 5.0}, torch::kDouble).reshape({3, 2});
    const torch::Tensor y = torch::tensor({0, 1, 0, 255}, torch::kLong).reshape({2, 1, 2});
    // Batch: class 0 = mean{(1,0), (2,2)} = (1.5, 1); class 1 = (0, 2); class 2 absent → (5, 5).
    const torch::Tensor batch = torch::tensor({1.5, 1.0, 0.0, 2.0, 5.0, 5.0}, torch::kDouble).reshape({3, 2});
    // Image 0: (1,0), (0,2), (5,5). Image 1: (2,2), class 1 absent → (0,-1), (5,5).
    const torch::Tensor image =
        torch::tensor({1.0, 0.0, 0.0, 2.0, 5.0, 5.0, 2.0, 2.0, 0.0, -1.0, 5.0, 5.0}, torch::kDouble).reshape({2, 3, 2});
    REQUIRE_CLOSE(F::ground_truth_prototypes(f2, C3, y), batch, 1e-10, 1e-12);
    REQUIRE_CLOSE(
        F::ground_truth_prototypes(f2, C3, y, cac::GroundTruthPrototypesFuncOptions().scope(cac::OracleScope::Image)),
        image, 1e-10, 1e-12);
  }
  // θ with fc1 = [I | 0] (keeps the prototype half), fc2 = I, no bias: A = relu(prototypes).
  const cac::ProjectorWeights pick_prototypes{
      torch::tensor({1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0}, torch::kDouble).reshape({2, 4}),
      torch::eye(2, torch::kDouble), torch::Tensor()};
  SECTION("context_logits with a prototype-picking projector") {
    // A = relu(P) = P = [(0.6, 0.8), (1/3, 4/3)]; tau = 1.
    // pixel 0 (1,0): cos = 0.6 and (1/3)/sqrt(17/9) = 1/sqrt(17) ≈ 0.242536.
    // pixel 1 (0,1): cos = 0.8 and 4/sqrt(17) ≈ 0.970143.
    const double r17 = std::sqrt(17.0);
    const torch::Tensor want = torch::tensor({0.6, 0.8, 1.0 / r17, 4.0 / r17}, torch::kDouble).reshape({1, 2, 1, 2});
    REQUIRE_CLOSE(F::context_logits(f, C, p, pick_prototypes, cac::ContextAwareHeadOptions(2, 2).tau(1.0)), want, 1e-10,
                  1e-12);
  }
  SECTION("oracle_logits with a prototype-picking projector and labels at 2x resolution") {
    // labels 1×4 = [1, 1, 255, 255] → nearest to 1×2 (dst >> 1) = [1, 255].
    // Prototypes: class 0 absent → (3, 4); class 1 = (1, 0). A = relu = same. tau = 3.
    // pixel 0 (1,0): cos = 0.6, 1 → 1.8, 3. pixel 1 (0,1): cos = 0.8, 0 → 2.4, 0.
    const torch::Tensor y = torch::tensor({1, 1, 255, 255}, torch::kLong).reshape({1, 1, 4});
    const torch::Tensor want = torch::tensor({1.8, 2.4, 3.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 2});
    REQUIRE_CLOSE(F::oracle_logits(f, C, y, pick_prototypes, cac::ContextAwareHeadOptions(2, 2).tau(3.0)), want, 1e-10,
                  1e-12);
  }
  SECTION("entropy_aware_kl, the four Table-3 settings") {
    // One image, 1×3 pixels, n = 2, labels [0, 0, 1], student pp = (ln 3, 0) everywhere:
    // log σ(pp) = (ln 3/4, ln 1/4). Teacher py = (0,0), (ln 3, 0), (0,0) → q = (1/2,1/2),
    // (3/4,1/4), (1/2,1/2); H = ln 2, ln 4 − (3/4) ln 3 ≈ 0.562335, ln 2.
    // Teacher CE: t0 = t2 = ln 4 − ln 3 / 2 ≈ 0.836988, t1 = ln 4 − (3/4) ln 3 ≈ 0.562335.
    // Label CE: c0 = c1 = ln 4 − ln 3 ≈ 0.287682, c2 = ln 4 ≈ 1.386294.
    // w = 0.5: ℓ = (t + c)/2 ≈ (0.562335, 0.425009, 1.111641). By hand (and python math):
    //   class-wise entropy  ((H0ℓ0 + H1ℓ1)/(H0 + H1) + ℓ2)/2 ≈ 0.806234
    //   class-wise          ((ℓ0 + ℓ1)/2 + ℓ2)/2              ≈ 0.802657
    //   entropy             Σ Hℓ / Σ H                        ≈ 0.718099
    //   vanilla             Σ ℓ / 3                           ≈ 0.699662
    const torch::Tensor pp = torch::tensor({ln3, ln3, ln3, 0.0, 0.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 3});
    const torch::Tensor py = torch::tensor({0.0, ln3, 0.0, 0.0, 0.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 3});
    const torch::Tensor y = torch::tensor({0, 0, 1}, torch::kLong).reshape({1, 1, 3});
    const double H[3] = {ln2, ln4 - 0.75 * ln3, ln2};
    const double l[3] = {0.5 * (ln4 - 0.5 * ln3) + 0.5 * (ln4 - ln3), 0.5 * (ln4 - 0.75 * ln3) + 0.5 * (ln4 - ln3),
                         0.5 * (ln4 - 0.5 * ln3) + 0.5 * ln4};
    const double class_wise_entropy = ((H[0] * l[0] + H[1] * l[1]) / (H[0] + H[1]) + l[2]) / 2;
    const double class_wise = ((l[0] + l[1]) / 2 + l[2]) / 2;
    const double entropy = (H[0] * l[0] + H[1] * l[1] + H[2] * l[2]) / (H[0] + H[1] + H[2]);
    const double vanilla = (l[0] + l[1] + l[2]) / 3;
    REQUIRE(class_wise_entropy == Approx(0.806234).epsilon(1e-6));
    REQUIRE(class_wise == Approx(0.802657).epsilon(1e-6));
    REQUIRE(entropy == Approx(0.718099).epsilon(1e-6));
    REQUIRE(vanilla == Approx(0.699662).epsilon(1e-6));
    const auto kl = [&](bool e, bool cw) {
      return F::entropy_aware_kl(pp, py, y, cac::EntropyAwareKLOptions().entropy_weighted(e).class_wise(cw))
          .item<double>();
    };
    REQUIRE(kl(true, true) == Approx(class_wise_entropy).epsilon(1e-10));
    REQUIRE(kl(false, true) == Approx(class_wise).epsilon(1e-10));
    REQUIRE(kl(true, false) == Approx(entropy).epsilon(1e-10));
    REQUIRE(kl(false, false) == Approx(vanilla).epsilon(1e-10));
  }
  SECTION("entropy_aware_kl: a present class whose pixels all have zero entropy still counts") {
    // 1×2 pixels, n = 2, labels [0, 1], student pp = 0 → log σ = (−ln 2, −ln 2).
    // Teacher py = (0, 0) → H = ln 2; (1e4, 0) → q = (1, 0) exactly, H = 0.
    // w = 0.5: ℓ0 = 0.5·ln 2 + 0.5·ln 2 = ln 2. L_0 = ln 2; L_1 = 0 / (0 + 1e-12) = 0.
    // Class 1 is present (in y), so the mean is over 2 classes: (ln 2 + 0) / 2. Same in float32
    // and float64 (in float64 log(1 + 1e-12) > 0 must not turn H into a negative weight).
    const torch::Tensor pp = torch::zeros({1, 2, 1, 2}, torch::kDouble);
    const torch::Tensor py = torch::tensor({0.0, 1e4, 0.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 2});
    const torch::Tensor y = torch::tensor({0, 1}, torch::kLong).reshape({1, 1, 2});
    REQUIRE(F::entropy_aware_kl(pp.to(torch::kFloat), py.to(torch::kFloat), y).item<double>() ==
            Approx(ln2 / 2).epsilon(1e-6));
    REQUIRE(F::entropy_aware_kl(pp, py, y).item<double>() == Approx(ln2 / 2).epsilon(1e-10));
  }
  SECTION("context_aware_loss") {
    // 1×2 pixels, n = 2, labels [0, 1]; no resize, no distillation (kl_weight 0).
    // p  = (0,0), (ln 3, 0): CE = (ln 2 + ln 4)/2 = 1.5 ln 2 ≈ 1.039721.
    // pp = 0 everywhere: CE = ln 2.
    // py = (ln 3, 0) everywhere: CE = (ln 4/3 + ln 4)/2 ≈ 0.836988.
    // total = 1·1.039721 + 0.5·ln 2 + 2·0.836988 ≈ 3.060271.
    const torch::Tensor logits = torch::tensor({0.0, ln3, 0.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 2});
    const torch::Tensor oracle = torch::tensor({ln3, ln3, 0.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 2});
    const torch::Tensor y = torch::tensor({0, 1}, torch::kLong).reshape({1, 1, 2});
    const auto options = cac::ContextAwareLossOptions().kl_weight(0).context_weight(0.5).oracle_weight(2.0);
    const cac::ContextAwareLosses got = F::context_aware_loss({logits, torch::zeros_like(logits), oracle}, y, options);
    REQUIRE(got.logits_ce.item<double>() == Approx(1.5 * ln2).epsilon(1e-12));
    REQUIRE(got.context_ce.item<double>() == Approx(ln2).epsilon(1e-12));
    REQUIRE(got.oracle_ce.item<double>() == Approx((std::log(4.0 / 3.0) + ln4) / 2).epsilon(1e-12));
    REQUIRE(got.total.item<double>() == Approx(3.060271).epsilon(1e-6));
  }
  SECTION("resize_labels") {
    // in 3 → out 5: scale 0.6, src = floor(0, 0.6, 1.2, 1.8, 2.4) = 0, 0, 1, 1, 2.
    // in 3 → out 2: scale 1.5, src = floor(0, 1.5) = 0, 1.   in 3 → out 6 (2x): src = dst >> 1.
    const torch::Tensor y = torch::tensor({10, 11, 12}, torch::kLong).reshape({1, 3});
    REQUIRE(torch::equal(F::resize_labels(y, {5}), torch::tensor({10, 10, 11, 11, 12}, torch::kLong).reshape({1, 5})));
    REQUIRE(torch::equal(F::resize_labels(y, {2}), torch::tensor({10, 11}, torch::kLong).reshape({1, 2})));
    REQUIRE(
        torch::equal(F::resize_labels(y, {6}), torch::tensor({10, 10, 11, 11, 12, 12}, torch::kLong).reshape({1, 6})));
    // 2×2 [[0,1],[2,3]] → 3×3: scale 2/3, src = floor(0, 0.67, 1.33) = 0, 0, 1 on both axes.
    const torch::Tensor y2 = torch::tensor({0, 1, 2, 3}, torch::kLong).reshape({1, 2, 2});
    REQUIRE(torch::equal(F::resize_labels(y2, {3, 3}),
                         torch::tensor({0, 0, 1, 0, 0, 1, 2, 2, 3}, torch::kLong).reshape({1, 3, 3})));
  }
}

// =============================================================================================
// Finite-difference gradients (double)

TEST_CASE("gradients match finite differences", "[functional]") {
  const Case& c = kTiny;
  const Inputs in = make_inputs(c, 90, {8, 8});
  const torch::Tensor f = leaf(in.f), C = leaf(in.C), p = leaf(in.p), s = leaf(in.s);
  const cac::ProjectorWeights& t = in.theta;
  const torch::Tensor fc1 = leaf(t.fc1_weight), fc2 = leaf(t.fc2_weight), b2 = leaf(t.fc2_bias);

  SECTION("soft_prototypes: features and logits") {
    require_gradcheck([](const std::vector<torch::Tensor>& x) { return F::soft_prototypes(x[0], x[1]); }, {f, p});
  }
  SECTION("ground_truth_prototypes: features (both scopes); the classifier gets no gradient") {
    for (auto scope : {cac::OracleScope::Batch, cac::OracleScope::Image}) {
      const auto options = cac::GroundTruthPrototypesFuncOptions().scope(scope);
      require_gradcheck(
          [&](const std::vector<torch::Tensor>& x) { return F::ground_truth_prototypes(x[0], in.C, in.y, options); },
          {f});
      // Absent classes use a detached copy of C: nothing flows back to it.
      const torch::Tensor weight = leaf(in.C);
      const torch::Tensor features = leaf(in.f);
      F::ground_truth_prototypes(features, weight, in.y, options).sum().backward();
      REQUIRE(features.grad().defined());
      REQUIRE(!weight.grad().defined());
    }
  }
  SECTION("cosine_logits: features and weight [n, d] / [B, n, d]") {
    require_gradcheck([](const std::vector<torch::Tensor>& x) { return F::cosine_logits(x[0], x[1], 15.0); }, {f, C});
    require_gradcheck([](const std::vector<torch::Tensor>& x) { return F::cosine_logits(x[0], x[1], 3.0); },
                      {f, leaf(per_image_weight(in.C, c.B))});
  }
  SECTION("context_logits: features, classifier, logits and the projector's weights") {
    require_gradcheck(
        [&](const std::vector<torch::Tensor>& x) {
          return F::context_logits(x[0], x[1], x[2], {x[3], x[4], x[5]}, head_options(c));
        },
        {f, C, p, fc1, fc2, b2});
  }
  SECTION("oracle_logits: features, classifier (every class present) and the projector's weights") {
    const torch::Tensor y = every_class_labels(c.B, {8, 8}, c.n);
    for (auto scope : {cac::OracleScope::Batch, cac::OracleScope::Image}) {
      require_gradcheck(
          [&](const std::vector<torch::Tensor>& x) {
            return F::oracle_logits(x[0], x[1], y, {x[2], x[3], x[4]}, head_options(c, 15.0, scope));
          },
          {f, C, fc1, fc2, b2});
    }
  }
  SECTION("oracle_logits: features with absent and ignored classes") {
    require_gradcheck(
        [&](const std::vector<torch::Tensor>& x) {
          return F::oracle_logits(x[0], in.C, in.y.clamp_max(1).masked_fill(in.y == 255, 255), in.theta,
                                  head_options(c, 15.0, cac::OracleScope::Image));
        },
        {f});
  }
  SECTION("entropy_aware_kl: student, every option; the teacher gets no gradient") {
    for (double w : {0.0, 0.5, 1.0}) {
      for (bool entropy : {false, true}) {
        for (bool class_wise : {false, true}) {
          INFO("teacher_weight " << w << " entropy " << entropy << " class_wise " << class_wise);
          const auto options =
              cac::EntropyAwareKLOptions().teacher_weight(w).entropy_weighted(entropy).class_wise(class_wise);
          require_gradcheck(
              [&](const std::vector<torch::Tensor>& x) { return F::entropy_aware_kl(x[0], in.q, in.y, options); }, {s});
        }
      }
    }
    const torch::Tensor teacher = leaf(in.q);
    F::entropy_aware_kl(s, teacher, in.y).backward();
    REQUIRE((!teacher.grad().defined() || teacher.grad().abs().max().item<double>() == 0.0));
  }
  SECTION("context_aware_loss: p and pp with the distillation on; py with it off") {
    for (bool align : {false, true}) {
      const auto options = cac::ContextAwareLossOptions().align_corners(align).kl_weight(0.7);
      require_gradcheck(
          [&](const std::vector<torch::Tensor>& x) {
            return F::context_aware_loss({x[0], x[1], in.q}, in.y, options).total;
          },
          {p, s});
      const auto no_kl = cac::ContextAwareLossOptions().align_corners(align).kl_weight(0);
      require_gradcheck(
          [&](const std::vector<torch::Tensor>& x) {
            return F::context_aware_loss({in.p, in.s, x[0]}, in.y, no_kl).total;
          },
          {leaf(in.q)});
    }
  }
  SECTION("context_aware_loss: py's gradient is its cross-entropy's only (the distillation is detached)") {
    const torch::Tensor with_kl = leaf(in.q), without_kl = leaf(in.q);
    F::context_aware_loss({in.p, in.s, with_kl}, in.y).total.backward();
    F::context_aware_loss({in.p, in.s, without_kl}, in.y, cac::ContextAwareLossOptions().kl_weight(0)).total.backward();
    REQUIRE(with_kl.grad().abs().max().item<double>() > 0);
    REQUIRE_CLOSE(with_kl.grad(), without_kl.grad(), 1e-12, 1e-15);
  }
}

// =============================================================================================
// Input validation

TEST_CASE("bad inputs raise c10::Error naming the function", "[functional]") {
  const Case& c = kTiny;  // B = 2, d = 4, n = 3, 4×4
  const Inputs in = make_inputs(c, 100);
  const torch::Tensor f = in.f, C = in.C, p = in.p, y = in.y;
  const cac::ProjectorWeights& theta = in.theta;
  const auto options = head_options(c);
  const torch::Tensor float_labels = y.to(torch::kFloat);
  const torch::Tensor label_3 = y.masked_fill(y == 0, 3);    // 3 is out of [0, 3)
  const torch::Tensor label_m1 = y.masked_fill(y == 0, -1);  // -1 is neither a class nor ignore
  const torch::Tensor labels_b3 = torch::zeros({3, 4, 4}, torch::kLong);
  const torch::Tensor labels_1d = torch::zeros({2, 16}, torch::kLong);

  SECTION("soft_prototypes") {
    const std::string who = "cac::functional::soft_prototypes: expected ";
    REQUIRE_CAC_ERROR(F::soft_prototypes(f.flatten(1), p),
                      who + "features of shape [B, d, *spatial] with at least one spatial dim but got [2, 64]");
    REQUIRE_CAC_ERROR(F::soft_prototypes(f.to(torch::kLong), p), who + "floating-point features but got dtype Long");
    REQUIRE_CAC_ERROR(F::soft_prototypes(f, torch::zeros({2, 3, 4, 5}, torch::kDouble)),
                      who + "logits of shape [2, 3, ");
    REQUIRE_CAC_ERROR(F::soft_prototypes(f, torch::zeros({3, 3, 4, 4}, torch::kDouble)), "but got [3, 3, 4, 4]");
    REQUIRE_CAC_ERROR(F::soft_prototypes(f, p.flatten(2)), who + "logits of shape [2, 3, ");
    REQUIRE_CAC_ERROR(F::soft_prototypes(f, p.to(torch::kFloat)),
                      who + "logits of the features' dtype Double but got Float");
    REQUIRE_CAC_ERROR(F::soft_prototypes(f, torch::Tensor()), who + "logits of shape [B, n, *spatial]");
    REQUIRE_CAC_ERROR(F::soft_prototypes(torch::Tensor(), p), who + "a defined features tensor");
    REQUIRE_CAC_ERROR(F::soft_prototypes(f.narrow(3, 0, 0), p.narrow(3, 0, 0)),
                      who + "features with non-empty spatial dims but got [2, 4, 4, 0] (spatial dim 1 is 0)");
  }
  SECTION("ground_truth_prototypes") {
    const std::string who = "cac::functional::ground_truth_prototypes: expected ";
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, torch::zeros({3, 5}, torch::kDouble), y),
                      who + "classifier_weight with d = 4 columns (the features' channels) but got [3, 5]");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, torch::zeros({3}, torch::kDouble), y),
                      who + "classifier_weight of shape [n, d] or [n, d, 1, ...] but got [3]");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, torch::zeros({3, 4, 2}, torch::kDouble), y),
                      who + "classifier_weight of shape [n, d] or [n, d, 1, ...] but got [3, 4, 2]");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, C.to(torch::kFloat), y),
                      who + "classifier_weight of the features' dtype Double but got Float");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, C, float_labels), who + "integer labels but got dtype Float");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, C, label_3),
                      who + "label values in [0, 3) or ignore_index 255 but got 3");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, C, label_m1),
                      who + "label values in [0, 3) or ignore_index 255 but got -1");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, C, y, cac::GroundTruthPrototypesFuncOptions().ignore_index(7)),
                      who + "label values in [0, 3) or ignore_index 7 but got 255");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, C, labels_b3),
                      who + "labels of shape [2, 2 spatial dims] but got [3, 4, 4]");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f, C, labels_1d),
                      who + "labels of shape [2, 2 spatial dims] but got [2, 16]");
    REQUIRE_CAC_ERROR(F::ground_truth_prototypes(f.flatten(1), C, y), who + "features of shape [B, d, *spatial]");
  }
  SECTION("cosine_logits") {
    const std::string who = "cac::functional::cosine_logits: expected ";
    REQUIRE_CAC_ERROR(F::cosine_logits(f, C, 0.0), who + "tau > 0 but got 0");
    REQUIRE_CAC_ERROR(F::cosine_logits(f, C, -1.5), who + "tau > 0 but got -1.5");
    REQUIRE_CAC_ERROR(F::cosine_logits(f, C, std::nan("")), who + "tau > 0 but got nan");
    REQUIRE_CAC_ERROR(F::cosine_logits(f, C, std::numeric_limits<double>::infinity()),
                      who + "tau > 0 and finite but got inf");
    REQUIRE_CAC_ERROR(F::cosine_logits(f.narrow(2, 0, 0), C),
                      who + "features with non-empty spatial dims but got [2, 4, 0, 4] (spatial dim 0 is 0)");
    REQUIRE_CAC_ERROR(F::cosine_logits(f, torch::zeros({3, 5}, torch::kDouble)),
                      who + "weight of shape [n, 4] or [2, n, 4] but got [3, 5]");
    REQUIRE_CAC_ERROR(F::cosine_logits(f, torch::zeros({3, 3, 4}, torch::kDouble)),
                      who + "weight of shape [n, 4] or [2, n, 4] but got [3, 3, 4]");
    REQUIRE_CAC_ERROR(F::cosine_logits(f, torch::zeros({4}, torch::kDouble)),
                      who + "weight of shape [n, 4] or [2, n, 4] but got [4]");
    REQUIRE_CAC_ERROR(F::cosine_logits(f, torch::Tensor()), who + "weight of shape [n, 4] or [2, n, 4] but got []");
    REQUIRE_CAC_ERROR(F::cosine_logits(f, C.to(torch::kFloat)),
                      who + "weight of the features' dtype Double but got Float");
    REQUIRE_CAC_ERROR(F::cosine_logits(f.flatten(1), C), who + "features of shape [B, d, *spatial]");
    REQUIRE_CAC_ERROR(F::cosine_logits(f.to(torch::kInt), C.to(torch::kInt)),
                      who + "floating-point features but got dtype Int");
  }
  SECTION("context_logits") {
    const std::string who = "cac::functional::context_logits: expected ";
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p, theta, head_options(c, 0.0)), who + "tau > 0 but got 0");
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p, theta, head_options(c, -2.0)), who + "tau > 0 but got -2");
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p, theta, cac::ContextAwareHeadOptions(5, 3)),
                      who + "features of shape [B, 5, *spatial] (d = 5) but got [2, 4, 4, 4]");
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p, theta, cac::ContextAwareHeadOptions(4, 2)),
                      who + "classifier_weight with n = 2 rows (num_classes) but got [3, 4]");
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p.narrow(1, 0, 2), theta, options), who + "logits of shape [2, 3, ");
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p.narrow(3, 0, 3), theta, options), "but got [2, 3, 4, 3]");
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p.to(torch::kFloat), theta, options),
                      who + "logits of the features' dtype Double but got Float");
    REQUIRE_CAC_ERROR(F::context_logits(f, C.to(torch::kFloat), p, theta, options),
                      who + "classifier_weight of the features' dtype Double but got Float");
    cac::ProjectorWeights bad = theta;
    bad.fc1_weight = torch::zeros({2, 7}, torch::kDouble);
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p, bad, options),
                      who + "projector fc1_weight of shape [h, 8] but got [2, 7]");
    bad.fc1_weight = torch::Tensor();
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p, bad, options),
                      who + "projector fc1_weight of shape [h, 8] but got []");
    bad = theta;
    bad.fc2_weight = torch::zeros({5, 2}, torch::kDouble);
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p, bad, options),
                      who + "projector fc2_weight of shape [4, 2] but got [5, 2]");
    bad = theta;
    bad.fc2_bias = torch::zeros({5}, torch::kDouble);
    REQUIRE_CAC_ERROR(F::context_logits(f, C, p, bad, options), who + "projector fc2_bias");
  }
  SECTION("oracle_logits") {
    const std::string who = "cac::functional::oracle_logits: expected ";
    REQUIRE_CAC_ERROR(F::oracle_logits(f, C, y, theta, head_options(c, 0.0)), who + "tau > 0 but got 0");
    REQUIRE_CAC_ERROR(F::oracle_logits(f, C, float_labels, theta, options), who + "integer labels but got dtype Float");
    REQUIRE_CAC_ERROR(F::oracle_logits(f, C, label_3, theta, options),
                      who + "label values in [0, 3) or ignore_index 255 but got 3");
    REQUIRE_CAC_ERROR(F::oracle_logits(f, C, label_m1, theta, options), "but got -1");
    REQUIRE_CAC_ERROR(F::oracle_logits(f, C, labels_b3, theta, options),
                      who + "labels of shape [2, 2 spatial dims] but got [3, 4, 4]");
    REQUIRE_CAC_ERROR(F::oracle_logits(f, C, labels_1d, theta, options), who + "labels of shape [2, 2 spatial dims]");
    REQUIRE_CAC_ERROR(F::oracle_logits(f, C, y, theta, cac::ContextAwareHeadOptions(6, 3)),
                      who + "features of shape [B, 6, *spatial] (d = 6)");
    REQUIRE_CAC_ERROR(F::oracle_logits(f, torch::zeros({3, 5}, torch::kDouble), y, theta, options),
                      who + "classifier_weight with d = 4 columns");
    cac::ProjectorWeights bad = theta;
    bad.fc2_weight = torch::zeros({4, 3}, torch::kDouble);
    REQUIRE_CAC_ERROR(F::oracle_logits(f, C, y, bad, options),
                      who + "projector fc2_weight of shape [4, 2] but got [4, 3]");
  }
  SECTION("entropy_aware_kl") {
    const std::string who = "cac::functional::entropy_aware_kl: expected ";
    const torch::Tensor s = in.s, q = in.q;
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q, y, cac::EntropyAwareKLOptions().teacher_weight(1.5)),
                      who + "teacher_weight in [0, 1] but got 1.5");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q, y, cac::EntropyAwareKLOptions().teacher_weight(-0.25)),
                      who + "teacher_weight in [0, 1] but got -0.25");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q.narrow(3, 0, 3), y), who + "teacher of shape [2, 3, ");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q.narrow(1, 0, 2), y), who + "teacher of shape [2, 3, ");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q.narrow(0, 0, 1), y), who + "teacher of shape [2, 3, ");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q.to(torch::kFloat), y), who + "teacher of the features' dtype Double");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s.flatten(1), q.flatten(1), y.flatten(1)), who);
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q, float_labels), who + "integer labels but got dtype Float");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q, label_3), who + "label values in [0, 3) or ignore_index 255 but got 3");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q, labels_b3),
                      who + "labels of shape [2, 2 spatial dims] but got [3, 4, 4]");
    REQUIRE_CAC_ERROR(F::entropy_aware_kl(s, q, labels_1d),
                      who + "labels of shape [2, 2 spatial dims] but got [2, 16]");
  }
  SECTION("context_aware_loss") {
    const std::string who = "cac::functional::context_aware_loss: expected ";
    const cac::ContextAwareOutput out{in.p, in.s, in.q};
    REQUIRE_CAC_ERROR(F::context_aware_loss(
                          out, y, cac::ContextAwareLossOptions().kl(cac::EntropyAwareKLOptions().teacher_weight(2.0))),
                      who + "teacher_weight in [0, 1] but got 2");
    REQUIRE_CAC_ERROR(F::context_aware_loss({in.p, torch::Tensor(), in.q}, y), who);
    const torch::Tensor six_d = torch::zeros({2, 3, 2, 2, 2, 2}, torch::kDouble);
    REQUIRE_CAC_ERROR(F::context_aware_loss({six_d, six_d, six_d}, torch::zeros({2, 2, 2, 2, 2}, torch::kLong)),
                      who + "context_logits with 1 to 3 spatial dims but got [2, 3, 2, 2, 2, 2]");
    REQUIRE_CAC_ERROR(F::context_aware_loss({in.p.narrow(1, 0, 2), in.s, in.q}, y), who + "logits of shape [2, 3, ");
    REQUIRE_CAC_ERROR(F::context_aware_loss({in.p, in.s, in.q.narrow(2, 0, 2)}, y),
                      who + "oracle_logits of shape [2, 3, ");
    REQUIRE_CAC_ERROR(F::context_aware_loss({in.p.to(torch::kFloat), in.s, in.q}, y),
                      who + "logits of the features' dtype Double but got Float");
    REQUIRE_CAC_ERROR(F::context_aware_loss({torch::Tensor(), in.s, in.q}, y),
                      who + "defined logits (p) for logits_weight 1");
    REQUIRE_CAC_ERROR(F::context_aware_loss({in.p, in.s, torch::Tensor()}, y),
                      who + "defined oracle_logits (py, from forward_train) for oracle_weight 1 and kl_weight 1");
    REQUIRE_CAC_ERROR(
        F::context_aware_loss({in.p, in.s, torch::Tensor()}, y, cac::ContextAwareLossOptions().oracle_weight(0)),
        who + "defined oracle_logits (py, from forward_train) for oracle_weight 0 and kl_weight 1");
    REQUIRE_CAC_ERROR(F::context_aware_loss(out, float_labels), who + "integer labels but got dtype Float");
    REQUIRE_CAC_ERROR(F::context_aware_loss(out, label_3),
                      who + "label values in [0, 3) or ignore_index 255 but got 3");
    REQUIRE_CAC_ERROR(F::context_aware_loss(out, y.masked_fill(y == 255, 254)),
                      who + "label values in [0, 3) or ignore_index 255 but got 254");
    REQUIRE_CAC_ERROR(F::context_aware_loss(out, labels_b3),
                      who + "labels of shape [2, 2 spatial dims] but got [3, 4, 4]");
    REQUIRE_CAC_ERROR(F::context_aware_loss(out, labels_1d),
                      who + "labels of shape [2, 2 spatial dims] but got [2, 16]");
  }
  SECTION("resize_labels: wrong rank or an undefined tensor") {
    const std::string who = "cac::functional::resize_labels: expected ";
    REQUIRE_CAC_ERROR(F::resize_labels(y, {3}), who + "labels of shape [B, 1 spatial dims] but got [2, 4, 4]");
    REQUIRE_CAC_ERROR(F::resize_labels(y, {3, 3, 3}), who + "labels of shape [B, 3 spatial dims] but got [2, 4, 4]");
    REQUIRE_CAC_ERROR(F::resize_labels(torch::Tensor(), {3}), who + "labels of shape [B, 1 spatial dims] but got []");
  }
  SECTION("resize_labels: float labels") {
    REQUIRE_CAC_ERROR(F::resize_labels(float_labels, {3, 3}),
                      "cac::functional::resize_labels: expected integer labels");
  }
  SECTION("resize_labels: a negative output size") {
    REQUIRE_CAC_ERROR(F::resize_labels(y, {-1, 4}), "cac::functional::resize_labels: expected");
  }
}

// =============================================================================================
// Edge cases

TEST_CASE("edge cases give finite, documented values", "[functional]") {
  const Case& c = kTiny;
  const Inputs in = make_inputs(c, 110);
  const auto image = cac::GroundTruthPrototypesFuncOptions().scope(cac::OracleScope::Image);

  SECTION("all labels ignored") {
    const torch::Tensor y = torch::full({c.B, 4, 4}, 255, torch::kLong);
    // Every class absent: the prototypes are the classifier rows.
    REQUIRE(torch::equal(F::ground_truth_prototypes(in.f, in.C, y), in.C));
    REQUIRE(torch::equal(F::ground_truth_prototypes(in.f, in.C, y, image), in.C.expand({c.B, c.n, c.d})));
    REQUIRE(all_finite(F::oracle_logits(in.f, in.C, y, in.theta, head_options(c))));
    for (bool class_wise : {false, true}) {
      const torch::Tensor s = leaf(in.s);
      const torch::Tensor kl = F::entropy_aware_kl(s, in.q, y, cac::EntropyAwareKLOptions().class_wise(class_wise));
      REQUIRE(kl.item<double>() == 0.0);
      kl.backward();
      REQUIRE(s.grad().defined());
      REQUIRE(s.grad().abs().max().item<double>() == 0.0);
    }
    const cac::ContextAwareLosses losses = F::context_aware_loss({in.p, in.s, in.q}, y);
    for (const torch::Tensor& term : {losses.total, losses.logits_ce, losses.context_ce, losses.oracle_ce, losses.kl})
      REQUIRE(term.item<double>() == 0.0);
  }
  SECTION("B = 1: batch scope equals image scope") {
    const Inputs one = make_inputs({1, 4, 3, {4, 4}}, 111);
    REQUIRE_CLOSE(F::ground_truth_prototypes(one.f, one.C, one.y),
                  F::ground_truth_prototypes(one.f, one.C, one.y, image)[0], 1e-12, 0);
    const cac::ContextAwareHeadOptions o(4, 3);
    REQUIRE_CLOSE(F::oracle_logits(one.f, one.C, one.y, one.theta, o),
                  F::oracle_logits(one.f, one.C, one.y, one.theta,
                                   cac::ContextAwareHeadOptions(o).oracle_scope(cac::OracleScope::Image)),
                  1e-12, 1e-12);
  }
  SECTION("a class present in one image only") {
    // Class 2 only in image 1 (pixel (0, 0)); everything else class 0.
    torch::Tensor y = torch::zeros({c.B, 4, 4}, torch::kLong);
    y[1][0][0] = 2;
    const torch::Tensor f1 = in.f[1].select(1, 0).select(1, 0);  // f[1, :, 0, 0]
    const torch::Tensor batch = F::ground_truth_prototypes(in.f, in.C, y);
    const torch::Tensor per_image = F::ground_truth_prototypes(in.f, in.C, y, image);
    REQUIRE_CLOSE(batch[2], f1, 1e-10, 1e-12);
    REQUIRE_CLOSE(per_image[1][2], f1, 1e-10, 1e-12);
    REQUIRE(torch::equal(per_image[0][2], in.C[2]));  // absent from image 0: classifier row
    REQUIRE(torch::equal(batch[1], in.C[1]));         // class 1 absent everywhere
    REQUIRE_CLOSE(batch[0], naive::ground_truth_prototypes(in.f, in.C, y, true, 255)[0], 1e-10, 1e-12);
  }
  SECTION("zero feature vectors: finite values and gradients") {
    torch::Tensor f0 = in.f.clone();
    f0.select(2, 0).zero_();  // first row of pixels of every image
    const torch::Tensor f = leaf(f0), C = leaf(in.C);
    const torch::Tensor cos = F::cosine_logits(f, C, 15.0);
    REQUIRE(cos.select(2, 0).abs().max().item<double>() == 0.0);  // cos(0, w) = 0
    cos.sum().backward();
    REQUIRE(all_finite(f.grad()));
    REQUIRE(all_finite(C.grad()));
    const torch::Tensor all_zero = leaf(torch::zeros_like(in.f));
    REQUIRE(F::soft_prototypes(all_zero, in.p).abs().max().item<double>() == 0.0);
    const torch::Tensor pp = F::context_logits(all_zero, in.C, in.p, in.theta, head_options(c));
    const torch::Tensor py = F::oracle_logits(all_zero, in.C, in.y, in.theta, head_options(c));
    REQUIRE(pp.abs().max().item<double>() == 0.0);
    REQUIRE(py.abs().max().item<double>() == 0.0);
    (pp.sum() + py.sum()).backward();
    REQUIRE(all_finite(all_zero.grad()));
    // A zero classifier row gives zero logits for that class.
    torch::Tensor W = in.C.clone();
    W[1].zero_();
    REQUIRE(F::cosine_logits(in.f, W).select(1, 1).abs().max().item<double>() == 0.0);
  }
  SECTION("logits of ±1e4") {
    const torch::Tensor big = torch::sign(in.p) * 1e4, big_q = torch::sign(in.q) * 1e4, big_s = torch::sign(in.s) * 1e4;
    const torch::Tensor prototypes = F::soft_prototypes(in.f, big);
    REQUIRE(all_finite(prototypes));
    REQUIRE_CLOSE(prototypes, naive::soft_prototypes(in.f, big), 1e-9, 1e-9);
    REQUIRE(all_finite(F::context_logits(in.f, in.C, big, in.theta, head_options(c))));
    for (bool entropy : {false, true}) {
      for (bool class_wise : {false, true}) {
        const auto options = cac::EntropyAwareKLOptions().entropy_weighted(entropy).class_wise(class_wise);
        const torch::Tensor s = leaf(big_s);
        const torch::Tensor kl = F::entropy_aware_kl(s, big_q, in.y, options);
        REQUIRE(std::isfinite(kl.item<double>()));
        REQUIRE(kl.item<double>() ==
                Approx(naive::distill(big_s, big_q, in.y, 0.5, entropy, class_wise, 255).item<double>()).epsilon(1e-9));
        kl.backward();
        REQUIRE(all_finite(s.grad()));
      }
    }
    const cac::ContextAwareLosses losses = F::context_aware_loss({big, big_s, big_q}, in.y);
    require_losses(losses, reference_losses({big, big_s, big_q}, in.y, {}), 1e-9);
  }
  SECTION("B = 0: output shapes") {
    const Case empty{0, 4, 3, {4, 4}};
    const Inputs e = make_inputs(empty, 112);
    REQUIRE(F::soft_prototypes(e.f, e.p).sizes() == torch::IntArrayRef({0, 3, 4}));
    REQUIRE(torch::equal(F::ground_truth_prototypes(e.f, e.C, e.y), e.C));  // no pixel: classifier rows
    REQUIRE(F::ground_truth_prototypes(e.f, e.C, e.y, image).sizes() == torch::IntArrayRef({0, 3, 4}));
    REQUIRE(F::cosine_logits(e.f, e.C).sizes() == torch::IntArrayRef({0, 3, 4, 4}));
    REQUIRE(F::context_logits(e.f, e.C, e.p, e.theta, head_options(empty)).sizes() == e.p.sizes());
    REQUIRE(F::oracle_logits(e.f, e.C, e.y, e.theta, head_options(empty)).sizes() == e.p.sizes());
    const torch::Tensor kl = F::entropy_aware_kl(e.s, e.q, e.y);
    REQUIRE(kl.dim() == 0);
    REQUIRE(kl.item<double>() == 0.0);
    const cac::ContextAwareLosses losses =
        F::context_aware_loss({e.p, e.s, e.q}, torch::zeros({0, 8, 8}, torch::kLong));
    REQUIRE(losses.total.dim() == 0);
    REQUIRE(losses.total.item<double>() == 0.0);
    REQUIRE(F::resize_labels(e.y, {7, 2}).sizes() == torch::IntArrayRef({0, 7, 2}));
  }
}

// =============================================================================================
// Dtypes and determinism

TEST_CASE("float32 agrees with float64 and keeps its dtype", "[functional]") {
  for (const Case& c : {cases()[0], cases()[1], cases()[2]}) {
    const Inputs in = make_inputs(c, 120, scaled(c.spatial, 2, 1));
    for (const Runner& r : runners(c)) {
      INFO(describe(c) << " " << r.name);
      const auto wide = r.run(in);
      const auto narrow = r.run(cast(in, torch::kFloat));
      for (size_t k = 0; k < wide.size(); ++k) {
        REQUIRE(wide[k].scalar_type() == torch::kDouble);
        REQUIRE(narrow[k].scalar_type() == torch::kFloat);
        const double scale = wide[k].numel() ? wide[k].abs().max().item<double>() : 0.0;
        REQUIRE_CLOSE(narrow[k], wide[k], 1e-4, 1e-5 * (1 + scale));
      }
    }
  }
}

TEST_CASE("half and bfloat16 inputs run in float32 and agree with it", "[functional]") {
  const Case& c = cases()[0];
  const Inputs in = make_inputs(c, 130, {8, 8});
  for (auto dtype : {torch::kHalf, torch::kBFloat16}) {
    // The reference is float32 maths on the same (rounded) inputs.
    const Inputs low = cast(in, dtype);
    const Inputs rounded = cast(low, torch::kFloat);
    for (const Runner& r : runners(c)) {
      INFO(c10::toString(dtype) << " " << r.name);
      const auto got = r.run(low);
      const auto want = r.run(rounded);
      for (size_t k = 0; k < got.size(); ++k) {
        REQUIRE(got[k].scalar_type() == (r.keeps_reduced_dtype ? dtype : torch::kFloat));
        const double scale = want[k].abs().max().item<double>();
        INFO("max |diff| " << cac_test::max_abs_diff(got[k], want[k]) << " scale " << scale);
        REQUIRE(cac_test::max_abs_diff(got[k], want[k]) <= 1e-2 * scale + 1e-6);
      }
    }
  }
}

TEST_CASE("two calls give bitwise-identical results", "[functional]") {
  for (const Case& c : {cases()[0], cases()[2]}) {
    const Inputs in = make_inputs(c, 140, scaled(c.spatial, 5, 3));
    for (auto dtype : {torch::kDouble, torch::kFloat}) {
      const Inputs typed = cast(in, dtype);
      for (const Runner& r : runners(c)) {
        INFO(describe(c) << " " << r.name << " " << c10::toString(dtype));
        const auto first = r.run(typed);
        const auto second = r.run(typed);
        for (size_t k = 0; k < first.size(); ++k) REQUIRE(torch::equal(first[k], second[k]));
      }
    }
    REQUIRE(torch::equal(F::resize_labels(in.y, c.spatial), F::resize_labels(in.y, c.spatial)));
  }
}
