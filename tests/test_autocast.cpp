// Mixed precision: cac::AutocastGuard, and every cac module and function under bfloat16 CPU
// autocast with no guard in the caller (docs/api.md, "Mixed precision"). Each result is compared
// with the same computation in float32 without autocast:
// - float32 inputs under autocast: cac switches autocast off for its maths, so outputs, and
//   gradients when backward() runs after the scope, are bit-identical to float32;
// - bfloat16 activations (what autocast's convolutions give) beside float32 parameters, or a
//   backward() inside the scope: equal to float32 within kTolerance, relative to the magnitude;
// and the dtypes docs/api.md documents.

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cac/cac.hpp>

#include "support/naive.hpp"
#include "support/test_support.hpp"

#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace F = cac::functional;

namespace {

// The bfloat16 tolerance. bfloat16 keeps 8 significant bits, so rounding an activation to it
// moves each element by up to u = 2^-8 ≈ 3.9e-3 of its value; cac then computes in float32, and
// its results (cosines, softmax-weighted means, pixel-averaged losses) move by a few u relative to
// their magnitude. A backward() inside the scope also runs LibTorch's own gradients of matrix
// products in bfloat16 (about u each). Measured: at most 1.5e-2 ≈ 4u of the largest |reference|
// (run with CAC_TEST_REPORT=1 to print every error); kTolerance = 8u = 2^-5 ≈ 3.1e-2 leaves a
// factor 2. A cac product re-cast to bfloat16 by autocast is caught by the bit-exact checks.
constexpr double kTolerance = 1.0 / 32;

// max |got − want| / max |want| (want ≠ 0), both in double.
double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  const torch::Tensor a = got.to(torch::kDouble), b = want.to(torch::kDouble);
  const double scale = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

// Checks `got` against `want` within kTolerance (relative), finite, same shape; with
// CAC_TEST_REPORT set, prints the error (the figures in the header comment).
void check_close(const std::string& what, const torch::Tensor& got, const torch::Tensor& want) {
  INFO(what);
  REQUIRE(got.defined() == want.defined());
  if (!got.defined()) return;
  REQUIRE(got.sizes() == want.sizes());
  REQUIRE(torch::isfinite(got).all().item<bool>());
  const double error = relative_error(got, want);
  if (std::getenv("CAC_TEST_REPORT")) std::cout << "autocast error " << what << ": " << error << "\n";
  INFO("relative error " << error);
  CHECK(error <= kTolerance);
}

// Checks that `got` equals `want` bit for bit (dtype included).
void check_equal(const std::string& what, const torch::Tensor& got, const torch::Tensor& want) {
  INFO(what);
  REQUIRE(got.defined() == want.defined());
  if (!got.defined()) return;
  CHECK(got.scalar_type() == want.scalar_type());
  CHECK(torch::equal(got, want));
}

// A fixed random weighting of every output element, so backward() sees all of them.
torch::Tensor projected_sum(const std::vector<torch::Tensor>& outputs) {
  torch::Tensor total = torch::zeros({}, torch::kFloat);
  uint64_t seed = 99;
  for (const torch::Tensor& out : outputs) {
    total = total + (out.to(torch::kFloat) * naive::randn(out.sizes().vec(), seed++, torch::kFloat)).sum();
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// The functionals

// Activations f (features), p (logits), s (student pp), q (teacher py); parameters C, θ; labels.
struct Inputs {
  torch::Tensor f, p, s, q, C, fc1, fc2, bias, y;
};

Inputs make_inputs(uint64_t seed) {
  const int64_t B = 2, d = 16, n = 5;
  const std::vector<int64_t> spatial{6, 5};
  Inputs in;
  in.f = naive::randn(naive::shape_of(B, d, spatial), seed, torch::kFloat);
  in.p = naive::randn(naive::shape_of(B, n, spatial), seed + 1, torch::kFloat) * 2;
  in.s = naive::randn(naive::shape_of(B, n, spatial), seed + 2, torch::kFloat) * 3;
  in.q = naive::randn(naive::shape_of(B, n, spatial), seed + 3, torch::kFloat) * 3;
  in.C = naive::randn({n, d}, seed + 4, torch::kFloat) * 0.1;
  const cac::ProjectorWeights theta = naive::random_projector(d, d / 2, seed + 5, torch::kFloat);
  in.fc1 = theta.fc1_weight;
  in.fc2 = theta.fc2_weight;
  in.bias = theta.fc2_bias;
  in.y = naive::random_labels(B, {12, 10}, n, seed + 6);  // at twice the features' resolution
  return in;
}

// Leaf copies requiring grad: activations in `activations`, parameters in float32.
Inputs leaves(const Inputs& in, torch::ScalarType activations) {
  Inputs out = in;
  for (torch::Tensor* t : {&out.f, &out.p, &out.s, &out.q}) *t = t->to(activations).detach().requires_grad_(true);
  for (torch::Tensor* t : {&out.C, &out.fc1, &out.fc2, &out.bias}) *t = t->detach().clone().requires_grad_(true);
  return out;
}

std::vector<torch::Tensor> grads(const Inputs& in) {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor* t : {&in.f, &in.p, &in.s, &in.q, &in.C, &in.fc1, &in.fc2, &in.bias}) {
    out.push_back(t->grad());
  }
  return out;
}

const char* const kGradNames[] = {"f", "p", "s", "q", "C", "fc1", "fc2", "bias"};

struct Runner {
  std::string name;
  std::function<std::vector<torch::Tensor>(const Inputs&)> run;
};

std::vector<Runner> functional_runners() {
  const auto options = cac::ContextAwareHeadOptions(16, 5);
  const auto theta = [](const Inputs& in) { return cac::ProjectorWeights{in.fc1, in.fc2, in.bias}; };
  const auto terms = [](const cac::ContextAwareLosses& l) {
    return std::vector<torch::Tensor>{l.total, l.logits_ce, l.context_ce, l.oracle_ce, l.kl};
  };
  const auto image = cac::GroundTruthPrototypesFuncOptions().scope(cac::OracleScope::Image);
  return {
      {"soft_prototypes", [](const Inputs& in) { return std::vector<torch::Tensor>{F::soft_prototypes(in.f, in.p)}; }},
      {"ground_truth_prototypes(Batch)",
       [](const Inputs& in) { return std::vector<torch::Tensor>{F::ground_truth_prototypes(in.f, in.C, in.y)}; }},
      {"ground_truth_prototypes(Image)",
       [image](const Inputs& in) {
         return std::vector<torch::Tensor>{F::ground_truth_prototypes(in.f, in.C, in.y, image)};
       }},
      {"cosine_logits",
       [](const Inputs& in) { return std::vector<torch::Tensor>{F::cosine_logits(in.f, in.C, 15.0)}; }},
      {"context_logits",
       [=](const Inputs& in) {
         return std::vector<torch::Tensor>{F::context_logits(in.f, in.C, in.p, theta(in), options)};
       }},
      {"oracle_logits",
       [=](const Inputs& in) {
         return std::vector<torch::Tensor>{F::oracle_logits(in.f, in.C, in.y, theta(in), options)};
       }},
      {"entropy_aware_kl",
       [](const Inputs& in) { return std::vector<torch::Tensor>{F::entropy_aware_kl(in.s, in.q, in.y)}; }},
      {"context_aware_loss",
       [=](const Inputs& in) {
         return terms(F::context_aware_loss({in.p, in.s, in.q}, in.y));
       }},
  };
}

// Outputs and gradients of `runner` on `in` (activations in `activations`), under bfloat16 CPU
// autocast when `autocast`, with backward() inside the autocast scope when `backward_inside`.
struct Result {
  std::vector<torch::Tensor> outputs, grads;
};

Result run(const Runner& runner, const Inputs& in, torch::ScalarType activations, bool autocast, bool backward_inside) {
  const Inputs x = leaves(in, activations);
  Result result;
  {
    cac::AutocastGuard guard(torch::kCPU, torch::kBFloat16, autocast);
    result.outputs = runner.run(x);
    if (backward_inside) projected_sum(result.outputs).backward();
  }
  if (!backward_inside) projected_sum(result.outputs).backward();
  result.grads = grads(x);
  return result;
}

}  // namespace

// =============================================================================================

TEST_CASE("AutocastGuard turns autocast on for a scope and restores the previous state", "[autocast]") {
  const auto a = torch::randn({3, 4}), b = torch::randn({4, 2});
  REQUIRE_FALSE(cac::autocast_enabled(torch::kCPU));
  SECTION("on in the scope, off after it; matrix products run in the scope's dtype") {
    {
      cac::AutocastGuard guard(torch::kCPU, torch::kBFloat16);
      CHECK(cac::autocast_enabled(torch::kCPU));
      CHECK_FALSE(cac::autocast_enabled(torch::kCUDA));
      CHECK(torch::mm(a, b).scalar_type() == torch::kBFloat16);
    }
    CHECK_FALSE(cac::autocast_enabled(torch::kCPU));
    CHECK(torch::mm(a, b).scalar_type() == torch::kFloat);
  }
  SECTION("nesting restores each level; enabled = false does nothing") {
    {
      cac::AutocastGuard outer(torch::kCPU, torch::kBFloat16);
      {
        cac::AutocastGuard off(torch::kCPU, torch::kBFloat16, /*enabled=*/false);
        CHECK(cac::autocast_enabled(torch::kCPU));  // a disabled guard does not switch autocast off
        {
          cac::AutocastGuard inner(torch::kCPU, torch::kBFloat16);
          CHECK(cac::autocast_enabled(torch::kCPU));
        }
        CHECK(cac::autocast_enabled(torch::kCPU));  // still on: the inner guard restored "on"
      }
      CHECK(cac::autocast_enabled(torch::kCPU));
    }
    CHECK_FALSE(cac::autocast_enabled(torch::kCPU));
    {
      cac::AutocastGuard off(torch::kCPU, torch::kBFloat16, /*enabled=*/false);
      CHECK_FALSE(cac::autocast_enabled(torch::kCPU));
      CHECK(torch::mm(a, b).scalar_type() == torch::kFloat);
    }
  }
  SECTION("the device's autocast dtype is restored (CUDA state is thread-local, no GPU needed)") {
    const auto before = cac::detail::autocast_get_dtype(torch::kCUDA);
    {
      cac::AutocastGuard outer(torch::kCUDA, torch::kHalf);
      CHECK(cac::autocast_enabled(torch::kCUDA));
      CHECK_FALSE(cac::autocast_enabled(torch::kCPU));
      CHECK(cac::detail::autocast_get_dtype(torch::kCUDA) == torch::kHalf);
      {
        cac::AutocastGuard inner(torch::kCUDA, torch::kBFloat16);
        CHECK(cac::detail::autocast_get_dtype(torch::kCUDA) == torch::kBFloat16);
      }
      CHECK(cac::detail::autocast_get_dtype(torch::kCUDA) == torch::kHalf);
      CHECK(cac::autocast_enabled(torch::kCUDA));
    }
    CHECK_FALSE(cac::autocast_enabled(torch::kCUDA));
    CHECK(cac::detail::autocast_get_dtype(torch::kCUDA) == before);
  }
  SECTION("invalid device types and dtypes") {
    CHECK_THROWS_AS(cac::AutocastGuard(torch::kCPU, torch::kFloat), c10::Error);
    CHECK_THROWS_WITH(cac::AutocastGuard(torch::kCPU, torch::kFloat),
                      Catch::StartsWith("cac::AutocastGuard: expected dtype bfloat16 or float16 but got Float"));
    CHECK_THROWS_WITH(cac::AutocastGuard(torch::kMeta, torch::kBFloat16),
                      Catch::StartsWith("cac::AutocastGuard: expected a CPU or CUDA device type but got meta"));
    CHECK_THROWS_WITH(cac::autocast_enabled(torch::kMeta),
                      Catch::StartsWith("cac::autocast_enabled: expected a CPU or CUDA device type but got meta"));
    CHECK_FALSE(cac::autocast_enabled(torch::kCPU));
  }
  SECTION("cac calls leave the caller's autocast on") {
    cac::ContextAwareHead head(cac::ContextAwareHeadOptions(4, 3));
    cac::AutocastGuard guard(torch::kCPU, torch::kBFloat16);
    head->forward(torch::randn({1, 4, 2, 2}), torch::randn({3, 4}), torch::randn({1, 3, 2, 2}));
    CHECK(cac::autocast_enabled(torch::kCPU));
    CHECK(torch::mm(a, b).scalar_type() == torch::kBFloat16);
  }
}

TEST_CASE("cac::functional under bfloat16 autocast equals float32", "[autocast]") {
  const Inputs in = make_inputs(7);
  for (const Runner& runner : functional_runners()) {
    INFO(runner.name);
    const Result reference = run(runner, in, torch::kFloat, /*autocast=*/false, false);
    SECTION(runner.name + ": float32 inputs, backward after the scope: bit-identical") {
      const Result got = run(runner, in, torch::kFloat, /*autocast=*/true, /*backward_inside=*/false);
      for (size_t k = 0; k < got.outputs.size(); ++k) check_equal("output", got.outputs[k], reference.outputs[k]);
      for (size_t k = 0; k < got.grads.size(); ++k) check_equal(kGradNames[k], got.grads[k], reference.grads[k]);
    }
    SECTION(runner.name + ": float32 inputs, backward inside the scope") {
      const Result got = run(runner, in, torch::kFloat, /*autocast=*/true, /*backward_inside=*/true);
      for (size_t k = 0; k < got.outputs.size(); ++k) check_equal("output", got.outputs[k], reference.outputs[k]);
      for (size_t k = 0; k < got.grads.size(); ++k) {
        check_close(runner.name + " float32 backward inside, grad " + kGradNames[k], got.grads[k], reference.grads[k]);
      }
    }
    SECTION(runner.name + ": bfloat16 activations (autocast's), backward inside and after the scope") {
      for (bool inside : {true, false}) {
        const Result got = run(runner, in, torch::kBFloat16, /*autocast=*/true, inside);
        const std::string how = runner.name + (inside ? " bf16 backward inside, " : " bf16 backward after, ");
        for (size_t k = 0; k < got.outputs.size(); ++k) {
          // Documented: under autocast logits, prototypes and losses all come out in float32.
          CHECK(got.outputs[k].scalar_type() == torch::kFloat);
          check_close(how + "output " + std::to_string(k), got.outputs[k], reference.outputs[k]);
        }
        for (size_t k = 0; k < got.grads.size(); ++k) {
          check_close(how + "grad " + kGradNames[k], got.grads[k], reference.grads[k]);
          if (got.grads[k].defined() && k < 4) CHECK(got.grads[k].scalar_type() == torch::kBFloat16);
        }
      }
    }
  }
}

TEST_CASE("ContextAwareHead under bfloat16 autocast equals float32", "[autocast]") {
  torch::manual_seed(3);
  cac::ContextAwareHead head(cac::ContextAwareHeadOptions(16, 5));
  const Inputs in = make_inputs(17);
  const torch::Tensor C = in.C.reshape({5, 16, 1, 1});  // a 1x1 convolution's weight
  // p, pp, py and the gradients of f, C, p and every head parameter.
  const auto run_head = [&](torch::ScalarType activations, bool autocast, bool backward_inside) {
    head->zero_grad();
    const torch::Tensor f = in.f.to(activations).detach().requires_grad_(true);
    const torch::Tensor p = in.p.to(activations).detach().requires_grad_(true);
    const torch::Tensor weight = C.detach().clone().requires_grad_(true);
    std::vector<torch::Tensor> outputs;
    {
      cac::AutocastGuard guard(torch::kCPU, torch::kBFloat16, autocast);
      const cac::ContextAwareOutput out = head->forward_train(f, weight, p, in.y);
      outputs = {out.context_logits, out.oracle_logits, head->forward(f, weight, p)};
      CHECK(out.logits.is_same(p));  // p passes through as is
      if (backward_inside) projected_sum(outputs).backward();
    }
    if (!backward_inside) projected_sum(outputs).backward();
    std::vector<torch::Tensor> gradients{f.grad(), p.grad(), weight.grad()};
    for (const auto& parameter : head->parameters()) gradients.push_back(parameter.grad().clone());
    return std::make_pair(outputs, gradients);
  };
  const auto reference = run_head(torch::kFloat, false, false);
  SECTION("float32 inputs: bit-identical outputs and (backward after the scope) gradients") {
    const auto got = run_head(torch::kFloat, true, false);
    for (size_t k = 0; k < got.first.size(); ++k) check_equal("output", got.first[k], reference.first[k]);
    for (size_t k = 0; k < got.second.size(); ++k) check_equal("grad", got.second[k], reference.second[k]);
  }
  SECTION("bfloat16 features and logits: float32 pp and py within tolerance, gradients too") {
    for (bool inside : {true, false}) {
      const auto got = run_head(torch::kBFloat16, true, inside);
      const std::string how = inside ? "head, backward inside, " : "head, backward after, ";
      for (size_t k = 0; k < got.first.size(); ++k) {
        CHECK(got.first[k].scalar_type() == torch::kFloat);  // documented: float32 under autocast
        check_close(how + "output " + std::to_string(k), got.first[k], reference.first[k]);
      }
      for (size_t k = 0; k < got.second.size(); ++k) {
        check_close(how + "grad " + std::to_string(k), got.second[k], reference.second[k]);
      }
      CHECK(got.second[0].scalar_type() == torch::kBFloat16);  // the gradient of f in f's dtype
      CHECK(got.second[2].scalar_type() == torch::kFloat);     // and of C in C's
    }
  }
}

TEST_CASE("EntropyAwareKL and ContextAwareLoss under bfloat16 autocast equal float32", "[autocast]") {
  const Inputs in = make_inputs(27);
  cac::EntropyAwareKL kl;
  cac::ContextAwareLoss loss(cac::ContextAwareLossOptions().kl_weight(0.5));
  // Every loss term and the gradients of p, pp and py.
  const auto run_losses = [&](torch::ScalarType activations, bool autocast, bool backward_inside) {
    const torch::Tensor p = in.p.to(activations).detach().requires_grad_(true);
    const torch::Tensor s = in.s.to(activations).detach().requires_grad_(true);
    const torch::Tensor q = in.q.to(activations).detach().requires_grad_(true);
    std::vector<torch::Tensor> terms;
    {
      cac::AutocastGuard guard(torch::kCPU, torch::kBFloat16, autocast);
      const cac::ContextAwareLosses l = loss->forward({p, s, q}, in.y);
      terms = {kl->forward(s, q, in.y), l.total, l.logits_ce, l.context_ce, l.oracle_ce, l.kl};
      if (backward_inside) (terms[0] + terms[1]).backward();
    }
    if (!backward_inside) (terms[0] + terms[1]).backward();
    return std::make_pair(terms, std::vector<torch::Tensor>{p.grad(), s.grad(), q.grad()});
  };
  const auto reference = run_losses(torch::kFloat, false, false);
  SECTION("float32 inputs: bit-identical terms, and gradients when backward() runs after the scope") {
    const auto got = run_losses(torch::kFloat, true, false);
    for (size_t k = 0; k < got.first.size(); ++k) check_equal("term", got.first[k], reference.first[k]);
    for (size_t k = 0; k < got.second.size(); ++k) check_equal("grad", got.second[k], reference.second[k]);
    const auto inside = run_losses(torch::kFloat, true, true);
    for (size_t k = 0; k < inside.first.size(); ++k) check_equal("term", inside.first[k], reference.first[k]);
    for (size_t k = 0; k < inside.second.size(); ++k) {
      check_close("losses, float32 backward inside, grad " + std::to_string(k), inside.second[k], reference.second[k]);
    }
  }
  SECTION("bfloat16 logits: float32 losses within tolerance, gradients too") {
    for (bool inside : {true, false}) {
      const auto got = run_losses(torch::kBFloat16, true, inside);
      const std::string how = inside ? "losses, backward inside, " : "losses, backward after, ";
      for (size_t k = 0; k < got.first.size(); ++k) {
        CHECK(got.first[k].scalar_type() == torch::kFloat);
        CHECK(got.first[k].dim() == 0);
        check_close(how + "term " + std::to_string(k), got.first[k], reference.first[k]);
      }
      for (size_t k = 0; k < got.second.size(); ++k) {
        check_close(how + "grad " + std::to_string(k), got.second[k], reference.second[k]);
      }
    }
  }
}

namespace {

// Rounds every parameter of `module` to a bfloat16 value (kept in float32). Autocast runs the
// caller's layers with bfloat16 copies of their weights; with bfloat16-exact weights the float32
// reference uses the very same ones. Otherwise the weight rounding is a systematic perturbation
// (the same for every pixel) that random-label gradients, sums of N pixel terms cancelling to
// ~1/√N of each, amplify ~√N times: 5-16% of the README example's largest gradient entries,
// an effect of the caller's bfloat16 layers, not of cac (features rounded alone: ≤ 1.5%).
void round_to_bfloat16(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& parameter : module.parameters()) parameter.copy_(parameter.to(torch::kBFloat16));
}

torch::Tensor bfloat16_exact(const torch::Tensor& t) { return t.to(torch::kBFloat16).to(t.scalar_type()); }

// A conv feature generator and a wrapped classifier, trained one step's worth: the loss terms,
// pp in evaluation mode and every parameter's gradient, under autocast or in float32.
template <class Classifier, class Generator>
std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> train_step(
    Generator generator, cac::ContextAwareClassifier<Classifier> classifier, const torch::Tensor& images,
    const torch::Tensor& labels, bool autocast, bool backward_inside, torch::ScalarType* feature_dtype = nullptr,
    torch::ScalarType* logits_dtype = nullptr) {
  cac::ContextAwareLoss loss;
  generator->zero_grad();
  classifier->zero_grad();
  classifier->train();
  std::vector<torch::Tensor> outputs;
  {
    cac::AutocastGuard guard(torch::kCPU, torch::kBFloat16, autocast);
    const torch::Tensor features = generator->forward(images);
    if (feature_dtype) *feature_dtype = features.scalar_type();
    const cac::ContextAwareOutput out = classifier->forward_train(features, labels);
    if (logits_dtype) *logits_dtype = out.logits.scalar_type();
    CHECK(out.context_logits.scalar_type() == torch::kFloat);
    CHECK(out.oracle_logits.scalar_type() == torch::kFloat);
    const cac::ContextAwareLosses l = loss->forward(out, labels);
    outputs = {l.total, l.logits_ce, l.context_ce, l.oracle_ce, l.kl};
    if (backward_inside) l.total.backward();
  }
  if (!backward_inside) outputs[0].backward();
  {
    torch::NoGradGuard no_grad;
    classifier->eval();
    cac::AutocastGuard guard(torch::kCPU, torch::kBFloat16, autocast);
    const torch::Tensor pp = classifier->forward(generator->forward(images));
    CHECK(pp.scalar_type() == torch::kFloat);
    outputs.push_back(pp);
  }
  std::vector<torch::Tensor> gradients;
  for (const auto& parameter : generator->parameters()) gradients.push_back(parameter.grad().clone());
  for (const auto& parameter : classifier->parameters()) gradients.push_back(parameter.grad().clone());
  return {outputs, gradients};
}

template <class Classifier, class Generator>
void check_wrapper(Generator generator, cac::ContextAwareClassifier<Classifier> classifier, const torch::Tensor& images,
                   const torch::Tensor& labels, const std::string& name) {
  const auto reference = train_step(generator, classifier, images, labels, false, false);
  for (bool inside : {true, false}) {
    torch::ScalarType feature_dtype, logits_dtype;
    const auto got = train_step(generator, classifier, images, labels, true, inside, &feature_dtype, &logits_dtype);
    CHECK(feature_dtype == torch::kBFloat16);  // the caller's layers ran under autocast...
    CHECK(logits_dtype == torch::kBFloat16);   // ...and so did the user's classifier C (p)
    const std::string how = name + (inside ? ", backward inside, " : ", backward after, ");
    for (size_t k = 0; k < got.first.size(); ++k) {
      CHECK(got.first[k].scalar_type() == torch::kFloat);
      check_close(how + "output " + std::to_string(k), got.first[k], reference.first[k]);
    }
    for (size_t k = 0; k < got.second.size(); ++k) {
      CHECK(got.second[k].scalar_type() == torch::kFloat);
      check_close(how + "parameter grad " + std::to_string(k), got.second[k], reference.second[k]);
    }
  }
}

}  // namespace

