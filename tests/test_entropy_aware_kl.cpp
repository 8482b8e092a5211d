// Tests of the cac::EntropyAwareKL module (paper Eqs. 7-11 with the released label mixing).

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cac/cac.hpp>

#include "support/naive.hpp"
#include "support/test_support.hpp"

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Student pp, teacher py and labels y for B images of n classes on `spatial`, labels on
// `label_spatial` (default: the same grid).
struct Logits {
  torch::Tensor student, teacher, labels;
};

Logits make_logits(int64_t B, int64_t n, const std::vector<int64_t>& spatial, uint64_t seed,
                   std::vector<int64_t> label_spatial = {}) {
  if (label_spatial.empty()) label_spatial = spatial;
  return {naive::randn(naive::shape_of(B, n, spatial), seed) * 3,
          naive::randn(naive::shape_of(B, n, spatial), seed + 1) * 3,
          naive::random_labels(B, label_spatial, n, seed + 2)};
}

// The rows of the paper's Table 3: (entropy_weighted, class_wise).
struct Setting {
  const char* name;
  bool entropy, class_wise;
};
const Setting kTable3[] = {{"vanilla", false, false},
                           {"entropy", true, false},
                           {"class-wise", false, true},
                           {"class-wise entropy", true, true}};

cac::EntropyAwareKL make_kl(const Setting& s, double teacher_weight = 0.5) {
  return cac::EntropyAwareKL(
      cac::EntropyAwareKLOptions().teacher_weight(teacher_weight).entropy_weighted(s.entropy).class_wise(s.class_wise));
}

std::string printed(const cac::EntropyAwareKL& kl) {
  std::ostringstream stream;
  stream << *kl;
  return stream.str();
}

// Both the type and the text of a validation error.
#define REQUIRE_CAC_ERROR(expr, text)                   \
  do {                                                  \
    REQUIRE_THROWS_AS(expr, c10::Error);                \
    REQUIRE_THROWS_WITH(expr, Catch::StartsWith(text)); \
  } while (0)

}  // namespace

TEST_CASE("EntropyAwareKL prints its options", "[EntropyAwareKL]") {
  // Golden strings: the format written in EntropyAwareKLImpl::pretty_print (entropy_aware_kl.hpp).
  const cac::EntropyAwareKL defaults;
  REQUIRE(c10::str(*defaults) ==
          "cac::EntropyAwareKL(teacher_weight=0.5, entropy_weighted=true, class_wise=true, ignore_index=255)");
  REQUIRE(printed(defaults) == c10::str(*defaults));
  const cac::EntropyAwareKL custom(
      cac::EntropyAwareKLOptions().teacher_weight(1.0).entropy_weighted(false).class_wise(true).ignore_index(-1));
  REQUIRE(printed(custom) ==
          "cac::EntropyAwareKL(teacher_weight=1, entropy_weighted=false, class_wise=true, ignore_index=-1)");
  const cac::EntropyAwareKL quarter(cac::EntropyAwareKLOptions().teacher_weight(0.25).class_wise(false));
  REQUIRE(printed(quarter) ==
          "cac::EntropyAwareKL(teacher_weight=0.25, entropy_weighted=true, class_wise=false, ignore_index=255)");
}

TEST_CASE("EntropyAwareKL: the four Table-3 settings match the naive loop", "[EntropyAwareKL]") {
  SECTION("2-D, 1-D and 3-D grids, teacher_weight 0.5, 1 and 0") {
    const std::vector<std::vector<int64_t>> grids{{5, 4}, {9}, {2, 3, 3}};
    for (const auto& grid : grids) {
      const Logits in = make_logits(3, 4, grid, 200);
      for (const Setting& s : kTable3) {
        for (double w : {0.5, 1.0, 0.0}) {
          INFO("grid " << at::IntArrayRef(grid) << ", " << s.name << ", teacher_weight " << w);
          auto kl = make_kl(s, w);
          const torch::Tensor got = kl->forward(in.student, in.teacher, in.labels);
          REQUIRE(got.dim() == 0);
          REQUIRE(got.scalar_type() == torch::kDouble);
          REQUIRE(
              got.item<double>() ==
              Approx(naive::distill(in.student, in.teacher, in.labels, w, s.entropy, s.class_wise, 255).item<double>())
                  .epsilon(1e-10));
          // The module is the functional with its options.
          REQUIRE(torch::equal(got, cac::functional::entropy_aware_kl(in.student, in.teacher, in.labels, kl->options)));
        }
      }
    }
  }
  SECTION("the four settings differ from each other on random inputs") {
    const Logits in = make_logits(2, 3, {4, 4}, 201);
    std::vector<double> values;
    for (const Setting& s : kTable3)
      values.push_back(make_kl(s)->forward(in.student, in.teacher, in.labels).item<double>());
    for (size_t i = 0; i < values.size(); ++i)
      for (size_t j = i + 1; j < values.size(); ++j) REQUIRE(std::abs(values[i] - values[j]) > 1e-6);
  }
}

