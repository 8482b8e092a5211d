#include <cac/cac.hpp>
#include <torch/torch.h>
#include <iostream>

int main() {
  // Your model's 1x1 classifier (d = 64 channels, n = 21 classes), now context-aware.
  cac::ContextAwareClassifier<torch::nn::Conv2d> classifier(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(64, 21, 1)), cac::ContextAwareHeadOptions(64, 21), /*dropout=*/0.1);
  cac::ContextAwareLoss loss;  // CE(p) + CE(pp) + CE(py) + KL, paper Eq. 8
  auto features = torch::randn({2, 64, 32, 32});          // the decoder's output
  auto labels = torch::randint(0, 21, {2, 128, 128});     // any resolution, 255 = ignore
  auto losses = loss->forward(classifier->forward_train(features, labels), labels);
  losses.total.backward();
  classifier->eval();
  auto prediction = classifier->forward(features).argmax(1);  // inference uses pp
  std::cout << "loss " << losses.total.item<double>() << ", prediction " << prediction.sizes() << "\n";
}
