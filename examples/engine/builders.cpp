#include "builders.hpp"

#include "data/context_shift.hpp"

#include <torch/torch.h>

#include <cmath>

namespace cac_engine {

namespace {

template <size_t N, typename T>
std::array<T, N> fixed(const Config& config, const std::string& key, const std::array<T, N>& fallback) {
  if (!config.has(key)) return fallback;
  using Element = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
  const auto values = config.get<std::vector<Element>>(key);
  if (values.size() != N) {
    config.fail(key, "expected a list of " + std::to_string(N) + " numbers but got " +
                         std::to_string(values.size()));
  }
  std::array<T, N> out{};
  for (size_t i = 0; i < N; ++i) out[i] = static_cast<T>(values[i]);
  return out;
}

cac_data::NormalizeOptions normalize(const Config& config) {
  config.check_keys("data.normalize", {"mean", "std", "to_rgb"});
  cac_data::NormalizeOptions defaults;
  return cac_data::NormalizeOptions()
      .mean(fixed<3>(config, "data.normalize.mean", defaults.mean()))
      .std(fixed<3>(config, "data.normalize.std", defaults.std()))
      .to_rgb(config.get<bool>("data.normalize.to_rgb", defaults.to_rgb()));
}

void check_positive(const Config& config, const std::string& key, double value) {
  if (!(value > 0)) config.fail(key, "expected a positive number but got " + std::to_string(value));
}

}  // namespace

cac_models::EncoderDecoder build_model(const Config& config) {
  config.check_keys("model", {"name", "num_classes", "cac", "sync_bn", "dropout_ratio", "pretrained", "pretrained_source",
                              "cac_head", "cac_loss"});
  config.check_keys("model.cac_head", {"tau", "oracle_scope", "hidden_channels"});
  config.check_keys("model.cac_loss", {"kl_weight", "logits_weight", "context_weight", "oracle_weight"});
  const auto names = cac_models::model_names();
  const std::string name = config.get_choice("model.name", names);
  const int64_t classes = config.get<int64_t>("model.num_classes");
  if (classes <= 0) config.fail("model.num_classes", "expected a positive number of classes");
  cac_models::ModelOptions options;
  options.num_classes = classes;
  options.cac = config.get<bool>("model.cac", false);
  options.norm.sync(config.get<bool>("model.sync_bn", false));
  if (config.has("model.dropout_ratio")) {
    options.dropout_ratio = config.get<double>("model.dropout_ratio");
    if (!(*options.dropout_ratio < 1.0)) config.fail("model.dropout_ratio", "expected a ratio below 1");
  }
  options.cac_head.tau(config.get<double>("model.cac_head.tau", options.cac_head.tau()))
      .hidden_channels(config.get<int64_t>("model.cac_head.hidden_channels", 0))
      .oracle_scope(config.get_choice("model.cac_head.oracle_scope", {"batch", "image"}, "batch") == "image"
                        ? cac::OracleScope::Image
                        : cac::OracleScope::Batch);
  const cac::ContextAwareLossOptions loss;
  options.cac_loss.kl_weight(config.get<double>("model.cac_loss.kl_weight", loss.kl_weight()))
      .logits_weight(config.get<double>("model.cac_loss.logits_weight", loss.logits_weight()))
      .context_weight(config.get<double>("model.cac_loss.context_weight", loss.context_weight()))
      .oracle_weight(config.get<double>("model.cac_loss.oracle_weight", loss.oracle_weight()));
  return cac_models::make_model(name, options);
}

cac_data::DatasetOptions dataset_options(const Config& config, const std::string& split) {
  config.check_keys("data", {"type", "root", "img_suffix", "seg_map_suffix", "reduce_zero_label", "img_dir",
                             "ann_dir", "train_split_file", "val_split_file", "classes", "context_shift",
                             "train_pipeline", "test_pipeline", "normalize", "batch_size", "num_workers",
                             "prefetch", "train_img_dir", "train_ann_dir", "val_img_dir", "val_ann_dir"});
  const std::string type = config.get_choice(
      "data.type", {"ade20k", "coco_stuff164k", "cityscapes", "pascal_context59", "context_shift", "custom"});
  cac_data::DatasetOptions options(type, config.get<std::string>("data.root"));
  options.split(split);
  if (config.has("data.img_suffix")) options.img_suffix(config.get<std::string>("data.img_suffix"));
  if (config.has("data.seg_map_suffix")) options.seg_map_suffix(config.get<std::string>("data.seg_map_suffix"));
  if (config.has("data.reduce_zero_label")) options.reduce_zero_label(config.get<bool>("data.reduce_zero_label"));
  if (type == "custom") {
    options.img_dir(config.get<std::string>("data." + split + "_img_dir"));
    options.ann_dir(config.get<std::string>("data." + split + "_ann_dir"));
    options.split_file(config.get<std::string>("data." + split + "_split_file", ""));
  }
  if (config.has("data.classes")) options.classes(config.get<std::vector<std::string>>("data.classes"));
  return options;
}

std::shared_ptr<cac_data::Dataset> build_dataset(const Config& config, const std::string& split) {
  const cac_data::DatasetOptions options = dataset_options(config, split);
  if (options.type() == "context_shift") {
    config.check_keys("data.context_shift", {"num_classes", "image_size", "num_train", "num_val", "shift",
                                             "shift_strength", "seed", "regions", "other_ratio", "noise",
                                             "stripe_period", "stripe_contrast"});
    cac_data::ContextShiftOptions defaults;
    const std::string key = "data.context_shift.";
    cac_data::generate_context_shift(
        options.root(), cac_data::ContextShiftOptions()
                            .num_classes(config.get<int64_t>(key + "num_classes", defaults.num_classes()))
                            .image_size(config.get<int64_t>(key + "image_size", defaults.image_size()))
                            .num_train(config.get<int64_t>(key + "num_train", defaults.num_train()))
                            .num_val(config.get<int64_t>(key + "num_val", defaults.num_val()))
                            .shift(config.get<bool>(key + "shift", defaults.shift()))
                            .shift_strength(config.get<double>(key + "shift_strength", defaults.shift_strength()))
                            .seed(static_cast<uint64_t>(config.get<int64_t>(key + "seed", 0)))
                            .regions(config.get<int64_t>(key + "regions", defaults.regions()))
                            .other_ratio(config.get<double>(key + "other_ratio", defaults.other_ratio()))
                            .noise(config.get<double>(key + "noise", defaults.noise()))
                            .stripe_period(config.get<double>(key + "stripe_period", defaults.stripe_period()))
                            .stripe_contrast(config.get<double>(key + "stripe_contrast", defaults.stripe_contrast())));
  }
  return cac_data::make_dataset(options);
}

cac_data::DatasetInfo dataset_info(const Config& config) { return build_dataset(config, "val")->info(); }

cac_data::TrainPipelineOptions train_pipeline(const Config& config) {
  const std::string key = "data.train_pipeline.";
  config.check_keys("data.train_pipeline",
                    {"img_scale", "ratio_range", "crop_size", "cat_max_ratio", "flip_prob", "photometric"});
  cac_data::TrainPipelineOptions defaults;
  return cac_data::TrainPipelineOptions()
      .img_scale(fixed<2>(config, key + "img_scale", defaults.img_scale()))
      .ratio_range(fixed<2>(config, key + "ratio_range", defaults.ratio_range()))
      .crop_size(fixed<2>(config, key + "crop_size", defaults.crop_size()))
      .cat_max_ratio(config.get<double>(key + "cat_max_ratio", defaults.cat_max_ratio()))
      .flip_prob(config.get<double>(key + "flip_prob", defaults.flip_prob()))
      .photometric(config.get<bool>(key + "photometric", defaults.photometric()))
      .normalize(normalize(config));
}

cac_data::TestPipelineOptions test_pipeline(const Config& config) {
  config.check_keys("data.test_pipeline", {"img_scale"});
  cac_data::TestPipelineOptions defaults;
  return cac_data::TestPipelineOptions()
      .img_scale(fixed<2>(config, "data.test_pipeline.img_scale", defaults.img_scale()))
      .normalize(normalize(config));
}

cac_data::LoaderOptions loader_options(const Config& config, const torch::Device& device, int64_t rank,
                                       int64_t world_size) {
  cac_data::LoaderOptions defaults;
  const int64_t batch = config.get<int64_t>("data.batch_size", defaults.batch_size());
  if (batch <= 0) config.fail("data.batch_size", "expected a positive batch size");
  return cac_data::LoaderOptions()
      .batch_size(batch)
      .num_workers(config.get<int64_t>("data.num_workers", defaults.num_workers()))
      .prefetch(config.get<int64_t>("data.prefetch", defaults.prefetch()))
      .seed(static_cast<uint64_t>(config.get<int64_t>("runtime.seed", 0)))
      .shuffle(true)
      .drop_last(true)
      .rank(rank)
      .world_size(world_size)
      .pin_memory(device.is_cuda())
      .device(device);
}

cac_eval::InferenceOptions inference_options(const Config& config) {
  config.check_keys("evaluation", {"mode", "crop", "stride", "scales", "flip", "interval"});
  cac_eval::InferenceOptions defaults;
  return cac_eval::InferenceOptions()
      .mode(config.get_choice("evaluation.mode", {"whole", "slide"}, "whole"))
      .crop(config.get<std::vector<int64_t>>("evaluation.crop", defaults.crop()))
      .stride(config.get<std::vector<int64_t>>("evaluation.stride", defaults.stride()))
      .scales(config.get<std::vector<double>>("evaluation.scales", defaults.scales()))
      .flip(config.get<bool>("evaluation.flip", defaults.flip()));
}

std::unique_ptr<torch::optim::Optimizer> build_optimizer(const Config& config, torch::nn::Module& model) {
  config.check_keys("optimizer", {"type", "lr", "momentum", "weight_decay", "betas", "eps", "no_decay", "grad_clip"});
  const std::string type = config.get_choice("optimizer.type", {"sgd", "adamw"});
  const double lr = config.get<double>("optimizer.lr");
  check_positive(config, "optimizer.lr", lr);
  const double decay = config.get<double>("optimizer.weight_decay", type == "sgd" ? 5e-4 : 0.01);
  const auto no_decay = config.get<std::vector<std::string>>("optimizer.no_decay", {});
  std::vector<torch::Tensor> decayed, undecayed;
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    bool exempt = false;
    for (const auto& key : no_decay) exempt = exempt || item.key().find(key) != std::string::npos;
    (exempt ? undecayed : decayed).push_back(item.value());
  }
  if (type == "sgd") {
    const auto options = torch::optim::SGDOptions(lr).momentum(config.get<double>("optimizer.momentum", 0.9));
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decayed, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(options).weight_decay(decay)));
    if (!undecayed.empty()) {
      groups.emplace_back(undecayed, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(options).weight_decay(0)));
    }
    return std::make_unique<torch::optim::SGD>(std::move(groups), options);
  }
  const auto betas = fixed<2>(config, "optimizer.betas", std::array<double, 2>{0.9, 0.999});
  const auto options =
      torch::optim::AdamWOptions(lr).betas({betas[0], betas[1]}).eps(config.get<double>("optimizer.eps", 1e-8));
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(decay)));
  if (!undecayed.empty()) {
    groups.emplace_back(undecayed, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(0)));
  }
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options);
}