TEST_CASE("ContextAwareClassifier behind a conv generator under bfloat16 autocast equals float32", "[autocast]") {
  torch::manual_seed(5);
  const torch::Tensor labels = naive::random_labels(2, {16, 16}, 5, 11);
  SECTION("Conv2d") {
    torch::nn::Conv2d generator(torch::nn::Conv2dOptions(3, 16, 3).padding(1));
    cac::ContextAwareClassifier<torch::nn::Conv2d> classifier{cac::ContextAwareClassifierOptions(16, 5)};
    round_to_bfloat16(*generator);
    round_to_bfloat16(*classifier);
    check_wrapper(generator, classifier, bfloat16_exact(torch::randn({2, 3, 8, 8})), labels, "Conv2d");
  }
  SECTION("Linear over channels") {
    torch::nn::Conv1d generator(torch::nn::Conv1dOptions(3, 16, 3).padding(1));
    cac::ContextAwareClassifier<torch::nn::Linear> classifier{cac::ContextAwareClassifierOptions(16, 5)};
    round_to_bfloat16(*generator);
    round_to_bfloat16(*classifier);
    check_wrapper(generator, classifier, bfloat16_exact(torch::randn({2, 3, 24})), naive::random_labels(2, {48}, 5, 12),
                  "Linear");
  }
}

