// Built against the installed package by the cac_package_consumer test.
#include <cac/cac.hpp>

#include <torch/torch.h>

#include <iostream>

int main() {
  cac::ContextAwareHead head(cac::ContextAwareHeadOptions(8, 3));
  const auto pp = head->forward(torch::randn({2, 8, 4, 4}), torch::randn({3, 8}), torch::randn({2, 3, 4, 4}));
  if (pp.sizes() != torch::IntArrayRef({2, 3, 4, 4}) || !torch::isfinite(pp).all().item<bool>()) {
    std::cerr << "cac_consumer: unexpected output " << pp.sizes() << "\n";
    return 1;
  }
  std::cout << "cac_consumer: ok\n";
  return 0;
}
