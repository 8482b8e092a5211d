#pragma once
// Shared by the engine suites: the tiny context-shift config the trainer tests train, and the
// weights of a checkpoint by key.
#include "engine/trainer.hpp"

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>

namespace cac_engine_test {

/// fcn_tiny on a 4-class, 32×32 context-shift dataset under `root` (24 training, 6 validation
/// images), batch 4, SGD, `iterations` iterations, evaluation at the end only.
inline cac_engine::Config tiny_config(const std::filesystem::path& root, bool cac, int64_t iterations) {
  cac_engine::Config config = cac_engine::Config::parse(R"(
model: {name: fcn_tiny, num_classes: 4}
data:
  type: context_shift
  context_shift: {num_classes: 4, image_size: 32, num_train: 24, num_val: 6}
  train_pipeline: {img_scale: [32, 32], ratio_range: [0.75, 1.25], crop_size: [32, 32], cat_max_ratio: 1.0}
  test_pipeline: {img_scale: [32, 32]}
  batch_size: 4
  num_workers: 2
optimizer: {type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0005}
schedule: {iterations: 100, power: 0.9, min_lr: 0.0001}
runtime: {seed: 3, log_interval: 2, checkpoint_interval: 0}
evaluation: {interval: 0}
)",
                                                        "tiny");
  config.set("data.root=" + root.string());
  config.set("model.cac=" + std::string(cac ? "true" : "false"));
  config.set("schedule.iterations=" + std::to_string(iterations));
  return config;
}

/// Every parameter and buffer of the model of `config` after loading `checkpoint`, by key.
inline std::map<std::string, torch::Tensor> weights(const std::filesystem::path& checkpoint,
                                                    const cac_engine::Config& config) {
  auto model = cac_engine::build_model(config);
  cac_engine::load_weights(*model, checkpoint);
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : model->named_parameters()) out[item.key()] = item.value().clone();
  for (const auto& item : model->named_buffers()) out[item.key()] = item.value().clone();
  return out;
}

}  // namespace cac_engine_test