TEST_CASE("The README example runs under bfloat16 autocast, backward() inside the scope", "[autocast]") {
  // README.md's usage example (examples/usage/usage.cpp) behind a conv feature generator, all under
  // CPU autocast: it used to abort with "!needs_dynamic_casting<func_t>::check(iter) INTERNAL ASSERT
  // FAILED" in the backward unless the caller excluded autocast's dispatch keys. `exact_weights`
  // rounds the images and every weight to bfloat16 values first (see round_to_bfloat16).
  const auto example = [](bool autocast, uint64_t seed, bool exact_weights) {
    torch::manual_seed(seed);
    torch::nn::Conv2d generator(torch::nn::Conv2dOptions(3, 64, 3).padding(1));
    cac::ContextAwareClassifier<torch::nn::Conv2d> classifier(torch::nn::Conv2d(torch::nn::Conv2dOptions(64, 21, 1)),
                                                              cac::ContextAwareHeadOptions(64, 21), /*dropout=*/0.1);
    cac::ContextAwareLoss loss;  // CE(p) + CE(pp) + CE(py) + KL, paper Eq. 8
    auto images = torch::randn({2, 3, 32, 32});
    auto labels = torch::randint(0, 21, {2, 128, 128});  // any resolution, 255 = ignore
    if (exact_weights) {
      round_to_bfloat16(*generator);
      round_to_bfloat16(*classifier);
      images = bfloat16_exact(images);
    }
    cac::AutocastGuard guard(torch::kCPU, torch::kBFloat16, autocast);
    auto features = generator->forward(images);  // the decoder's output
    auto losses = loss->forward(classifier->forward_train(features, labels), labels);
    losses.total.backward();
    classifier->eval();
    auto prediction = classifier->forward(features).argmax(1);  // inference uses pp
    CHECK(prediction.sizes() == torch::IntArrayRef({2, 32, 32}));
    std::vector<torch::Tensor> out{losses.total, losses.logits_ce, losses.context_ce, losses.oracle_ce, losses.kl};
    for (const auto& parameter : generator->parameters()) out.push_back(parameter.grad());
    for (const auto& parameter : classifier->parameters()) out.push_back(parameter.grad());
    CHECK(features.scalar_type() == (autocast ? torch::kBFloat16 : torch::kFloat));
    return out;
  };
  for (uint64_t seed : {0, 1}) {
    INFO("seed " << seed);
    const auto got = example(true, seed, /*exact_weights=*/true);
    const auto want = example(false, seed, true);  // the same seed: the same weights and dropout masks
    for (size_t k = 0; k < got.size(); ++k) {
      REQUIRE(got[k].defined());
      CHECK(got[k].scalar_type() == torch::kFloat);  // losses float32; gradients in the parameters' dtype
      check_close("README example, tensor " + std::to_string(k), got[k], want[k]);
    }
    // As written (float32 weights): the same losses; gradients finite (see round_to_bfloat16).
    const auto raw = example(true, seed, false), raw_want = example(false, seed, false);
    for (size_t k = 0; k < 5; ++k) {
      check_close("README example as written, loss " + std::to_string(k), raw[k], raw_want[k]);
    }
    for (size_t k = 5; k < raw.size(); ++k) CHECK(torch::isfinite(raw[k]).all().item<bool>());
  }
}

