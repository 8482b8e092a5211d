// Head-only benchmarks: the cost of CAC against what cannot be avoided.
//
// For each (d, n, h×w) of the paper's settings, float32 on CPU, batch 1:
//   LowerBound       the two unavoidable products (n×d by d×hw, twice) and one softmax over n×hw
//   HeadForward      cac::ContextAwareHead::forward under NoGradGuard (inference)
//   ClassifierTrain  the baseline: 1×1 classifier forward + cross-entropy + backward
//   CacTrain         classifier + forward_train + ContextAwareLoss + backward
// main.cpp reports HeadForward / LowerBound (target ≤ 1.3) and CacTrain / ClassifierTrain (≤ 2.5).

#include <cac/cac.hpp>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

namespace {

struct Shape {
  int64_t d, n, h, w;
};

Shape shape_of(const benchmark::State& state) {
  return {state.range(0), state.range(1), state.range(2), state.range(3)};
}

void set_items(benchmark::State& state, const Shape& s) { state.SetItemsProcessed(state.iterations() * s.h * s.w); }

void BM_LowerBound(benchmark::State& state) {
  const Shape s = shape_of(state);
  torch::NoGradGuard no_grad;
  const auto f = torch::randn({1, s.d, s.h * s.w});
  const auto c = torch::randn({1, s.n, s.d}) * 0.05;  // realistic scores: no denormal softmax tails
  for (auto _ : state) {
    auto scores = torch::bmm(c, f).softmax(1);
    benchmark::DoNotOptimize(torch::bmm(scores, f.transpose(1, 2)).data_ptr());
  }
  set_items(state, s);
}

void BM_HeadForward(benchmark::State& state) {
  const Shape s = shape_of(state);
  torch::NoGradGuard no_grad;
  cac::ContextAwareHead head(cac::ContextAwareHeadOptions(s.d, s.n));
  const auto f = torch::randn({1, s.d, s.h, s.w});
  const auto c = torch::randn({s.n, s.d, 1, 1}) * 0.05;
  const auto p = torch::conv2d(f, c);
  for (auto _ : state) benchmark::DoNotOptimize(head->forward(f, c, p).data_ptr());
  set_items(state, s);
}

struct TrainInputs {
  explicit TrainInputs(const Shape& s)
      : features(torch::randn({1, s.d, s.h, s.w}).requires_grad_()),
        classifier(torch::nn::Conv2dOptions(s.d, s.n, 1)),
        labels(torch::randint(0, s.n, {1, s.h, s.w})) {}
  torch::Tensor features;
  torch::nn::Conv2d classifier;
  torch::Tensor labels;
};

void BM_ClassifierTrain(benchmark::State& state) {
  const Shape s = shape_of(state);
  TrainInputs in(s);
  for (auto _ : state) {
    auto loss =
        torch::nn::functional::cross_entropy(in.classifier->forward(in.features), in.labels,
                                             torch::nn::functional::CrossEntropyFuncOptions().ignore_index(255));
    loss.backward();
  }
  set_items(state, s);
}

void BM_CacTrain(benchmark::State& state) {
  const Shape s = shape_of(state);
  TrainInputs in(s);
  cac::ContextAwareHead head(cac::ContextAwareHeadOptions(s.d, s.n));
  cac::ContextAwareLoss criterion;
  for (auto _ : state) {
    auto out = head->forward_train(in.features, in.classifier->weight, in.classifier->forward(in.features), in.labels);
    criterion->forward(out, in.labels).total.backward();
  }
  set_items(state, s);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"d", "n", "h", "w"});
  b->Args({512, 150, 64, 64});
  b->Args({512, 150, 128, 128});
  b->Args({512, 171, 128, 128});
  b->Args({256, 19, 128, 256});
  b->Unit(benchmark::kMillisecond);
  b->MinTime(0.5);
}

}  // namespace

BENCHMARK(BM_LowerBound)->Apply(shapes);
BENCHMARK(BM_HeadForward)->Apply(shapes);
BENCHMARK(BM_ClassifierTrain)->Apply(shapes);
BENCHMARK(BM_CacTrain)->Apply(shapes);
