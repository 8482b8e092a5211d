#include "uper_head.hpp"

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/pooling.h>

namespace cac_models {

UPerHeadImpl::UPerHeadImpl(const UPerHeadOptions& options_)
    : DecodeHeadImpl(options_.decode(), "cac_models::UPerHead"), options(options_) {
  TORCH_CHECK(decode_options().input_transform() == InputTransform::MultipleSelect, who_,
              ": expected InputTransform::MultipleSelect but got ", decode_options().input_transform());
  const auto& in = decode_options().in_channels();
  const int64_t c = decode_options().channels(), last = in.back();
  const auto& norm = decode_options().norm();
  const auto& scales = options.pool_scales();
  psp_modules = register_module("psp_modules", torch::nn::ModuleList());
  for (int64_t scale : scales) {
    TORCH_CHECK(scale > 0, who_, ": expected positive pool_scales but got ", at::IntArrayRef(scales));
    psp_modules->push_back(
        torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(scale)),
                              ConvModule(ConvModuleOptions(last, c, 1).norm_options(norm))));
  }
  bottleneck = register_module(
      "bottleneck",
      ConvModule(
          ConvModuleOptions(last + static_cast<int64_t>(scales.size()) * c, c, 3).padding(1).norm_options(norm)));
  lateral_convs = register_module("lateral_convs", torch::nn::ModuleList());
  fpn_convs = register_module("fpn_convs", torch::nn::ModuleList());
  for (size_t i = 0; i + 1 < in.size(); ++i) {
    lateral_convs->push_back(ConvModule(ConvModuleOptions(in[i], c, 1).norm_options(norm)));
    fpn_convs->push_back(ConvModule(ConvModuleOptions(c, c, 3).padding(1).norm_options(norm)));
  }
  fpn_bottleneck = register_module(
      "fpn_bottleneck",
      ConvModule(ConvModuleOptions(static_cast<int64_t>(in.size()) * c, c, 3).padding(1).norm_options(norm)));
}

torch::Tensor UPerHeadImpl::features(const std::vector<torch::Tensor>& inputs) {
  const std::vector<torch::Tensor> x = select_inputs(inputs);
  const bool align = decode_options().align_corners();
  const size_t levels = x.size();

  // Laterals, the last one being the pyramid pooling of the last stage.
  std::vector<torch::Tensor> laterals;
  laterals.reserve(levels);
  for (size_t i = 0; i + 1 < levels; ++i) laterals.push_back(lateral_convs->at<ConvModuleImpl>(i).forward(x[i]));
  const torch::Tensor& top = x.back();
  std::vector<torch::Tensor> pooled{top};
  for (const auto& branch : *psp_modules) {
    pooled.push_back(resize(branch->as<torch::nn::SequentialImpl>()->forward(top), top.sizes().slice(2), align));
  }
  laterals.push_back(bottleneck->forward(torch::cat(pooled, 1)));

  // Top-down path.
  for (size_t i = levels - 1; i > 0; --i) {
    laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].sizes().slice(2), align);
  }
  std::vector<torch::Tensor> outs;
  outs.reserve(levels);
  for (size_t i = 0; i + 1 < levels; ++i) outs.push_back(fpn_convs->at<ConvModuleImpl>(i).forward(laterals[i]));
  outs.push_back(laterals.back());
  for (size_t i = 1; i < levels; ++i) outs[i] = resize(outs[i], outs[0].sizes().slice(2), align);
  return fpn_bottleneck->forward(torch::cat(outs, 1));
}

void UPerHeadImpl::pretty_print_options(std::ostream& stream) const {
  stream << ", pool_scales=" << at::IntArrayRef(options.pool_scales());
}

}  // namespace cac_models
