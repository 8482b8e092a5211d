#pragma once
// Input builders shared by the module suites (head, loss, classifier).

#include "support/naive.hpp"

#include <cac/cac.hpp>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace cac_test {

/// Copies `weights` into a head projector (`Sequential` of Linear, ReLU, Linear) under no-grad.
inline void set_projector(torch::nn::Sequential& projector, const torch::Tensor& fc1, const torch::Tensor& fc2,
                          const torch::Tensor& bias) {
  torch::NoGradGuard no_grad;
  projector->ptr(0)->as<torch::nn::LinearImpl>()->weight.copy_(fc1);
  projector->ptr(2)->as<torch::nn::LinearImpl>()->weight.copy_(fc2);
  projector->ptr(2)->as<torch::nn::LinearImpl>()->bias.copy_(bias);
}

/// A head of (d, n) in double with deterministic, seeded projector weights.
inline cac::ContextAwareHead make_head(int64_t d, int64_t n, uint64_t seed,
                                       cac::OracleScope scope = cac::OracleScope::Batch) {
  cac::ContextAwareHead head(cac::ContextAwareHeadOptions(d, n).oracle_scope(scope));
  head->to(torch::kDouble);
  const auto context = naive::random_projector(d, d / 2, seed);
  const auto oracle = naive::random_projector(d, d / 2, seed + 10);
  set_projector(head->context_projector, context.fc1_weight, context.fc2_weight, context.fc2_bias);
  set_projector(head->oracle_projector, oracle.fc1_weight, oracle.fc2_weight, oracle.fc2_bias);
  return head;
}

/// Class scores p = C·f + b over the channel dim, for any number of spatial dims, differentiable.
inline torch::Tensor classifier_logits(const torch::Tensor& features, const torch::Tensor& weight,
                                       const torch::Tensor& bias) {
  const auto n = weight.size(0);
  auto flat = torch::matmul(weight.reshape({n, -1}), features.flatten(2));  // [B, n, S]
  if (bias.defined()) flat = flat + bias.view({1, n, 1});
  std::vector<int64_t> shape = features.sizes().vec();
  shape[1] = n;
  return flat.view(shape);
}

/// A small double problem: features, classifier weight [n, d], bias, logits and labels.
struct Problem {
  torch::Tensor features, weight, bias, logits, labels;
};

/// Seeded `Problem` with `spatial` feature grid and `label_spatial` label grid.
inline Problem make_problem(int64_t B, int64_t d, int64_t n, const std::vector<int64_t>& spatial,
                            const std::vector<int64_t>& label_spatial, uint64_t seed) {
  Problem p;
  p.features = naive::randn(naive::shape_of(B, d, spatial), seed);
  p.weight = naive::randn({n, d}, seed + 1) / std::sqrt(static_cast<double>(d));
  p.bias = naive::randn({n}, seed + 2) * 0.1;
  p.logits = classifier_logits(p.features, p.weight, p.bias);
  p.labels = naive::random_labels(B, label_spatial, n, seed + 3);
  return p;
}

}  // namespace cac_test
