#include "resnet.hpp"

#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/activation.h>

#include <string>

namespace cac_models {

namespace {

constexpr const char* kWho = "cac_models::ResNet";

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t dilation = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                               .stride(stride)
                               .padding(dilation * (kernel / 2))
                               .dilation(dilation)
                               .bias(false));
}

/// Blocks per layer of mmseg's `arch_settings`.
std::vector<int64_t> stage_blocks(int64_t depth) {
  switch (depth) {
    case 18: return {2, 2, 2, 2};
    case 34:
    case 50: return {3, 4, 6, 3};
    case 101: return {3, 4, 23, 3};
    case 152: return {3, 8, 36, 3};
    default: break;
  }
  TORCH_CHECK(false, kWho, ": expected depth 18, 34, 50, 101 or 152 but got ", depth);
  return {};
}

}  // namespace

int64_t expansion(ResidualBlockType block) { return block == ResidualBlockType::Bottleneck ? 4 : 1; }

ResidualBlockImpl::ResidualBlockImpl(const ResidualBlockOptions& options_) : options(options_) { reset(); }

void ResidualBlockImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.in_channels() > 0 && o.planes() > 0 && o.stride() > 0 && o.dilation() > 0,
              "cac_models::ResidualBlock: expected positive in_channels, planes, stride and dilation but got ",
              o.in_channels(), ", ", o.planes(), ", ", o.stride(), ", ", o.dilation());
  const int64_t out = out_channels();
  if (o.block() == ResidualBlockType::Bottleneck) {
    conv1 = register_module("conv1", conv(o.in_channels(), o.planes(), 1));
    bn1 = register_module("bn1", make_norm(o.planes(), o.norm()));
    conv2 = register_module("conv2", conv(o.planes(), o.planes(), 3, o.stride(), o.dilation()));
    bn2 = register_module("bn2", make_norm(o.planes(), o.norm()));
    conv3 = register_module("conv3", conv(o.planes(), out, 1));
    bn3 = register_module("bn3", make_norm(out, o.norm()));
  } else {
    conv1 = register_module("conv1", conv(o.in_channels(), o.planes(), 3, o.stride(), o.dilation()));
    bn1 = register_module("bn1", make_norm(o.planes(), o.norm()));
    // As mmseg's BasicBlock: only the first 3×3 convolution is strided and dilated.
    conv2 = register_module("conv2", conv(o.planes(), out, 3));
    bn2 = register_module("bn2", make_norm(out, o.norm()));
  }
  if (o.stride() != 1 || o.in_channels() != out) {
    downsample = register_module(
        "downsample", torch::nn::Sequential(conv(o.in_channels(), out, 1, o.stride()), make_norm(out, o.norm())));
  }
}

torch::Tensor ResidualBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor out = torch::relu(bn1->forward(conv1->forward(x)));
  out = bn2->forward(conv2->forward(out));
  if (conv3) out = bn3->forward(conv3->forward(torch::relu(out)));
  return torch::relu(out + (downsample ? downsample->forward(x) : x));
}

void ResidualBlockImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::ResidualBlock(" << (options.block() == ResidualBlockType::Bottleneck ? "bottleneck" : "basic")
         << ", " << options.in_channels() << "->" << out_channels() << ", stride=" << options.stride()
         << ", dilation=" << options.dilation() << ")";
}

torch::nn::Sequential make_res_layer(ResidualBlockType block, int64_t in_channels, int64_t planes, int64_t blocks,
                                     int64_t stride, int64_t dilation, bool contract_dilation,
                                     const NormOptions& norm) {
  TORCH_CHECK(blocks > 0, "cac_models::make_res_layer: expected a positive number of blocks but got ", blocks);
  const int64_t first_dilation = contract_dilation && dilation > 1 ? dilation / 2 : dilation;
  torch::nn::Sequential layer;
  int64_t in = in_channels;
  for (int64_t k = 0; k < blocks; ++k) {
    ResidualBlock module(ResidualBlockOptions(block, in, planes)
                             .stride(k == 0 ? stride : 1)
                             .dilation(k == 0 ? first_dilation : dilation)
                             .norm(norm));
    in = module->out_channels();
    layer->push_back(module);
  }
  return layer;
}

