#pragma once
/// \file
/// The model zoo's factory: every model of the CAC paper's Table 1 by name, baseline or `+ CAC`,
/// exactly as mmsegmentation 0.x configures it for ADE20K.

#include "common.hpp"
#include "segmentor.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cac_models {

/// What `make_model` varies in a named model.
///
/// ```
/// auto model = make_model("upernet_swin_tiny", {/*num_classes=*/150, /*cac=*/true});
/// ```
struct ModelOptions {
  /// Number of classes of every head (150 for ADE20K, 19 for Cityscapes, 60 for Pascal Context).
  /// Default: 150
  int64_t num_classes = 150;
  /// Add the context-aware classifier to the decode head (OCRNet: to the OCR stage).
  /// Default: false
  bool cac = false;
  /// Batch norm of the backbone and every head (mmseg's `norm_cfg`), except that the MobileNetV2
  /// rows' backbone always uses plain batch norm (`sync` false), as the released configs do.
  /// Default: NormOptions()
  NormOptions norm{};
  /// The context-aware head's settings (τ, oracle scope, bottleneck width; channels and classes
  /// come from the head).
  /// Default: CACHeadSettings() (the released heads': τ 15, oracle pooled over the batch, bottleneck d/2)
  CACHeadSettings cac_head{};
  /// The CAC objective's term weights and KL settings.
  /// Default: cac::ContextAwareLossOptions()
  cac::ContextAwareLossOptions cac_loss{};
  /// Overrides the channel-dropout ratio of every decode and auxiliary head (≤ 0 disables it).
  /// Default: each head's (mmseg's: 0.1, none in OCRNet)
  std::optional<double> dropout_ratio{};
};

/// The model `name` (one of `model_names()`) with fresh weights: backbone, decode head(s) and
/// auxiliary head as in mmseg's configs for Table 1 (head channels 512, `align_corners` false,
/// auxiliary FCNHead with loss weight 0.4 on stage 2, OCRNet as a cascade FCN + OCR). Throws
/// `c10::Error` listing the known names for an unknown one. ImageNet-pretrained backbone weights
/// are loaded separately (checkpoint loading).
EncoderDecoder make_model(const std::string& name, const ModelOptions& options = {});

/// The names `make_model` accepts: the paper's Table 1 in its order, then `fcn_tiny` (the small
/// model of the bundled context-shift dataset) and `fcn_tiny_gc` (the same with an image-level
/// context branch, `FCNHeadOptions::global_context`).
std::vector<std::string> model_names();

/// A one-line description of the model `name`: decode head, backbone and settings.
std::string model_description(const std::string& name);

}  // namespace cac_models
