#include "evaluator.hpp"

#include "data/loader.hpp"

#include <torch/torch.h>

#include <chrono>

namespace cac_engine {

EvaluateResult evaluate(cac_models::EncoderDecoder& model, const Config& config, const EvaluateOptions& options) {
  const auto dataset = build_dataset(config, "val");
  const cac_eval::InferenceOptions inference = options.inference() ? *options.inference() : inference_options(config);
  const std::shared_ptr<ProcessGroup> group = options.group() ? options.group() : std::make_shared<ProcessGroup>();
  cac_data::EvalLoader loader(dataset, test_pipeline(config),
                              loader_options(config, options.device(), group->rank(), group->size()));
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t classes = model->num_classes();
  cac_eval::ConfusionMatrix confusion(classes);
  std::map<std::string, cac_eval::ConfusionMatrix> branch_confusion;
  const bool branches = options.branches() && model->has_cac();
  if (branches) {
    for (const char* name : {"logits", "context", "oracle"})
      branch_confusion.emplace(name, cac_eval::ConfusionMatrix(classes));
  }
  EvaluateResult result;
  double seconds = 0.0;
  while (auto batch = loader.next()) {
    if (options.limit() > 0 && batch->indices[0] >= options.limit()) break;  // indices ascend
    const torch::Tensor image = batch->images.to(options.device());
    const torch::Tensor label = batch->labels[0];
    const std::vector<int64_t> size{label.size(0), label.size(1)};
    const auto start = std::chrono::steady_clock::now();
    const torch::Tensor prediction = cac_eval::predict(model, image, inference, size);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    confusion.update(prediction, label.to(prediction.device()));
    if (branches) {
      const auto outputs = model->forward_branches(image, batch->labels.to(options.device()));
      for (const auto& [name, logits] : outputs) {
        const torch::Tensor resized = cac_models::resize(logits, size, model->align_corners());
        branch_confusion.at(name).update(resized.argmax(1)[0], label.to(resized.device()));
      }
    }
    if (options.on_prediction()) options.on_prediction()({*dataset, batch->indices[0], batch->names[0], prediction});
    ++result.images;
  }
  // Every rank takes part in the same reductions in the same order (the map is sorted).
  const cac_models::AllReduceSum sum = sum_over(group);
  const auto total = [&](const cac_eval::ConfusionMatrix& matrix) {
    return (sum ? cac_eval::all_reduce(matrix, sum, group->device()) : matrix).compute();
  };
  result.metrics = total(confusion);
  for (const auto& [name, matrix] : branch_confusion) result.branches[name] = total(matrix);
  std::vector<torch::Tensor> totals{torch::tensor({static_cast<double>(result.images), seconds}, torch::kDouble)};
  group->all_reduce_sum(totals);
  result.images = static_cast<int64_t>(totals[0][0].item<double>());
  seconds = totals[0][1].item<double>();
  result.ms_per_image = result.images ? 1e3 * seconds / static_cast<double>(result.images) : 0.0;
  return result;
}

}  // namespace cac_engine
