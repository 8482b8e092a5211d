#pragma once
/// \file
/// What a config describes, built: the model, the datasets and pipelines, the loader, the
/// optimizer and its learning-rate schedule, the inference settings. Each builder maps keys of
/// the schema (schema.hpp, documented in docs/training.md) onto an options struct; the values
/// and their defaults are the schema's, checked when read.

#include "config.hpp"

#include "data/context_shift.hpp"
#include "data/dataset.hpp"
#include "data/loader.hpp"
#include "data/transforms.hpp"
#include "eval/inference.hpp"
#include "models/registry.hpp"

#include <torch/optim/optimizer.h>

#include <memory>
#include <string>
#include <vector>

namespace cac_engine {

/// The zoo options of `model.*`: classes, CAC, SyncBN, dropout, and every setting of the
/// library's `cac::ContextAwareHeadOptions` (`model.cac_head.*`) and `cac::ContextAwareLossOptions`
/// (`model.cac_loss.*`, its KL variants under `model.cac_loss.kl.*`).
cac_models::ModelOptions model_options(const Config& config);

/// The model of `model.*`: `make_model(model.name, model_options(config))`.
cac_models::EncoderDecoder build_model(const Config& config);

/// The dataset options of `data.*` for `split` ("train" or "val").
cac_data::DatasetOptions dataset_options(const Config& config, const std::string& split);

/// The generator settings of `data.context_shift.*`.
cac_data::ContextShiftOptions context_shift_options(const Config& config);

/// The dataset of `data.*` for `split`; for `data.type: context_shift` the bundled dataset is
/// generated under `data.root` first (once; see cac_data::generate_context_shift).
std::shared_ptr<cac_data::Dataset> build_dataset(const Config& config, const std::string& split);

/// The training pipeline of `data.train_pipeline.*` and `data.normalize.*`.
cac_data::TrainPipelineOptions train_pipeline(const Config& config);

/// The test pipeline of `data.test_pipeline.*` and `data.normalize.*`.
cac_data::TestPipelineOptions test_pipeline(const Config& config);

/// Loader settings of `data.*` and `runtime.seed` for this process (`rank` of `world_size`).
cac_data::LoaderOptions loader_options(const Config& config, const torch::Device& device, int64_t rank = 0,
                                       int64_t world_size = 1);

/// Inference settings of `evaluation.*` (mode, crop, stride, scales, flip).
cac_eval::InferenceOptions inference_options(const Config& config);

/// The optimizer of `optimizer.*` over `model`'s parameters: `sgd` (lr, momentum, weight_decay)
/// or `adamw` (lr, betas, eps, weight_decay); parameters whose names contain one of
/// `optimizer.no_decay` get weight decay 0 (Swin: norm, relative_position_bias_table,
/// absolute_pos_embed), in a second parameter group.
std::unique_ptr<torch::optim::Optimizer> build_optimizer(const Config& config, torch::nn::Module& model);

/// mmcv's iteration-based learning-rate policy (`schedule.*`): poly decay
/// `(base - min_lr)·(1 - iter/iterations)^power + min_lr`, after an optional linear warm-up
/// over `warmup_iterations` from `warmup_ratio · lr` (mmcv `warmup='linear'`), or a constant lr.
class LrSchedule {
 public:
  /// The schedule of `schedule.*` for the base rate `optimizer.lr`.
  explicit LrSchedule(const Config& config);
  /// The learning rate of iteration `iter` (0-based, as mmcv's `runner.iter`).
  double at(int64_t iter) const;
  /// Total iterations (`schedule.iterations`).
  int64_t iterations() const { return iterations_; }

 private:
  std::string policy_;
  double base_, min_lr_, power_, warmup_ratio_;
  int64_t iterations_, warmup_iterations_;
};

/// Sets the learning rate of every parameter group of `optimizer`.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

/// The class names and palette of the dataset of `data.*` (for tables and pictures), from the
/// config alone: the built-in ones of `data.type` (`context_shift`: of
/// `data.context_shift.num_classes`), or `data.classes` with a generated palette. No dataset
/// directory is read or generated, so `cac-infer` needs none; `make_dataset` gives the same info.
cac_data::DatasetInfo dataset_info(const Config& config);

}  // namespace cac_engine
