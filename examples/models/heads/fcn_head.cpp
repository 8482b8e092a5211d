#include "fcn_head.hpp"

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
}

torch::Tensor FCNHeadImpl::features(const std::vector<torch::Tensor>& inputs) {
  const torch::Tensor x = transform_inputs(inputs);
  torch::Tensor output = convs->is_empty() ? x : convs->forward(x);
  if (conv_cat) output = conv_cat->forward(torch::cat({x, output}, 1));
  return output;
}

void FCNHeadImpl::pretty_print_options(std::ostream& stream) const {
  stream << std::boolalpha << ", num_convs=" << options.num_convs() << ", kernel_size=" << options.kernel_size()
         << ", concat_input=" << options.concat_input() << ", dilation=" << options.dilation();
}

}  // namespace cac_models
