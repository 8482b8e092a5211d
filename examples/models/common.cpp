#include "common.hpp"

#include <torch/nn/functional/upsampling.h>
#include <torch/nn/functional/activation.h>

namespace cac_models {

torch::nn::BatchNorm2d make_norm(int64_t channels, const NormOptions& options) {
  return torch::nn::BatchNorm2d(
      torch::nn::BatchNorm2dOptions(channels).eps(options.eps()).momentum(options.momentum()));
}

void ConvModuleImpl::reset() {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(),
                                                                            options.out_channels(),
                                                                            options.kernel_size())
                                                       .stride(options.stride())
                                                       .padding(options.padding())
                                                       .dilation(options.dilation())
                                                       .groups(options.groups())
                                                       .bias(!options.norm())));
  if (options.norm()) bn = register_module("bn", make_norm(options.out_channels(), options.norm_options()));
}

torch::Tensor ConvModuleImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = conv->forward(x);
  if (bn) y = bn->forward(y);
  switch (options.activation()) {
    case Activation::ReLU: return torch::relu(y);
    case Activation::ReLU6: return torch::clamp(y, 0, 6);
    case Activation::None: return y;
  }
  return y;
}

torch::Tensor resize(const torch::Tensor& x, at::IntArrayRef size, bool align_corners) {
  if (x.sizes().slice(2).equals(size)) return x;
  return torch::nn::functional::interpolate(
      x, torch::nn::functional::InterpolateFuncOptions().size(size.vec()).mode(torch::kBilinear).align_corners(
             align_corners));
}

void BackboneImpl::set_norms_eval() {
  for (const auto& module : modules()) {
    if (auto* norm = module->as<torch::nn::BatchNorm2dImpl>()) norm->eval();
  }
}

void print_list(std::ostream& stream, const std::vector<int64_t>& values) {
  stream << "(";
  for (size_t i = 0; i < values.size(); ++i) stream << (i ? ", " : "") << values[i];
  stream << ")";
}

}  // namespace cac_models
