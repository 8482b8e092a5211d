#include "registry.hpp"

#include "backbones/hrnet.hpp"
#include "backbones/mobilenet_v2.hpp"
#include "backbones/resnet.hpp"
#include "backbones/simple_convnet.hpp"
#include "backbones/swin.hpp"
#include "heads/fcn_head.hpp"
#include "heads/ocr_head.hpp"
#include "heads/sep_aspp_head.hpp"
#include "heads/uper_head.hpp"

#include <functional>
#include <numeric>
#include <sstream>

namespace cac_models {

namespace {

constexpr const char* kWho = "cac_models::make_model";
/// Width d of every Table 1 decode head.
constexpr int64_t kChannels = 512;

/// A head's common options without CAC: `in_channels`, width `channels`, the model's classes and norm.
DecodeHeadOptions plain_head(std::vector<int64_t> in_channels, int64_t channels, const ModelOptions& options) {
  return DecodeHeadOptions(std::move(in_channels), channels, options.num_classes).norm(options.norm);
}

/// The options of a head that takes the model's CAC settings (`cac`, `cac_head`, `cac_loss`).
DecodeHeadOptions cac_head(std::vector<int64_t> in_channels, int64_t channels, const ModelOptions& options) {
  return plain_head(std::move(in_channels), channels, options)
      .cac(options.cac)
      .cac_head(options.cac_head)
      .cac_loss(options.cac_loss);
}

/// The auxiliary head of every Table 1 model but OCRNet: FCNHead on stage 2, one 3×3 conv of
/// 256 channels, no concatenation, dropout 0.1, loss weight 0.4.
std::shared_ptr<DecodeHeadImpl> auxiliary_fcn(int64_t in_channels, const ModelOptions& options) {
  return std::make_shared<FCNHeadImpl>(
      FCNHeadOptions(plain_head({in_channels}, 256, options).in_index({2}).loss_weight(0.4))
          .num_convs(1)
          .concat_input(false));
}

/// FCN (configs/_base_/models/fcn_r50-d8.py): 2 convs 3×3 with concat_input on the last stage.
EncoderDecoder fcn(std::shared_ptr<BackboneImpl> backbone, const ModelOptions& options) {
  const auto channels = backbone->out_channels();
  auto head = std::make_shared<FCNHeadImpl>(
      FCNHeadOptions(cac_head({channels.at(3)}, kChannels, options).in_index({3})).num_convs(2).concat_input(true));
  return EncoderDecoder(backbone, head, auxiliary_fcn(channels.at(2), options));
}

/// DeepLabV3+ (configs/_base_/models/deeplabv3plus_r50-d8.py): ASPP dilations (1, 12, 24, 36) on
/// the last stage, c1 branch 48 channels on stage 0.
EncoderDecoder deeplabv3plus(std::shared_ptr<BackboneImpl> backbone, const ModelOptions& options) {
  const auto channels = backbone->out_channels();
  auto head = std::make_shared<DepthwiseSeparableASPPHeadImpl>(DepthwiseSeparableASPPHeadOptions(
      cac_head({channels.at(3)}, kChannels, options).in_index({3}), channels.at(0), 48));
  return EncoderDecoder(backbone, head, auxiliary_fcn(channels.at(2), options));
}

/// UperNet (configs/_base_/models/upernet_r50.py): PPM (1, 2, 3, 6) + FPN over the 4 stages.
EncoderDecoder upernet(std::shared_ptr<BackboneImpl> backbone, const ModelOptions& options) {
  const auto channels = backbone->out_channels();
  TORCH_CHECK(channels.size() == 4, kWho, ": expected a backbone with 4 output stages but got ", channels.size());
  auto head = std::make_shared<UPerHeadImpl>(UPerHeadOptions(
      cac_head(channels, kChannels, options).in_index({0, 1, 2, 3}).input_transform(InputTransform::MultipleSelect)));
  return EncoderDecoder(backbone, head, auxiliary_fcn(channels.at(2), options));
}

/// OCRNet (configs/_base_/models/ocrnet_hr18.py): a cascade of an FCNHead (1×1 conv over the
/// resized concatenation of all HRNet branches, no dropout, loss weight 0.4) and an OCRHead
/// (512 channels, OCR 256, no dropout); no auxiliary head. CAC goes into the OCR stage.
EncoderDecoder ocrnet(std::shared_ptr<BackboneImpl> backbone, const ModelOptions& options) {
  const auto channels = backbone->out_channels();
  TORCH_CHECK(channels.size() == 4, kWho, ": expected a backbone with 4 output stages but got ", channels.size());
  const int64_t sum = std::accumulate(channels.begin(), channels.end(), int64_t{0});
  auto first = std::make_shared<FCNHeadImpl>(FCNHeadOptions(plain_head(channels, sum, options)
                                                                .in_index({0, 1, 2, 3})
                                                                .input_transform(InputTransform::ResizeConcat)
                                                                .dropout_ratio(-1)
                                                                .loss_weight(0.4))
                                                 .num_convs(1)
                                                 .kernel_size(1)
                                                 .concat_input(false));
  auto second = std::make_shared<OCRHeadImpl>(OCRHeadOptions(cac_head(channels, kChannels, options)
                                                                 .in_index({0, 1, 2, 3})
                                                                 .input_transform(InputTransform::ResizeConcat)
                                                                 .dropout_ratio(-1))
                                                  .ocr_channels(256));
  return EncoderDecoder(backbone, std::vector<std::shared_ptr<DecodeHeadImpl>>{first, second});
}

// ---- Backbones of Table 1 ----------------------------------------------------------------------

/// MobileNetV2 D8 (configs/_base_/models/fcn_r50-d8.py with mmseg's MobileNetV2 overrides):
/// strides (1, 2, 2, 1, 1, 1, 1), dilations (1, 1, 1, 2, 2, 4, 4), outputs 24, 32, 96, 320.
/// Plain per-process batch norm whatever `o.norm.sync()`: the released MobileNetV2 configs
/// (mmseg's and CAC's configs/mobilenet_v2/*.py) replace the backbone with `_delete_=True` and
/// give no `norm_cfg`, so mmseg's `MobileNetV2` default `dict(type='BN')` applies; the heads keep
/// the config's SyncBN.
std::shared_ptr<BackboneImpl> mobilenet_v2_d8(const ModelOptions& o) {
  return std::make_shared<MobileNetV2Impl>(MobileNetV2Options::d8().norm(NormOptions(o.norm).sync(false)));
}
/// ResNetV1c-`depth` D8 (deeplabv3plus_r50-d8.py): strides (1, 2, 1, 1), dilations (1, 1, 2, 4).
std::shared_ptr<BackboneImpl> resnet_v1c_d8(int64_t depth, const ModelOptions& o) {
  return std::make_shared<ResNetImpl>(ResNetOptions(depth).strides({1, 2, 1, 1}).dilations({1, 1, 2, 4}).norm(o.norm));
}
/// ResNetV1c-`depth` (upernet_r50.py): strides (1, 2, 2, 2), no dilation.
std::shared_ptr<BackboneImpl> resnet_v1c(int64_t depth, const ModelOptions& o) {
  return std::make_shared<ResNetImpl>(ResNetOptions(depth).norm(o.norm));
}
/// HRNetV2-W18/W48 (configs/_base_/models/ocrnet_hr18.py, widths 18/48): all four branches out.
std::shared_ptr<BackboneImpl> hrnetv2(int64_t width, const ModelOptions& o) {
  return make_hrnetv2(width, HRNetOptions().norm(o.norm));
}
/// Swin (upernet_swin.py and the Swin-B/L 22K configs): drop path 0.3, LayerNorm.
std::shared_ptr<BackboneImpl> swin(const SwinTransformerOptions& swin_options) {
  return std::make_shared<SwinTransformerImpl>(swin_options);
}

/// The small model of the bundled context-shift dataset: `SimpleConvNet` (16, 32, 48; output
/// stride 4) and an FCNHead of width d = 48 (one 3×3 conv, no concatenation, dropout 0.1), no auxiliary head.
/// With `global_context`, the head also has ASPPHead's image-level branch (`fcn_tiny_gc`).
EncoderDecoder fcn_tiny(const ModelOptions& options, bool global_context = false) {
  auto backbone = std::make_shared<SimpleConvNetImpl>(SimpleConvNetOptions().strides({2, 2, 1}).norm(options.norm));
  const int64_t width = backbone->out_channels().back();
  auto head = std::make_shared<FCNHeadImpl>(FCNHeadOptions(cac_head({width}, width, options))
                                                .num_convs(1)
                                                .concat_input(false)
                                                .global_context(global_context));
  return EncoderDecoder(backbone, head);
}

struct Entry {
  std::string name;
  std::string description;
  std::function<EncoderDecoder(const ModelOptions&)> make;
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> table{
      {"fcn_mobilenetv2", "FCN (FCNHead) on MobileNetV2 (widen 1.0, D8), auxiliary FCNHead",
       [](const ModelOptions& o) { return fcn(mobilenet_v2_d8(o), o); }},
      {"deeplabv3plus_mobilenetv2", "DeepLabV3+ (DepthwiseSeparableASPPHead) on MobileNetV2 (D8), auxiliary FCNHead",
       [](const ModelOptions& o) { return deeplabv3plus(mobilenet_v2_d8(o), o); }},
      {"ocrnet_hrnetv2_w18", "OCRNet (FCNHead + OCRHead cascade) on HRNetV2-W18",
       [](const ModelOptions& o) { return ocrnet(hrnetv2(18, o), o); }},
      {"upernet_r50", "UperNet (UPerHead) on ResNetV1c-50, auxiliary FCNHead",
       [](const ModelOptions& o) { return upernet(resnet_v1c(50, o), o); }},
      {"deeplabv3plus_r50", "DeepLabV3+ (DepthwiseSeparableASPPHead) on ResNetV1c-50 (D8), auxiliary FCNHead",
       [](const ModelOptions& o) { return deeplabv3plus(resnet_v1c_d8(50, o), o); }},
      {"ocrnet_hrnetv2_w48", "OCRNet (FCNHead + OCRHead cascade) on HRNetV2-W48",
       [](const ModelOptions& o) { return ocrnet(hrnetv2(48, o), o); }},
      {"upernet_r101", "UperNet (UPerHead) on ResNetV1c-101, auxiliary FCNHead",
       [](const ModelOptions& o) { return upernet(resnet_v1c(101, o), o); }},
      {"deeplabv3plus_r101", "DeepLabV3+ (DepthwiseSeparableASPPHead) on ResNetV1c-101 (D8), auxiliary FCNHead",
       [](const ModelOptions& o) { return deeplabv3plus(resnet_v1c_d8(101, o), o); }},
      {"upernet_swin_tiny", "UperNet (UPerHead) on Swin-T (window 7), auxiliary FCNHead",
       [](const ModelOptions& o) { return upernet(swin(SwinTransformerOptions::tiny()), o); }},
      {"upernet_swin_base", "UperNet (UPerHead) on Swin-B (window 12, ImageNet-22K), auxiliary FCNHead",
       [](const ModelOptions& o) { return upernet(swin(SwinTransformerOptions::base()), o); }},
      {"upernet_swin_large", "UperNet (UPerHead) on Swin-L (window 12, ImageNet-22K), auxiliary FCNHead",
       [](const ModelOptions& o) { return upernet(swin(SwinTransformerOptions::large()), o); }},
      {"fcn_tiny", "FCN (FCNHead, d = 48) on a 3-stage SimpleConvNet: the bundled context-shift dataset's model",
       [](const ModelOptions& o) { return fcn_tiny(o); }},
      {"fcn_tiny_gc",
       "fcn_tiny with an image-level context branch (ASPPHead's image_pool + bottleneck): the demo's global-context "
       "baseline",
       [](const ModelOptions& o) { return fcn_tiny(o, true); }},
  };
  return table;
}

const Entry& find(const std::string& name) {
  for (const auto& entry : entries()) {
    if (entry.name == name) return entry;
  }
  std::ostringstream known;
  for (const auto& entry : entries()) known << (known.tellp() > 0 ? ", " : "") << entry.name;
  TORCH_CHECK(false, kWho, ": expected a model name among ", known.str(), " but got '", name, "'");
}

}  // namespace

EncoderDecoder make_model(const std::string& name, const ModelOptions& options) {
  const Entry& entry = find(name);
  TORCH_CHECK(options.num_classes > 0, kWho, ": expected a positive num_classes but got ", options.num_classes);
  EncoderDecoder model = entry.make(options);
  if (options.dropout_ratio) {
    for (const auto& module : model->modules()) {
      if (auto* head = module->as<DecodeHeadImpl>()) head->set_dropout_ratio(*options.dropout_ratio);
    }
  }
  return model;
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& entry : entries()) names.push_back(entry.name);
  return names;
}

std::string model_description(const std::string& name) { return find(name).description; }

}  // namespace cac_models
