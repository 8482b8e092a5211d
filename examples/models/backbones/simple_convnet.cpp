#include "simple_convnet.hpp"

namespace cac_models {

SimpleConvNetImpl::SimpleConvNetImpl(const SimpleConvNetOptions& options_) : options(options_) {
  TORCH_CHECK(!options.channels().empty(), "cac_models::SimpleConvNet: expected at least one stage but got none");
  stages = register_module("stages", torch::nn::ModuleList());
  TORCH_CHECK(options.strides().size() == options.channels().size(), "cac_models::SimpleConvNet: expected ",
              options.channels().size(), " strides (one per stage) but got ", options.strides().size());
  int64_t in = options.in_channels();
  for (size_t i = 0; i < options.channels().size(); ++i) {
    const int64_t out = options.channels()[i], stride = options.strides()[i];
    TORCH_CHECK(out > 0 && stride > 0, "cac_models::SimpleConvNet: expected positive channels and strides but got ",
                torch::IntArrayRef(options.channels()), " and ", torch::IntArrayRef(options.strides()));
    stages->push_back(NestedSequential(
        ConvModule(ConvModuleOptions(in, out, 3).stride(stride).padding(1).norm_options(options.norm())),
        ConvModule(ConvModuleOptions(out, out, 3).padding(1).norm_options(options.norm()))));
    in = out;
  }
}

std::vector<torch::Tensor> SimpleConvNetImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(),
              "cac_models::SimpleConvNet: expected an input of shape [B, ", options.in_channels(), ", H, W] but got ",
              x.sizes());
  std::vector<torch::Tensor> outs;
  torch::Tensor h = x;
  for (const auto& stage : *stages) {
    h = stage->as<NestedSequentialImpl>()->forward(h);
    outs.push_back(h);
  }
  return outs;
}

void SimpleConvNetImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::SimpleConvNet(channels=";
  print_list(stream, options.channels());
  stream << ")";
}

}  // namespace cac_models