ResNetImpl::ResNetImpl(const ResNetOptions& options_) : options(options_) {
  const auto blocks = stage_blocks(options.depth());
  TORCH_CHECK(options.strides().size() == 4 && options.dilations().size() == 4, kWho,
              ": expected 4 strides and 4 dilations but got ", options.strides().size(), " and ",
              options.dilations().size());
  TORCH_CHECK(options.in_channels() > 0 && options.stem_channels() > (options.deep_stem() ? 1 : 0) &&
                  options.base_channels() > 0,
              kWho, ": expected positive in_channels and base_channels and stem_channels of at least ",
              options.deep_stem() ? "2 (deep stem)" : "1", " but got ", options.in_channels(), ", ",
              options.base_channels(), " and ", options.stem_channels());
  for (size_t i = 0; i < 4; ++i) {
    TORCH_CHECK(options.strides()[i] > 0 && options.dilations()[i] > 0, kWho,
                ": expected positive strides and dilations but got strides ", torch::IntArrayRef(options.strides()),
                " and dilations ", torch::IntArrayRef(options.dilations()));
  }
  const auto& norm = options.norm();
  const int64_t width = options.stem_channels();
  const int64_t half = width / 2;
  if (options.deep_stem()) {
    stem = register_module(
        "stem", torch::nn::Sequential(conv(options.in_channels(), half, 3, 2), make_norm(half, norm), torch::nn::ReLU(),
                                      conv(half, half, 3), make_norm(half, norm), torch::nn::ReLU(),
                                      conv(half, width, 3), make_norm(width, norm), torch::nn::ReLU()));
  } else {
    conv1 = register_module(
        "conv1",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), width, 7).stride(2).padding(3).bias(false)));
    bn1 = register_module("bn1", make_norm(width, norm));
  }
  const ResidualBlockType block = options.depth() >= 50 ? ResidualBlockType::Bottleneck : ResidualBlockType::Basic;
  torch::nn::Sequential* layers[] = {&layer1, &layer2, &layer3, &layer4};
  int64_t in = width;
  for (size_t i = 0; i < 4; ++i) {
    const int64_t planes = options.base_channels() << i;
    *layers[i] = register_module("layer" + std::to_string(i + 1),
                                 make_res_layer(block, in, planes, blocks[i], options.strides()[i],
                                                options.dilations()[i], options.contract_dilation(), norm));
    in = planes * expansion(block);
    out_channels_.push_back(in);
  }
  // mmseg 0.x ResNet.__init__ with pretrained=None: init_cfg Kaiming (Conv2d) + Constant 1
  // (_BatchNorm), then each block's Constant 0 on norm3 (Bottleneck) / norm2 (BasicBlock).
  mmcv_default_init(*this);
  if (options.zero_init_residual()) {
    for (const auto& module : modules(/*include_self=*/false)) {
      if (auto* residual = module->as<ResidualBlockImpl>()) {
        constant_init(*(residual->bn3 ? residual->bn3 : residual->bn2), 0.0, 0.0);
      }
    }
  }
}

std::vector<torch::Tensor> ResNetImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), kWho, ": expected an input of shape [B, ",
              options.in_channels(), ", H, W] but got ", x.sizes());
  torch::Tensor h = stem ? stem->forward(x) : torch::relu(bn1->forward(conv1->forward(x)));
  h = torch::max_pool2d(h, 3, 2, 1);
  std::vector<torch::Tensor> outs;
  for (torch::nn::Sequential* layer : {&layer1, &layer2, &layer3, &layer4}) {
    h = (*layer)->forward(h);
    outs.push_back(h);
  }
  return outs;
}

std::vector<int64_t> ResNetImpl::out_channels() const { return out_channels_; }

void ResNetImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::ResNet(depth=" << options.depth() << ", deep_stem=" << (options.deep_stem() ? "true" : "false")
         << ", strides=";
  print_list(stream, options.strides());
  stream << ", dilations=";
  print_list(stream, options.dilations());
  stream << ")";
}

}  // namespace cac_models
