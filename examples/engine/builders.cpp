#include "builders.hpp"

#include <torch/torch.h>

#include <cmath>

namespace cac_engine {

namespace {

// A fixed-length list key (the schema checks the length) as a std::array.
template <size_t N, typename T>
std::array<T, N> fixed(const Config& config, const std::string& key) {
  using Element = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
  const auto values = config.get<std::vector<Element>>(key);
  std::array<T, N> out{};
  for (size_t i = 0; i < N; ++i) out[i] = static_cast<T>(values.at(i));
  return out;
}

cac_data::NormalizeOptions normalize(const Config& config) {
  return cac_data::NormalizeOptions()
      .mean(fixed<3, double>(config, "data.normalize.mean"))
      .std(fixed<3, double>(config, "data.normalize.std"))
      .to_rgb(config.get<bool>("data.normalize.to_rgb"));
}

}  // namespace

cac_models::ModelOptions model_options(const Config& config) {
  cac_models::ModelOptions options;
  options.num_classes = config.get<int64_t>("model.num_classes");
  options.cac = config.get<bool>("model.cac");
  options.norm.sync(config.get<bool>("model.sync_bn"));
  if (config.has("model.dropout_ratio")) options.dropout_ratio = config.get<double>("model.dropout_ratio");
  // cac::ContextAwareHeadOptions: channels and classes come from the head, ignore_index from the
  // decode head (255, as the datasets).
  options.cac_head.tau(config.get<double>("model.cac_head.tau"))
      .oracle_scope(config.get<std::string>("model.cac_head.oracle_scope") == "image" ? cac::OracleScope::Image
                                                                                      : cac::OracleScope::Batch);
  if (config.has("model.cac_head.hidden_channels")) {
    options.cac_head.hidden_channels(config.get<int64_t>("model.cac_head.hidden_channels"));
  }
  // cac::ContextAwareLossOptions and its EntropyAwareKLOptions (paper Table 3); align_corners and
  // ignore_index come from the decode head.
  options.cac_loss.kl_weight(config.get<double>("model.cac_loss.kl_weight"))
      .logits_weight(config.get<double>("model.cac_loss.logits_weight"))
      .context_weight(config.get<double>("model.cac_loss.context_weight"))
      .oracle_weight(config.get<double>("model.cac_loss.oracle_weight"))
      .check_finite(config.get<bool>("model.cac_loss.check_finite"))
      .kl(cac::EntropyAwareKLOptions()
              .teacher_weight(config.get<double>("model.cac_loss.kl.teacher_weight"))
              .entropy_weighted(config.get<bool>("model.cac_loss.kl.entropy_weighted"))
              .class_wise(config.get<bool>("model.cac_loss.kl.class_wise")));
  return options;
}

cac_models::EncoderDecoder build_model(const Config& config) {
  return cac_models::make_model(config.get<std::string>("model.name"), model_options(config));
}

cac_data::DatasetOptions dataset_options(const Config& config, const std::string& split) {
  const std::string type = config.get<std::string>("data.type");
  cac_data::DatasetOptions options(type, config.get<std::string>("data.root"));
  options.split(split);
  if (config.has("data.img_suffix")) options.img_suffix(config.get<std::string>("data.img_suffix"));
  if (config.has("data.seg_map_suffix")) options.seg_map_suffix(config.get<std::string>("data.seg_map_suffix"));
  if (config.has("data.reduce_zero_label")) options.reduce_zero_label(config.get<bool>("data.reduce_zero_label"));
  if (type == "custom") {
    options.img_dir(config.get<std::string>("data." + split + "_img_dir"));
    options.ann_dir(config.get<std::string>("data." + split + "_ann_dir"));
    options.split_file(config.get<std::string>("data." + split + "_split_file"));
  }
  if (config.has("data.classes")) options.classes(config.get<std::vector<std::string>>("data.classes"));
  return options;
}

cac_data::ContextShiftOptions context_shift_options(const Config& config) {
  const std::string key = "data.context_shift.";
  return cac_data::ContextShiftOptions()
      .num_classes(config.get<int64_t>(key + "num_classes"))
      .image_size(config.get<int64_t>(key + "image_size"))
      .num_train(config.get<int64_t>(key + "num_train"))
      .num_val(config.get<int64_t>(key + "num_val"))
      .shift(config.get<bool>(key + "shift"))
      .class_wise(config.get<bool>(key + "class_wise"))
      .plain_ratio(config.get<double>(key + "plain_ratio"))
      .shift_strength(config.get<double>(key + "shift_strength"))
      .seed(static_cast<uint64_t>(config.get<int64_t>(key + "seed")))
      .regions(config.get<int64_t>(key + "regions"))
      .other_ratio(config.get<double>(key + "other_ratio"))
      .noise(config.get<double>(key + "noise"))
      .stripe_period(config.get<double>(key + "stripe_period"))
      .stripe_contrast(config.get<double>(key + "stripe_contrast"));
}

std::shared_ptr<cac_data::Dataset> build_dataset(const Config& config, const std::string& split) {
  const cac_data::DatasetOptions options = dataset_options(config, split);
  if (options.type() == "context_shift")
    cac_data::generate_context_shift(options.root(), context_shift_options(config));
  return cac_data::make_dataset(options);
}

cac_data::DatasetInfo dataset_info(const Config& config) {
  const std::string type = config.get<std::string>("data.type");
  cac_data::DatasetInfo info;
  if (type == "ade20k") {
    info = cac_data::ade20k_info();
  } else if (type == "coco_stuff164k") {
    info = cac_data::coco_stuff164k_info();
  } else if (type == "cityscapes") {
    info = cac_data::cityscapes_info();
  } else if (type == "pascal_context59") {
    info = cac_data::pascal_context59_info();
  } else if (type == "context_shift") {
    info = cac_data::context_shift_info(config.get<int64_t>("data.context_shift.num_classes"));
  } else {
    TORCH_CHECK(type == "custom", "cac_engine::dataset_info: expected data.type 'ade20k', 'coco_stuff164k', ",
                "'cityscapes', 'pascal_context59', 'context_shift' or 'custom' but got '", type, "'");
    info.name = "custom";
  }
  if (config.has("data.classes")) {  // as make_dataset: the names given, a generated palette
    info.classes = config.get<std::vector<std::string>>("data.classes");
    info.palette = cac_data::default_palette(info.num_classes());
  }
  TORCH_CHECK(!info.classes.empty(), "cac_engine::dataset_info: expected the class names of a custom dataset ",
              "(data.classes) but got none");
  return info;
}

cac_data::TrainPipelineOptions train_pipeline(const Config& config) {
  const std::string key = "data.train_pipeline.";
  return cac_data::TrainPipelineOptions()
      .img_scale(fixed<2, int64_t>(config, key + "img_scale"))
      .ratio_range(fixed<2, double>(config, key + "ratio_range"))
      .crop_size(fixed<2, int64_t>(config, key + "crop_size"))
      .cat_max_ratio(config.get<double>(key + "cat_max_ratio"))
      .flip_prob(config.get<double>(key + "flip_prob"))
      .photometric(config.get<bool>(key + "photometric"))
      .normalize(normalize(config));
}

cac_data::TestPipelineOptions test_pipeline(const Config& config) {
  return cac_data::TestPipelineOptions()
      .img_scale(fixed<2, int64_t>(config, "data.test_pipeline.img_scale"))
      .normalize(normalize(config));
}

cac_data::LoaderOptions loader_options(const Config& config, const torch::Device& device, int64_t rank,
                                       int64_t world_size) {
  return cac_data::LoaderOptions()
      .batch_size(config.get<int64_t>("data.batch_size"))
      .num_workers(config.get<int64_t>("data.num_workers"))
      .prefetch(config.get<int64_t>("data.prefetch"))
      .seed(static_cast<uint64_t>(config.get<int64_t>("runtime.seed")))
      .shuffle(true)
      .drop_last(true)
      .rank(rank)
      .world_size(world_size)
      .pin_memory(device.is_cuda())
      .device(device);
}

cac_eval::InferenceOptions inference_options(const Config& config) {
  return cac_eval::InferenceOptions()
      .mode(config.get<std::string>("evaluation.mode"))
      .crop(config.get<std::vector<int64_t>>("evaluation.crop"))
      .stride(config.get<std::vector<int64_t>>("evaluation.stride"))
      .scales(config.get<std::vector<double>>("evaluation.scales"))
      .flip(config.get<bool>("evaluation.flip"));
}

std::unique_ptr<torch::optim::Optimizer> build_optimizer(const Config& config, torch::nn::Module& model) {
  const std::string type = config.get<std::string>("optimizer.type");
  const double lr = config.get<double>("optimizer.lr");
  // The schema's derived default of optimizer.weight_decay (mmseg's SGD and Swin AdamW configs).
  const double decay = config.get<double>("optimizer.weight_decay", type == "sgd" ? 5e-4 : 0.01);
  const auto no_decay = config.get<std::vector<std::string>>("optimizer.no_decay");
  std::vector<torch::Tensor> decayed, undecayed;
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    bool exempt = false;
    for (const auto& key : no_decay) exempt = exempt || item.key().find(key) != std::string::npos;
    (exempt ? undecayed : decayed).push_back(item.value());
  }
  if (type == "sgd") {
    const auto options = torch::optim::SGDOptions(lr).momentum(config.get<double>("optimizer.momentum"));
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(
        decayed, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(options).weight_decay(decay)));
    if (!undecayed.empty()) {
      groups.emplace_back(
          undecayed, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(options).weight_decay(0)));
    }
    return std::make_unique<torch::optim::SGD>(std::move(groups), options);
  }
  const auto betas = fixed<2, double>(config, "optimizer.betas");
  const auto options =
      torch::optim::AdamWOptions(lr).betas({betas[0], betas[1]}).eps(config.get<double>("optimizer.eps"));
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      decayed, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(decay)));
  if (!undecayed.empty()) {
    groups.emplace_back(
        undecayed, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(0)));
  }
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options);
}

LrSchedule::LrSchedule(const Config& config)
    : policy_(config.get<std::string>("schedule.policy")),
      base_(config.get<double>("optimizer.lr")),
      min_lr_(config.get<double>("schedule.min_lr")),
      power_(config.get<double>("schedule.power")),
      warmup_ratio_(config.get<double>("schedule.warmup_ratio")),
      iterations_(config.get<int64_t>("schedule.iterations")),
      warmup_iterations_(config.get<int64_t>("schedule.warmup_iterations")) {}

double LrSchedule::at(int64_t iter) const {
  double lr = base_;
  if (policy_ == "poly") {
    const double progress = std::min(1.0, static_cast<double>(iter) / static_cast<double>(iterations_));
    lr = (base_ - min_lr_) * std::pow(1.0 - progress, power_) + min_lr_;
  }
  if (iter < warmup_iterations_) {
    // mmcv `get_warmup_lr` ('linear'): k = (1 - iter / warmup_iters) · (1 - ratio).
    const double k =
        (1.0 - static_cast<double>(iter) / static_cast<double>(warmup_iterations_)) * (1.0 - warmup_ratio_);
    lr *= 1.0 - k;
  }
  return lr;
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace cac_engine