TEST_CASE("Reduced precision without autocast: a bfloat16 model and mixed dtypes", "[autocast]") {
  const Inputs in = make_inputs(37);
  SECTION("a bfloat16 head: pp and py in bfloat16, computed in float32") {
    torch::manual_seed(9);
    cac::ContextAwareHead head(cac::ContextAwareHeadOptions(16, 5));
    head->to(torch::kBFloat16);
    auto reference_head = std::dynamic_pointer_cast<cac::ContextAwareHeadImpl>(head->clone());
    reference_head->to(torch::kFloat);  // the same (bfloat16-exact) weights in float32
    const torch::Tensor f = in.f.to(torch::kBFloat16), C = in.C.to(torch::kBFloat16), p = in.p.to(torch::kBFloat16);
    const cac::ContextAwareOutput got = head->forward_train(f, C, p, in.y);
    const cac::ContextAwareOutput want =
        reference_head->forward_train(f.to(torch::kFloat), C.to(torch::kFloat), p.to(torch::kFloat), in.y);
    CHECK(got.context_logits.scalar_type() == torch::kBFloat16);
    CHECK(got.oracle_logits.scalar_type() == torch::kBFloat16);
    // Computed in float32 from the same values: they differ only by the final rounding to bfloat16.
    CHECK(torch::equal(got.context_logits, want.context_logits.to(torch::kBFloat16)));
    CHECK(torch::equal(got.oracle_logits, want.oracle_logits.to(torch::kBFloat16)));
    const cac::ContextAwareLosses losses = cac::ContextAwareLoss()->forward(got, in.y);
    CHECK(losses.total.scalar_type() == torch::kFloat);
    losses.total.backward();
    for (const auto& parameter : head->parameters()) {
      CHECK(parameter.grad().scalar_type() == torch::kBFloat16);
      CHECK(torch::isfinite(parameter.grad()).all().item<bool>());
    }
  }
  SECTION("float32, float16 and bfloat16 may be mixed; float64 may not") {
    const auto options = cac::ContextAwareHeadOptions(16, 5);
    const cac::ProjectorWeights theta{in.fc1, in.fc2, in.bias};
    const torch::Tensor f = in.f.to(torch::kBFloat16), p = in.p.to(torch::kHalf);
    const torch::Tensor mixed = F::context_logits(f, in.C, p, theta, options);
    CHECK(mixed.scalar_type() == torch::kBFloat16);  // the features' dtype without autocast
    const torch::Tensor upcast = F::context_logits(f.to(torch::kFloat), in.C, p.to(torch::kFloat), theta, options);
    CHECK(torch::equal(mixed, upcast.to(torch::kBFloat16)));
    CHECK_THROWS_WITH(F::context_logits(in.f.to(torch::kDouble), in.C, in.p.to(torch::kDouble), theta, options),
                      Catch::StartsWith("cac::functional::context_logits: expected classifier_weight of the "
                                        "features' dtype Double but got Float (only float32, float16 and bfloat16 "
                                        "may be mixed)"));
  }
}
