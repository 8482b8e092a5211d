#include "fcn_head.hpp"

#include <torch/nn/modules/pooling.h>

namespace cac_models {

FCNHeadImpl::FCNHeadImpl(const FCNHeadOptions& options_)
    : DecodeHeadImpl(options_.decode(), "cac_models::FCNHead"), options(options_) {
  const int64_t k = options.kernel_size(), dilation = options.dilation(), c = options.decode().channels();
  const NormOptions& norm = options.decode().norm();
  TORCH_CHECK(options.num_convs() >= 0, who_, ": expected num_convs >= 0 but got ", options.num_convs());
  TORCH_CHECK(k > 0 && k % 2 == 1, who_, ": expected a positive odd kernel_size but got ", k);
  TORCH_CHECK(dilation > 0, who_, ": expected a positive dilation but got ", dilation);
  const int64_t in = input_channels();
  TORCH_CHECK(options.num_convs() > 0 || in == c, who_, ": expected in_channels == channels (", c,
              ") when num_convs is 0 but got ", in);
  convs = register_module("convs", torch::nn::Sequential());
  for (int64_t i = 0; i < options.num_convs(); ++i) {
    convs->push_back(ConvModule(
        ConvModuleOptions(i == 0 ? in : c, c, k).padding(k / 2 * dilation).dilation(dilation).norm_options(norm)));
  }
  if (options.concat_input()) {
    conv_cat =
        register_module("conv_cat", ConvModule(ConvModuleOptions(in + c, c, k).padding(k / 2).norm_options(norm)));
  }
  if (options.global_context()) {
    image_pool = register_module(
        "image_pool", torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)),
                                            ConvModule(ConvModuleOptions(in, c, 1).norm_options(norm))));
    bottleneck =
        register_module("bottleneck", ConvModule(ConvModuleOptions(2 * c, c, 3).padding(1).norm_options(norm)));
  }
}

torch::Tensor FCNHeadImpl::features(const std::vector<torch::Tensor>& inputs) {
  const torch::Tensor x = transform_inputs(inputs);
  torch::Tensor output = convs->is_empty() ? x : convs->forward(x);
  if (conv_cat) output = conv_cat->forward(torch::cat({x, output}, 1));
  if (image_pool) {
    const torch::Tensor context = resize(image_pool->forward(x), x.sizes().slice(2), decode_options().align_corners());
    output = bottleneck->forward(torch::cat({context, output}, 1));
  }
  return output;
}

void FCNHeadImpl::pretty_print_options(std::ostream& stream) const {
  stream << std::boolalpha << ", num_convs=" << options.num_convs() << ", kernel_size=" << options.kernel_size()
         << ", concat_input=" << options.concat_input() << ", dilation=" << options.dilation();
  if (options.global_context()) stream << ", global_context=true";
}

}  // namespace cac_models
