#include "sep_aspp_head.hpp"

#include <torch/nn/modules/pooling.h>

namespace cac_models {

void DepthwiseSeparableConvModuleImpl::reset() {
  const int64_t in = options.in_channels();
  TORCH_CHECK(in > 0 && options.out_channels() > 0, "cac_models::DepthwiseSeparableConvModule: expected positive ",
              "channels but got ", in, " -> ", options.out_channels());
  depthwise_conv = register_module("depthwise_conv", ConvModule(ConvModuleOptions(in, in, options.kernel_size())
                                                                    .stride(options.stride())
                                                                    .padding(options.padding())
                                                                    .dilation(options.dilation())
                                                                    .groups(in)
                                                                    .norm_options(options.norm())));
  pointwise_conv = register_module(
      "pointwise_conv", ConvModule(ConvModuleOptions(in, options.out_channels(), 1).norm_options(options.norm())));
}

torch::Tensor DepthwiseSeparableConvModuleImpl::forward(const torch::Tensor& x) {
  return pointwise_conv->forward(depthwise_conv->forward(x));
}

DepthwiseSeparableASPPHeadImpl::DepthwiseSeparableASPPHeadImpl(const DepthwiseSeparableASPPHeadOptions& options_)
    : DecodeHeadImpl(options_.decode(), "cac_models::DepthwiseSeparableASPPHead"), options(options_) {
  const int64_t in = input_channels(), c = decode_options().channels();
  const auto& norm = decode_options().norm();
  const auto& dilations = options.dilations();
  TORCH_CHECK(!dilations.empty(), who_, ": expected at least one dilation but got none");
  TORCH_CHECK(options.c1_in_channels() >= 0 && options.c1_channels() >= 0, who_,
              ": expected non-negative c1_in_channels and c1_channels but got ", options.c1_in_channels(), " and ",
              options.c1_channels());
  TORCH_CHECK(options.c1_in_channels() > 0 || options.c1_channels() == 0, who_,
              ": expected c1_channels 0 without the c1 branch (c1_in_channels 0) but got ", options.c1_channels());

  image_pool = register_module(
      "image_pool", torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)),
                                          ConvModule(ConvModuleOptions(in, c, 1).norm_options(norm))));
  aspp_modules = register_module("aspp_modules", torch::nn::ModuleList());
  for (int64_t dilation : dilations) {
    TORCH_CHECK(dilation > 0, who_, ": expected positive dilations but got ", at::IntArrayRef(dilations));
    if (dilation == 1) {
      aspp_modules->push_back(ConvModule(ConvModuleOptions(in, c, 1).norm_options(norm)));
    } else {
      aspp_modules->push_back(DepthwiseSeparableConvModule(
          DepthwiseSeparableConvModuleOptions(in, c, 3).padding(dilation).dilation(dilation).norm(norm)));
    }
  }
  const auto branches = static_cast<int64_t>(dilations.size());
  bottleneck = register_module("bottleneck",
                               ConvModule(ConvModuleOptions((branches + 1) * c, c, 3).padding(1).norm_options(norm)));
  if (options.c1_in_channels() > 0) {
    c1_bottleneck = register_module(
        "c1_bottleneck",
        ConvModule(ConvModuleOptions(options.c1_in_channels(), options.c1_channels(), 1).norm_options(norm)));
  }
  sep_bottleneck = register_module(
      "sep_bottleneck",
      torch::nn::Sequential(
          DepthwiseSeparableConvModule(
              DepthwiseSeparableConvModuleOptions(c + options.c1_channels(), c, 3).padding(1).norm(norm)),
          DepthwiseSeparableConvModule(DepthwiseSeparableConvModuleOptions(c, c, 3).padding(1).norm(norm))));
}

torch::Tensor DepthwiseSeparableASPPHeadImpl::features(const std::vector<torch::Tensor>& inputs) {
  const torch::Tensor x = transform_inputs(inputs);
  const auto size = x.sizes().slice(2);
  std::vector<torch::Tensor> branches;
  branches.reserve(aspp_modules->size() + 1);
  branches.push_back(resize(image_pool->forward(x), size, decode_options().align_corners()));
  for (const auto& branch : *aspp_modules) {
    if (auto* conv = branch->as<ConvModuleImpl>()) {
      branches.push_back(conv->forward(x));
    } else {
      branches.push_back(branch->as<DepthwiseSeparableConvModuleImpl>()->forward(x));
    }
  }
  torch::Tensor output = bottleneck->forward(torch::cat(branches, 1));
  if (c1_bottleneck) {
    TORCH_CHECK(!inputs.empty() && inputs.front().dim() == 4 && inputs.front().size(1) == options.c1_in_channels(),
                who_, ": expected backbone stage 0 of shape [B, ", options.c1_in_channels(),
                ", h, w] for the c1 branch but got ", inputs.empty() ? at::IntArrayRef() : inputs.front().sizes());
    const torch::Tensor c1 = c1_bottleneck->forward(inputs.front());
    output = torch::cat({resize(output, c1.sizes().slice(2), decode_options().align_corners()), c1}, 1);
  }
  return sep_bottleneck->forward(output);
}

void DepthwiseSeparableASPPHeadImpl::pretty_print_options(std::ostream& stream) const {
  stream << ", c1_in_channels=" << options.c1_in_channels() << ", c1_channels=" << options.c1_channels()
         << ", dilations=" << at::IntArrayRef(options.dilations());
}

}  // namespace cac_models
