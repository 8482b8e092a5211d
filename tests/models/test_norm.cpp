// cac_models::Norm2d: torch::nn::BatchNorm2d step for step on one process, and the hook through
// which the distributed engine synchronises it.
#include "models/common.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <sstream>

using cac_models::Norm2d;
using cac_models::Norm2dImpl;

namespace {

// Three training steps and one evaluation of `norm` and `reference` on the same inputs: outputs,
// input gradients, parameter gradients and buffers must be bit-identical.
void check_same_as_batch_norm(Norm2d norm, torch::nn::BatchNorm2d reference) {
  REQUIRE(norm->named_parameters().keys() == reference->named_parameters().keys());
  REQUIRE(norm->named_buffers().keys() == reference->named_buffers().keys());
  torch::manual_seed(3);
  for (int step = 0; step < 4; ++step) {
    const bool training = step < 3;
    norm->train(training);
    reference->train(training);
    auto x = (torch::randn({3, 5, 4, 2}) * (step + 1) + step).requires_grad_();
    auto x_ref = x.detach().clone().requires_grad_();
    auto y = norm->forward(x);
    auto y_ref = reference->forward(x_ref);
    INFO("step " << step);
    CHECK(torch::equal(y, y_ref));
    auto weights = torch::randn_like(y);
    (y * weights).sum().backward();
    (y_ref * weights).sum().backward();
    CHECK(torch::equal(x.grad(), x_ref.grad()));
    for (const auto& item : reference->named_parameters()) {
      const auto& ours = norm->named_parameters()[item.key()];
      if (item.value().defined()) CHECK(torch::equal(ours.grad(), item.value().grad()));
    }
    for (const auto& item : reference->named_buffers()) {
      const auto& ours = norm->named_buffers()[item.key()];
      CHECK(ours.defined() == item.value().defined());
      if (item.value().defined()) CHECK(torch::equal(ours, item.value()));
    }
  }
}

}  // namespace

TEST_CASE("Norm2d is torch::nn::BatchNorm2d on one process", "[models][norm]") {
  SECTION("mmseg's settings through NormOptions") {
    Norm2d norm(5, cac_models::NormOptions().eps(1e-3).momentum(0.2));
    CHECK(norm->options.eps() == 1e-3);
    CHECK(*norm->options.momentum() == 0.2);
    CHECK_FALSE(norm->sync);
    check_same_as_batch_norm(norm, torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(5).eps(1e-3).momentum(0.2)));
  }
  SECTION("cumulative average (momentum None)") {
    auto options = torch::nn::BatchNorm2dOptions(5).momentum(c10::nullopt);
    check_same_as_batch_norm(Norm2d(options), torch::nn::BatchNorm2d(options));
  }
  SECTION("no running statistics, no affine parameters") {
    auto options = torch::nn::BatchNorm2dOptions(5).track_running_stats(false).affine(false);
    check_same_as_batch_norm(Norm2d(options), torch::nn::BatchNorm2d(options));
  }
  SECTION("copied from a trained BatchNorm2d, mode included") {
    torch::nn::BatchNorm2d reference(5);
    reference->forward(torch::randn({2, 5, 3, 3}));
    {
      torch::NoGradGuard no_grad;
      reference->weight.uniform_();
    }
    reference->eval();
    Norm2d copy(*reference, /*sync=*/true);
    CHECK(copy->sync);
    CHECK_FALSE(copy->is_training());
    CHECK(copy->num_batches_tracked.item<int64_t>() == 1);
    CHECK(copy->weight.requires_grad());
    check_same_as_batch_norm(copy, reference);
  }
  SECTION("bad input") {
    Norm2d norm(5, cac_models::NormOptions());
    CHECK_THROWS_WITH(norm->forward(torch::randn({2, 5, 3})),
                      Catch::Contains("cac_models::Norm2d: expected a 4-D input [N, C, H, W] but got [2, 5, 3]"));
    CHECK_THROWS_WITH(Norm2d(0, cac_models::NormOptions()), Catch::Contains("expected num_features > 0 but got 0"));
  }
}

TEST_CASE("Norm2d calls the installed sync function in training only, on sync layers only", "[models][norm]") {
  torch::nn::Sequential net(Norm2d(4, cac_models::NormOptions().sync(true)), Norm2d(4, cac_models::NormOptions()),
                            Norm2d(4, cac_models::NormOptions().sync(true)));
  int calls = 0;
  auto function =
      std::make_shared<const cac_models::SyncNormFunction>([&calls](const torch::Tensor& input, Norm2dImpl& norm) {
        ++calls;
        CHECK(norm.sync);
        return input * 2;
      });
  CHECK(cac_models::set_sync_norm(*net, function) == 2);
  auto x = torch::randn({2, 4, 3, 3});
  net->train();
  net->forward(x);
  CHECK(calls == 2);
  // the unsynchronised middle layer still trained as plain batch norm
  CHECK(net[1]->as<Norm2dImpl>()->num_batches_tracked.item<int64_t>() == 1);
  CHECK(net[0]->as<Norm2dImpl>()->num_batches_tracked.item<int64_t>() == 0);

  net->eval();
  net->forward(x);
  CHECK(calls == 2);

  // a clone shares the function; removing it restores plain batch norm
  auto clone = std::dynamic_pointer_cast<Norm2dImpl>(net[0]->as<Norm2dImpl>()->clone());
  REQUIRE(clone);
  CHECK(clone->sync_function == function);
  CHECK(cac_models::set_sync_norm(*net, nullptr) == 2);
  net->train();
  net->forward(x);
  CHECK(calls == 2);

  std::ostringstream printed;
  printed << *net[0]->as<Norm2dImpl>();
  CHECK(printed.str() ==
        "cac_models::Norm2d(4, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true, sync=true)");
}