TEST_CASE("EntropyAwareKL: teacher_weight 1 reproduces paper Eqs. 7, 10 and 11", "[EntropyAwareKL]") {
  // One image, 1×3 pixels, n = 2, labels [0, 0, 1].
  // Student pp = (ln 3, 0) at every pixel → log σ(pp) = (ln 3/4, ln 1/4).
  // Teacher py = (0, 0), (ln 3, 0), (0, 0) → σ(py) = (1/2, 1/2), (3/4, 1/4), (1/2, 1/2).
  // Eq. 9: H = ln 2, ln 4 − (3/4) ln 3 ≈ 0.562335, ln 2.
  // ℓ_i = −Σ_j σ(py)_ij log σ(pp)_ij: ℓ0 = ℓ2 = ln 4 − (1/2) ln 3 ≈ 0.836988, ℓ1 = ln 4 − (3/4) ln 3 ≈ 0.562335.
  // Eq. 11 (class-wise entropy): ((H0ℓ0 + H1ℓ1)/(H0 + H1) + H2ℓ2/H2) / 2 ≈ 0.775479.
  // Eq. 10 (entropy):            Σ Hℓ / Σ H                                ≈ 0.757729.
  // Eq. 7  (vanilla):            Σ ℓ / hw                                  ≈ 0.745437.
  // (Values worked out by hand and checked with Python's math module.)
  const double ln2 = std::log(2.0), ln3 = std::log(3.0), ln4 = std::log(4.0);
  const torch::Tensor pp = torch::tensor({ln3, ln3, ln3, 0.0, 0.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 3});
  const torch::Tensor py = torch::tensor({0.0, ln3, 0.0, 0.0, 0.0, 0.0}, torch::kDouble).reshape({1, 2, 1, 3});
  const torch::Tensor y = torch::tensor({0, 0, 1}, torch::kLong).reshape({1, 1, 3});
  const double H[3] = {ln2, ln4 - 0.75 * ln3, ln2};
  const double l[3] = {ln4 - 0.5 * ln3, ln4 - 0.75 * ln3, ln4 - 0.5 * ln3};
  const double eq11 = ((H[0] * l[0] + H[1] * l[1]) / (H[0] + H[1]) + l[2]) / 2;
  const double eq10 = (H[0] * l[0] + H[1] * l[1] + H[2] * l[2]) / (H[0] + H[1] + H[2]);
  const double eq7 = (l[0] + l[1] + l[2]) / 3;
  REQUIRE(eq11 == Approx(0.775479).epsilon(1e-6));
  REQUIRE(eq10 == Approx(0.757729).epsilon(1e-6));
  REQUIRE(eq7 == Approx(0.745437).epsilon(1e-6));
  const auto loss = [&](const Setting& s) { return make_kl(s, 1.0)->forward(pp, py, y).item<double>(); };
  REQUIRE(loss(kTable3[3]) == Approx(eq11).epsilon(1e-10));
  REQUIRE(loss(kTable3[1]) == Approx(eq10).epsilon(1e-10));
  REQUIRE(loss(kTable3[0]) == Approx(eq7).epsilon(1e-10));
  // Class-wise without entropy: ((ℓ0 + ℓ1)/2 + ℓ2) / 2.
  REQUIRE(loss(kTable3[2]) == Approx(((l[0] + l[1]) / 2 + l[2]) / 2).epsilon(1e-10));
}

TEST_CASE("EntropyAwareKL: gradients reach the student only", "[EntropyAwareKL]") {
  const Logits in = make_logits(2, 3, {4, 4}, 210, {7, 7});
  SECTION("finite differences w.r.t. the student, every setting") {
    for (const Setting& s : kTable3) {
      INFO(s.name);
      auto kl = make_kl(s);
      const cac_test::GradCheckResult result = cac_test::gradcheck(
          [&](const std::vector<torch::Tensor>& x) { return kl->forward(x[0], in.teacher, in.labels); },
          {in.student.clone().requires_grad_(true)});
      INFO("max |analytic - numeric| = " << result.max_error);
      REQUIRE(result.ok);
    }
  }
  SECTION("the teacher is detached") {
    const torch::Tensor student = in.student.clone().requires_grad_(true);
    const torch::Tensor teacher = in.teacher.clone().requires_grad_(true);
    cac::EntropyAwareKL kl;
    const torch::Tensor loss = kl->forward(student, teacher, in.labels);
    loss.backward();
    REQUIRE(student.grad().abs().max().item<double>() > 0);
    REQUIRE((!teacher.grad().defined() || teacher.grad().abs().max().item<double>() == 0.0));
    // With only the teacher requiring grad, the loss has no graph at all.
    REQUIRE(!kl->forward(in.student, teacher, in.labels).requires_grad());
  }
}