LrSchedule::LrSchedule(const Config& config)
    : policy_(config.get_choice("schedule.policy", {"poly", "constant"}, "poly")),
      base_(config.get<double>("optimizer.lr")),
      min_lr_(config.get<double>("schedule.min_lr", 1e-4)),
      power_(config.get<double>("schedule.power", 0.9)),
      warmup_ratio_(config.get<double>("schedule.warmup_ratio", 1e-6)),
      iterations_(config.get<int64_t>("schedule.iterations")),
      warmup_iterations_(config.get<int64_t>("schedule.warmup_iterations", 0)) {
  config.check_keys("schedule", {"iterations", "policy", "power", "min_lr", "warmup_iterations", "warmup_ratio"});
  if (iterations_ <= 0) config.fail("schedule.iterations", "expected a positive number of iterations");
  if (warmup_iterations_ < 0) config.fail("schedule.warmup_iterations", "expected a non-negative number");
}

double LrSchedule::at(int64_t iter) const {
  double lr = base_;
  if (policy_ == "poly") {
    const double progress = std::min(1.0, static_cast<double>(iter) / static_cast<double>(iterations_));
    lr = (base_ - min_lr_) * std::pow(1.0 - progress, power_) + min_lr_;
  }
  if (iter < warmup_iterations_) {
    // mmcv `get_warmup_lr` ('linear'): k = (1 - iter / warmup_iters) · (1 - ratio).
    const double k = (1.0 - static_cast<double>(iter) / static_cast<double>(warmup_iterations_)) * (1.0 - warmup_ratio_);
    lr *= 1.0 - k;
  }
  return lr;
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace cac_engine
