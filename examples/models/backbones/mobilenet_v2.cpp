#include "mobilenet_v2.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace cac_models {

namespace {

constexpr const char* kWho = "cac_models::MobileNetV2";

/// mmseg's `arch_settings`: (expand ratio, channels, blocks) of each layer.
struct LayerSetting {
  int64_t expand_ratio, channels, blocks;
};
constexpr LayerSetting kArch[] = {{1, 16, 1}, {6, 24, 2}, {6, 32, 3}, {6, 64, 4}, {6, 96, 3}, {6, 160, 3}, {6, 320, 1}};
constexpr int64_t kLayers = 7;

/// mmseg's `make_divisible(value, 8)`: nearest multiple of 8, at least 8 and never below 90% of
/// `value`.
int64_t make_divisible(double value, int64_t divisor = 8) {
  int64_t rounded = std::max(divisor, static_cast<int64_t>(value + divisor / 2.0) / divisor * divisor);
  if (rounded < 0.9 * value) rounded += divisor;
  return rounded;
}

}  // namespace

InvertedResidualImpl::InvertedResidualImpl(const InvertedResidualOptions& options_) : options(options_) { reset(); }

void InvertedResidualImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.stride() == 1 || o.stride() == 2, "cac_models::InvertedResidual: expected stride 1 or 2 but got ",
              o.stride());
  TORCH_CHECK(o.in_channels() > 0 && o.out_channels() > 0 && o.expand_ratio() > 0 && o.dilation() > 0,
              "cac_models::InvertedResidual: expected positive in_channels, out_channels, expand_ratio and "
              "dilation but got ",
              o.in_channels(), ", ", o.out_channels(), ", ", o.expand_ratio(), ", ", o.dilation());
  const int64_t hidden = o.in_channels() * o.expand_ratio();
  conv = torch::nn::Sequential();
  if (o.expand_ratio() != 1) {
    conv->push_back(
        ConvModule(ConvModuleOptions(o.in_channels(), hidden, 1).norm_options(o.norm()).activation(Activation::ReLU6)));
  }
  conv->push_back(ConvModule(ConvModuleOptions(hidden, hidden, 3)
                                 .stride(o.stride())
                                 .padding(o.dilation())
                                 .dilation(o.dilation())
                                 .groups(hidden)
                                 .norm_options(o.norm())
                                 .activation(Activation::ReLU6)));
  conv->push_back(
      ConvModule(ConvModuleOptions(hidden, o.out_channels(), 1).norm_options(o.norm()).activation(Activation::None)));
  register_module("conv", conv);
}

bool InvertedResidualImpl::use_residual() const {
  return options.stride() == 1 && options.in_channels() == options.out_channels();
}

torch::Tensor InvertedResidualImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = conv->forward(x);
  return use_residual() ? x + y : y;
}

void InvertedResidualImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::InvertedResidual(" << options.in_channels() << "->" << options.out_channels()
         << ", expand_ratio=" << options.expand_ratio() << ", stride=" << options.stride()
         << ", dilation=" << options.dilation() << ")";
}

MobileNetV2Impl::MobileNetV2Impl(const MobileNetV2Options& options_) : options(options_) {
  TORCH_CHECK(options.widen_factor() > 0, kWho, ": expected a positive widen_factor but got ", options.widen_factor());
  TORCH_CHECK(options.strides().size() == kLayers && options.dilations().size() == kLayers, kWho,
              ": expected 7 strides and 7 dilations but got ", options.strides().size(), " and ",
              options.dilations().size());
  for (int64_t i = 0; i < kLayers; ++i) {
    TORCH_CHECK((options.strides()[i] == 1 || options.strides()[i] == 2) && options.dilations()[i] > 0, kWho,
                ": expected strides of 1 or 2 and positive dilations but got strides ",
                torch::IntArrayRef(options.strides()), " and dilations ", torch::IntArrayRef(options.dilations()));
  }
  TORCH_CHECK(!options.out_indices().empty(), kWho, ": expected at least one out index but got none");
  for (size_t i = 0; i < options.out_indices().size(); ++i) {
    const int64_t index = options.out_indices()[i];
    TORCH_CHECK(index >= 0 && index < kLayers && (i == 0 || index > options.out_indices()[i - 1]), kWho,
                ": expected increasing out_indices in [0, 6] but got ", torch::IntArrayRef(options.out_indices()));
  }
  int64_t in = make_divisible(32 * options.widen_factor());
  conv1 = register_module(
      "conv1",
      ConvModule(
          ConvModuleOptions(3, in, 3).stride(2).padding(1).norm_options(options.norm()).activation(Activation::ReLU6)));
  std::vector<int64_t> channels;
  for (int64_t i = 0; i < kLayers; ++i) {
    const LayerSetting& setting = kArch[i];
    const int64_t out = make_divisible(setting.channels * options.widen_factor());
    torch::nn::Sequential layer;
    for (int64_t k = 0; k < setting.blocks; ++k) {
      // As mmseg: stride and dilation on the first block of the layer only.
      layer->push_back(InvertedResidual(InvertedResidualOptions(in, out, setting.expand_ratio)
                                            .stride(k == 0 ? options.strides()[i] : 1)
                                            .dilation(k == 0 ? options.dilations()[i] : 1)
                                            .norm(options.norm())));
      in = out;
    }
    layers.push_back(register_module("layer" + std::to_string(i + 1), layer));
    channels.push_back(out);
  }
  for (int64_t index : options.out_indices()) out_channels_.push_back(channels[index]);
}

std::vector<torch::Tensor> MobileNetV2Impl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, kWho, ": expected an input of shape [B, 3, H, W] but got ", x.sizes());
  torch::Tensor h = conv1->forward(x);
  std::vector<torch::Tensor> outs;
  size_t next = 0;
  const auto& indices = options.out_indices();
  for (int64_t i = 0; i < kLayers && next < indices.size(); ++i) {
    h = layers[i]->forward(h);
    if (indices[next] == i) {
      outs.push_back(h);
      ++next;
    }
  }
  return outs;
}

std::vector<int64_t> MobileNetV2Impl::out_channels() const { return out_channels_; }

void MobileNetV2Impl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::MobileNetV2(widen_factor=" << options.widen_factor() << ", strides=";
  print_list(stream, options.strides());
  stream << ", dilations=";
  print_list(stream, options.dilations());
  stream << ", out_indices=";
  print_list(stream, options.out_indices());
  stream << ")";
}

}  // namespace cac_models