TEST_CASE("EntropyAwareKL: no present class gives exactly 0 with a zero gradient", "[EntropyAwareKL]") {
  const Logits in = make_logits(2, 3, {4, 4}, 220);
  const torch::Tensor ignored = torch::full({2, 4, 4}, 255, torch::kLong);
  for (const Setting& s : kTable3) {
    INFO(s.name);
    const torch::Tensor student = in.student.clone().requires_grad_(true);
    const torch::Tensor loss = make_kl(s)->forward(student, in.teacher, ignored);
    REQUIRE(loss.item<double>() == 0.0);
    loss.backward();
    REQUIRE(student.grad().defined());
    REQUIRE(student.grad().abs().max().item<double>() == 0.0);
  }
}

TEST_CASE("EntropyAwareKL: a confident teacher keeps the loss a weighted mean", "[EntropyAwareKL]") {
  // With a zero student, log σ(pp) = −ln n for every class, so every pixel's loss is ℓ = ln n
  // whatever the target. Each setting is a (class-wise) mean of ℓ with non-negative weights, so the
  // loss must lie in [0, ln n] (0 only for classes whose entropy mass vanishes). The teacher puts a
  // logit gap on one class per pixel; gaps ≥ ~32 make softmax(py) one-hot in float64.
  const int64_t n = 3;
  const Logits base = make_logits(2, n, {4, 4}, 225);
  const torch::Tensor winner = base.teacher.argmax(1, /*keepdim=*/true);
  for (double gap : {10.0, 30.0, 40.0, 100.0, 1e4}) {
    const torch::Tensor teacher = torch::zeros_like(base.teacher).scatter_(1, winner, gap);
    for (auto dtype : {torch::kDouble, torch::kFloat}) {
      for (const Setting& s : kTable3) {
        INFO("gap " << gap << ", " << c10::toString(dtype) << ", " << s.name);
        const double loss =
            make_kl(s)->forward(torch::zeros_like(teacher, dtype), teacher.to(dtype), base.labels).item<double>();
        CHECK(loss >= 0.0);
        CHECK(loss <= std::log(static_cast<double>(n)) * (1 + 1e-6));
      }
    }
  }
}

TEST_CASE("EntropyAwareKL: labels at another resolution are nearest-resized", "[EntropyAwareKL]") {
  const std::vector<std::vector<int64_t>> label_grids{{8, 8}, {6, 6}, {7, 5}, {2, 2}, {4, 4}};
  for (const auto& label_grid : label_grids) {
    INFO("labels " << at::IntArrayRef(label_grid));
    const Logits in = make_logits(2, 3, {4, 4}, 230, label_grid);
    cac::EntropyAwareKL kl;
    const torch::Tensor got = kl->forward(in.student, in.teacher, in.labels);
    // Same as passing labels already resized with PyTorch's nearest rule...
    REQUIRE(torch::equal(got, kl->forward(in.student, in.teacher, naive::resize_labels(in.labels, {4, 4}))));
    // ...and as the naive loop.
    REQUIRE(
        got.item<double>() ==
        Approx(naive::distill(in.student, in.teacher, in.labels, 0.5, true, true, 255).item<double>()).epsilon(1e-10));
  }
  SECTION("2x labels: only the top-left pixel of each 2×2 cell counts") {
    // Labels 4×4 whose top-left pixels (even row, even column) are 0 or 1 and all others 2;
    // resized to 2×2 (dst >> 1) only the top-left pixels survive, so class 2 is absent.
    const Logits in = make_logits(1, 3, {2, 2}, 231);
    torch::Tensor y = torch::full({1, 4, 4}, 2, torch::kLong);
    y.index_put_({0, torch::indexing::Slice(0, 4, 2), torch::indexing::Slice(0, 4, 2)},
                 torch::tensor({0, 1, 1, 0}, torch::kLong).reshape({2, 2}));
    const torch::Tensor top_left = torch::tensor({0, 1, 1, 0}, torch::kLong).reshape({1, 2, 2});
    cac::EntropyAwareKL kl;
    REQUIRE(torch::equal(kl->forward(in.student, in.teacher, y), kl->forward(in.student, in.teacher, top_left)));
  }
}

