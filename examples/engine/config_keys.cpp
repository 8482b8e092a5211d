#include "schema.hpp"

#include "data/context_shift.hpp"
#include "data/loader.hpp"
#include "data/transforms.hpp"
#include "eval/inference.hpp"
#include "models/converters.hpp"
#include "models/registry.hpp"

#include <array>

namespace cac_engine {

namespace {

template <typename T, size_t N>
std::vector<T> as_vector(const std::array<T, N>& values) {
  return std::vector<T>(values.begin(), values.end());
}

std::vector<KeySpec> declare() {
  using K = KeyType;
  using R = Requirement;
  const cac_models::ModelOptions model;
  const cac::ContextAwareHeadOptions head(2, 1);
  const cac::ContextAwareLossOptions loss;
  const cac_data::ContextShiftOptions shift;
  const cac_data::TrainPipelineOptions train;
  const cac_data::TestPipelineOptions test;
  const cac_data::LoaderOptions loader;
  const cac_eval::InferenceOptions inference;
  const std::string scope = head.oracle_scope() == cac::OracleScope::Image ? "image" : "batch";
  std::vector<KeySpec> keys;
  const auto key = [&keys](const std::string& name, KeyType type, const std::string& doc) -> KeySpec& {
    return keys.emplace_back(name, type, doc);
  };

  // model: cac_models::ModelOptions and the library's cac::ContextAwareHeadOptions /
  // cac::ContextAwareLossOptions (channels, classes, ignore_index and align_corners come from the
  // decode head: mmseg's 255 and false).
  key("model.name", K::String, "a `make_model` name (`cac-info --list`)").require().one_of(cac_models::model_names());
  key("model.num_classes", K::Integer, "classes of every head; must match the dataset's").require().min(1);
  key("model.cac", K::Boolean, "add the context-aware classifier").def(model.cac);
  key("model.sync_bn", K::Boolean,
      "SyncBN: batch statistics over all processes (plain BN on one process; docs/distributed.md)")
      .def(model.norm.sync());
  key("model.dropout_ratio", K::Number, "channel dropout of every decode and auxiliary head (`0` disables it)")
      .derive("each head's")
      .min(0)
      .below(1);
  key("model.pretrained", K::String,
      "initial weights: a `cac-train` checkpoint or a PyTorch `.pth` (loaded by key, non-strict, the report printed); "
      "training stops before the first iteration if the file is missing; `none` or `\"\"`: from scratch")
      .def("");
  key("model.pretrained_source", K::String,
      "layout of the `.pth` of `model.pretrained` or `--load-from` (docs/checkpoints.md)")
      .def("mmseg")
      .one_of(cac_models::checkpoint_source_names());
  key("model.pretrained_url", K::String,
      "where `model.pretrained` is downloaded from (quoted when the file is missing)")
      .def("");
  key("model.cac_head.tau", K::Number, "scale τ of the cosine classifiers (paper Eqs. 3, 6)").def(head.tau()).above(0);
  key("model.cac_head.hidden_channels", K::Integer, "bottleneck width of the projectors θp, θy")
      .derive("channels / 2")
      .min(1);
  key("model.cac_head.oracle_scope", K::String,
      "oracle prototypes pooled per `batch` (released code) or `image` (paper Eq. 1)")
      .def(scope)
      .one_of({"batch", "image"});
  key("model.cac_loss.check_finite", K::Boolean,
      "throw naming the non-finite loss term and input (cac::ContextAwareLossOptions::check_finite)")
      .def(loss.check_finite());
  key("model.cac_loss.kl_weight", K::Number, "λ, weight of the distillation term (paper Eq. 8)")
      .def(loss.kl_weight())
      .min(0);
  key("model.cac_loss.logits_weight", K::Number, "weight of the cross-entropy on the original logits p")
      .def(loss.logits_weight())
      .min(0);
  key("model.cac_loss.context_weight", K::Number, "weight of the cross-entropy on the context-aware logits pp")
      .def(loss.context_weight())
      .min(0);
  key("model.cac_loss.oracle_weight", K::Number, "weight of the cross-entropy on the oracle logits py")
      .def(loss.oracle_weight())
      .min(0);
  key("model.cac_loss.kl.teacher_weight", K::Number,
      "weight of softmax(teacher) in the KL target, the rest on the label (`1`: Eq. 11)")
      .def(loss.kl().teacher_weight())
      .min(0)
      .max(1);
  key("model.cac_loss.kl.entropy_weighted", K::Boolean, "weigh pixels by the teacher's entropy (Table 3, Eq. 10)")
      .def(loss.kl().entropy_weighted());
  key("model.cac_loss.kl.class_wise", K::Boolean,
      "average the KL within each class, then over classes (Table 3, Eq. 11)")
      .def(loss.kl().class_wise());

  // data: cac_data::DatasetOptions, ContextShiftOptions, the pipelines and the loader.
  key("data.type", K::String, "dataset layout (docs/datasets.md)")
      .require()
      .one_of({"ade20k", "coco_stuff164k", "cityscapes", "pascal_context59", "context_shift", "custom"});
  key("data.root", K::String, "dataset root").require();
  key("data.img_suffix", K::String, "image file suffix").derive("the layout's");
  key("data.seg_map_suffix", K::String, "label file suffix").derive("the layout's");
  key("data.reduce_zero_label", K::Boolean, "label 0 → 255 (ignored), v → v - 1").derive("the layout's");
  key("data.classes", K::Strings, "class names (required for `custom`)").derive("the layout's").not_empty();
  for (const std::string split : {"train", "val"}) {
    key("data." + split + "_img_dir", K::String, "`custom`: " + split + " image directory, relative to `data.root`")
        .derive("none");
    key("data." + split + "_ann_dir", K::String, "`custom`: " + split + " label directory, relative to `data.root`")
        .derive("none");
    key("data." + split + "_split_file", K::String,
        "`custom`: " + split + " sample names, one a line (`\"\"`: every image)")
        .def("");
  }
  const std::string cs = "data.context_shift.";
  key(cs + "num_classes", K::Integer, "classes K of the generated dataset").def(shift.num_classes()).min(2).max(254);
  key(cs + "image_size", K::Integer, "side of the square images").def(shift.image_size()).min(8);
  key(cs + "num_train", K::Integer, "training images").def(shift.num_train()).min(1);
  key(cs + "num_val", K::Integer, "validation images").def(shift.num_val()).min(1);
  key(cs + "shift", K::Boolean, "apply the per-image context shift (`false`: the control)").def(shift.shift());
  key(cs + "class_wise", K::Boolean, "draw the shift per class in each image (no image-level statistic undoes it)")
      .def(shift.class_wise());
  key(cs + "plain_ratio", K::Number, "probability that a class region has no stripes")
      .def(shift.plain_ratio())
      .min(0)
      .max(1);
  key(cs + "shift_strength", K::Number, "strength s of the shift").def(shift.shift_strength()).min(0).below(1);
  key(cs + "seed", K::Integer, "seed of layouts, shifts and noise").def(shift.seed()).min(0);
  key(cs + "regions", K::Integer, "Voronoi regions per image").def(shift.regions()).min(1);
  key(cs + "other_ratio", K::Number, "probability that a region is \"other\" (label 0)")
      .def(shift.other_ratio())
      .min(0)
      .below(1);
  key(cs + "noise", K::Number, "per-pixel noise standard deviation").def(shift.noise()).min(0);
  key(cs + "stripe_period", K::Number, "class stripe period, in pixels").def(shift.stripe_period()).above(0);
  key(cs + "stripe_contrast", K::Number, "class stripe depth").def(shift.stripe_contrast()).min(0).below(1);
  const std::string tp = "data.train_pipeline.";
  key(tp + "img_scale", K::Integers, "base scale {long, short} of the random resize")
      .def(as_vector(train.img_scale()))
      .size(2)
      .above(0);
  key(tp + "ratio_range", K::Numbers, "random resize ratios {min, max}")
      .def(as_vector(train.ratio_range()))
      .size(2)
      .above(0);
  key(tp + "crop_size", K::Integers, "random crop {h, w}").def(as_vector(train.crop_size())).size(2).above(0);
  key(tp + "cat_max_ratio", K::Number, "largest share of one class in a crop (retried up to 10 times)")
      .def(train.cat_max_ratio())
      .above(0)
      .max(1);
  key(tp + "flip_prob", K::Number, "probability of a horizontal flip").def(train.flip_prob()).min(0).max(1);
  key(tp + "photometric", K::Boolean, "mmseg's PhotoMetricDistortion").def(train.photometric());
  key("data.test_pipeline.img_scale", K::Integers, "keep-ratio resize {long, short} for evaluation")
      .def(as_vector(test.img_scale()))
      .size(2)
      .above(0);
  key("data.normalize.mean", K::Numbers, "per-channel mean (RGB after `to_rgb`)")
      .def(as_vector(train.normalize().mean()))
      .size(3);
  key("data.normalize.std", K::Numbers, "per-channel standard deviation")
      .def(as_vector(train.normalize().std()))
      .size(3)
      .above(0);
  key("data.normalize.to_rgb", K::Boolean, "convert BGR to RGB before normalising").def(train.normalize().to_rgb());
  key("data.batch_size", K::Integer, "images per process and step").def(loader.batch_size()).min(1);
  key("data.num_workers", K::Integer, "loader threads per process (`0`: load in the training thread)")
      .def(loader.num_workers())
      .min(0);
  key("data.prefetch", K::Integer, "batches prepared ahead").def(loader.prefetch()).min(1);

  // optimizer (torch::optim::SGD / AdamW) and schedule (mmcv's poly with linear warm-up).
  key("optimizer.type", K::String, "optimizer").require(R::Training).one_of({"sgd", "adamw"});
  key("optimizer.lr", K::Number, "base learning rate").require(R::Training).above(0);
  key("optimizer.momentum", K::Number, "SGD momentum").def(0.9).min(0).max(1);
  key("optimizer.weight_decay", K::Number, "weight decay").derive("`5e-4` (sgd), `0.01` (adamw)").min(0);
  key("optimizer.betas", K::Numbers, "AdamW betas").def(std::vector<double>{0.9, 0.999}).size(2).min(0).below(1);
  key("optimizer.eps", K::Number, "AdamW epsilon").def(1e-8).above(0);
  key("optimizer.no_decay", K::Strings, "parameters whose names contain one of these get no weight decay")
      .def(std::vector<std::string>{});
  key("optimizer.grad_clip", K::Number, "max gradient norm (`0`: off)").def(0.0).min(0);
  key("schedule.iterations", K::Integer, "training iterations").require(R::Training).min(1);
  key("schedule.policy", K::String, "`poly`: `(lr - min_lr)·(1 - iter/iterations)^power + min_lr`; `constant`")
      .def("poly")
      .one_of({"poly", "constant"});
  key("schedule.power", K::Number, "exponent of the poly decay").def(0.9).min(0);
  key("schedule.min_lr", K::Number, "final learning rate of the poly decay").def(1e-4).min(0);
  key("schedule.warmup_iterations", K::Integer, "mmcv's linear warm-up iterations (`0`: none)").def(0).min(0);
  key("schedule.warmup_ratio", K::Number, "warm-up starts at `warmup_ratio · lr`").def(1e-6).above(0).max(1);

  // runtime and evaluation.
  key("runtime.seed", K::Integer, "seed of weights, loader and augmentation (`--seed` overrides)").def(0).min(0);
  key("runtime.log_interval", K::Integer, "iterations between progress lines").def(50).min(1);
  key("runtime.checkpoint_interval", K::Integer, "iterations between `iter_N.pt` checkpoints (`0`: the final one only)")
      .def(0)
      .min(0);
  key("runtime.keep_last", K::Integer, "newest `iter_N.pt` kept (older ones deleted)").def(3).min(1);
  key("runtime.amp", K::Boolean, "mixed precision: the forward pass under autocast").def(false);
  key("runtime.amp_dtype", K::String, "autocast type (`auto`: float16 on CUDA with loss scaling, bfloat16 on CPU)")
      .def("auto")
      .one_of({"auto", "float16", "bfloat16"});
  key("evaluation.interval", K::Integer, "iterations between evaluations (`0`: at the end only)").def(0).min(0);
  key("evaluation.mode", K::String, "`whole` image or sliding windows")
      .def(inference.mode())
      .one_of({"whole", "slide"});
  key("evaluation.crop", K::Integers, "sliding-window size {h, w}").def(inference.crop()).size(2).above(0);
  key("evaluation.stride", K::Integers, "sliding-window stride {h, w} (at most `crop`)")
      .def(inference.stride())
      .size(2)
      .above(0);
  key("evaluation.scales", K::Numbers, "test scales (ratios of the image size)")
      .def(inference.scales())
      .above(0)
      .not_empty();
  key("evaluation.flip", K::Boolean, "also test the flipped image").def(inference.flip());
  return keys;
}

}  // namespace

const std::vector<KeySpec>& config_schema() {
  static const std::vector<KeySpec> schema = declare();
  return schema;
}

}  // namespace cac_engine
