// cac-quickstart: trains a tiny segmentation network with the context-aware classifier on a
// generated "two objects per image" problem and reports every loss term, throughput, ETA and
// the pixel accuracy / mIoU of the original classifier p versus the context-aware one pp.
//
// Usage: cac-quickstart [iterations=200] [batch=8]

#include <cac/cac.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {

constexpr int64_t kClasses = 4, kSize = 32;

// Images with a background class and two rectangles of two other classes, colour-coded with
// noise; labels at full resolution.
std::pair<torch::Tensor, torch::Tensor> make_batch(int64_t batch, torch::Generator& gen) {
  auto images = torch::randn({batch, 3, kSize, kSize}, gen) * 0.6;
  auto labels = torch::zeros({batch, kSize, kSize}, torch::kLong);
  const auto palette = torch::tensor({{0.f, 0.f, 0.f}, {1.5f, -1.f, 0.f}, {-1.f, 1.5f, 0.5f}, {0.f, -0.5f, 1.5f}});
  for (int64_t b = 0; b < batch; ++b) {
    const auto classes = torch::randperm(kClasses - 1, gen).add(1).slice(0, 0, 2);
    for (int64_t r = 0; r < 2; ++r) {
      const auto corner = torch::randint(0, kSize / 2, {2}, gen);
      const int64_t y0 = corner[0].item<int64_t>(), x0 = corner[1].item<int64_t>();
      const int64_t k = classes[r].item<int64_t>();
      labels[b].slice(0, y0, y0 + kSize / 2).slice(1, x0, x0 + kSize / 2).fill_(k);
    }
    images[b] += palette.index_select(0, labels[b].flatten()).t().reshape({3, kSize, kSize});
  }
  return {images, labels};
}

struct NetImpl : torch::nn::Module {
  NetImpl()
      : body(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 32, 3).padding(1)), torch::nn::ReLU(),
             torch::nn::AvgPool2d(2), torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 32, 3).padding(1)),
             torch::nn::ReLU()),
        classifier(torch::nn::Conv2d(torch::nn::Conv2dOptions(32, kClasses, 1)),
                   cac::ContextAwareHeadOptions(32, kClasses), /*dropout=*/0.1) {
    register_module("body", body);
    register_module("classifier", classifier);
  }
  torch::nn::Sequential body;
  cac::ContextAwareClassifier<torch::nn::Conv2d> classifier;
};
TORCH_MODULE(Net);

// Mean IoU over classes present in prediction or labels.
double mean_iou(const torch::Tensor& pred, const torch::Tensor& labels) {
  double sum = 0;
  int count = 0;
  for (int64_t k = 0; k < kClasses; ++k) {
    const auto p = pred == k, l = labels == k;
    const double uni = (p | l).sum().item<double>();
    if (uni == 0) continue;
    sum += (p & l).sum().item<double>() / uni;
    ++count;
  }
  return count ? sum / count : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t iterations = argc > 1 ? std::atoll(argv[1]) : 200;
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 8;
  torch::manual_seed(0);
  auto gen = at::detail::createCPUGenerator(0);
  Net net;
  cac::ContextAwareLoss criterion;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(3e-3));
  std::printf("cac-quickstart: %lld iterations, batch %lld, %lldx%lld images, %lld classes\n",
              static_cast<long long>(iterations), static_cast<long long>(batch), static_cast<long long>(kSize),
              static_cast<long long>(kSize), static_cast<long long>(kClasses));
  const auto start = std::chrono::steady_clock::now();
  for (int64_t it = 1; it <= iterations; ++it) {
    auto [images, labels] = make_batch(batch, gen);
    auto losses = criterion->forward(net->classifier->forward_train(net->body->forward(images), labels), labels);
    optimizer.zero_grad();
    losses.total.backward();
    optimizer.step();
    if (it % 20 == 0 || it == iterations) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("iter %4lld/%lld  total %.4f  ce(p) %.4f  ce(pp) %.4f  ce(py) %.4f  kl %.4f  %.1f img/s  ETA %.1fs\n",
                  static_cast<long long>(it), static_cast<long long>(iterations), losses.total.item<double>(),
                  losses.logits_ce.item<double>(), losses.context_ce.item<double>(), losses.oracle_ce.item<double>(),
                  losses.kl.item<double>(), it * batch / elapsed, elapsed / it * (iterations - it));
      std::fflush(stdout);
    }
  }
  net->eval();
  torch::NoGradGuard no_grad;
  auto [images, labels] = make_batch(64, gen);
  const auto features = net->body->forward(images);
  const auto size = torch::nn::functional::InterpolateFuncOptions()
                        .size(std::vector<int64_t>{kSize, kSize})
                        .mode(torch::kBilinear)
                        .align_corners(false);
  const auto p = torch::nn::functional::interpolate(net->classifier->classifier_logits(features), size).argmax(1);
  const auto pp = torch::nn::functional::interpolate(net->classifier->forward(features), size).argmax(1);
  std::printf("held-out 64 images: pixel accuracy p %.4f, pp %.4f; mIoU p %.4f, pp %.4f\n",
              (p == labels).to(torch::kDouble).mean().item<double>(),
              (pp == labels).to(torch::kDouble).mean().item<double>(), mean_iou(p, labels), mean_iou(pp, labels));
  return 0;
}