TEST_CASE("EntropyAwareKL: bad options and inputs raise c10::Error", "[EntropyAwareKL]") {
  SECTION("teacher_weight outside [0, 1]") {
    REQUIRE_CAC_ERROR(cac::EntropyAwareKL(cac::EntropyAwareKLOptions().teacher_weight(1.5)),
                      "cac::EntropyAwareKL: expected teacher_weight in [0, 1] but got 1.5");
    REQUIRE_CAC_ERROR(cac::EntropyAwareKL(cac::EntropyAwareKLOptions().teacher_weight(-0.1)),
                      "cac::EntropyAwareKL: expected teacher_weight in [0, 1] but got -0.1");
    REQUIRE_CAC_ERROR(cac::EntropyAwareKL(cac::EntropyAwareKLOptions().teacher_weight(std::nan(""))),
                      "cac::EntropyAwareKL: expected teacher_weight in [0, 1] but got nan");
    // The bounds themselves are valid, and reset() re-checks edited options.
    REQUIRE_NOTHROW(cac::EntropyAwareKL(cac::EntropyAwareKLOptions().teacher_weight(0.0)));
    cac::EntropyAwareKL kl(cac::EntropyAwareKLOptions().teacher_weight(1.0));
    kl->options.teacher_weight(3.0);
    REQUIRE_CAC_ERROR(kl->reset(), "cac::EntropyAwareKL: expected teacher_weight in [0, 1] but got 3");
  }
  SECTION("bad inputs") {
    const Logits in = make_logits(2, 3, {4, 4}, 240);
    const torch::Tensor &s = in.student, &q = in.teacher, &y = in.labels;
    cac::EntropyAwareKL kl;
    const std::string who = "cac::EntropyAwareKL: expected ";
    REQUIRE_CAC_ERROR(kl->forward(s, q.narrow(3, 0, 3), y), who + "teacher of shape [2, 3, ");
    REQUIRE_CAC_ERROR(kl->forward(s, q.narrow(1, 0, 2), y), who + "teacher of shape [2, 3, ");
    REQUIRE_CAC_ERROR(kl->forward(s, q.to(torch::kFloat), y),
                      who + "teacher of the features' dtype Double but got Float");
    REQUIRE_CAC_ERROR(kl->forward(s.flatten(1), q.flatten(1), y.flatten(1)), who);
    REQUIRE_CAC_ERROR(kl->forward(s.to(torch::kLong), q.to(torch::kLong), y), who);
    REQUIRE_CAC_ERROR(kl->forward(s, q, y.to(torch::kFloat)), who + "integer labels but got dtype Float");
    REQUIRE_CAC_ERROR(kl->forward(s, q, y.masked_fill(y == 0, 3)),
                      who + "label values in [0, 3) or ignore_index 255 but got 3");
    REQUIRE_CAC_ERROR(kl->forward(s, q, y.masked_fill(y == 0, -1)),
                      who + "label values in [0, 3) or ignore_index 255 but got -1");
    REQUIRE_CAC_ERROR(kl->forward(s, q, y.narrow(0, 0, 1)),
                      who + "labels of shape [2, 2 spatial dims] but got [1, 4, 4]");
    REQUIRE_CAC_ERROR(kl->forward(s, q, y.flatten(1)), who + "labels of shape [2, 2 spatial dims] but got [2, 16]");
  }
}

TEST_CASE("EntropyAwareKL: clone, reduced dtypes and determinism", "[EntropyAwareKL]") {
  const Logits in = make_logits(2, 3, {4, 4}, 250);
  cac::EntropyAwareKL kl(cac::EntropyAwareKLOptions().teacher_weight(0.75).class_wise(false));
  const torch::Tensor reference = kl->forward(in.student, in.teacher, in.labels);
  SECTION("a clone keeps the options") {
    const auto copy = std::dynamic_pointer_cast<cac::EntropyAwareKLImpl>(kl->clone());
    REQUIRE(copy);
    REQUIRE(copy->options.teacher_weight() == 0.75);
    REQUIRE(!copy->options.class_wise());
    REQUIRE(torch::equal(copy->forward(in.student, in.teacher, in.labels), reference));
  }
  SECTION("two calls are bitwise identical") {
    REQUIRE(torch::equal(kl->forward(in.student, in.teacher, in.labels), reference));
  }
  SECTION("float32, half and bfloat16 give float32 close to float64") {
    for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
      INFO(c10::toString(dtype));
      const torch::Tensor s = in.student.to(dtype), q = in.teacher.to(dtype);
      const torch::Tensor got = kl->forward(s, q, in.labels);
      REQUIRE(got.scalar_type() == torch::kFloat);  // documented: float32 for half/bfloat16
      // Against float64 maths on the same rounded inputs.
      const double want = kl->forward(s.to(torch::kDouble), q.to(torch::kDouble), in.labels).item<double>();
      REQUIRE(got.item<double>() == Approx(want).epsilon(dtype == torch::kFloat ? 1e-5 : 1e-3));
    }
  }
}
