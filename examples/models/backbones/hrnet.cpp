#include "hrnet.hpp"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/upsampling.h>

#include <cmath>
#include <sstream>

namespace cac_models {

namespace {

constexpr const char* kWho = "cac_models::HRNet";

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

/// `blocks` residual blocks from `in` channels to `planes · expansion` (mmseg `_make_layer` and
/// `_make_one_branch`, both with stride 1 here).
torch::nn::Sequential make_blocks(HRNetBlock block, int64_t in, int64_t planes, int64_t blocks,
                                  const NormOptions& norm) {
  return make_res_layer(block, in, planes, blocks, 1, 1, false, norm);
}

/// conv `kernel`×`kernel` + BN (+ ReLU) as the `Sequential` mmseg builds (children `0`, `1`, `2`).
NestedSequential conv_bn(int64_t in, int64_t out, int64_t kernel, int64_t stride, bool relu, const NormOptions& norm) {
  NestedSequential block(conv(in, out, kernel, stride), make_norm(out, norm));
  if (relu) block->push_back(torch::nn::ReLU());
  return block;
}

void check_stage(const HRNetStage& stage, size_t index) {
  const size_t branches = stage.num_blocks().size();
  TORCH_CHECK(branches > 0 && stage.num_channels().size() == branches, kWho, ": expected stage", index + 1,
              " to have as many num_channels as num_blocks (at least one) but got ", stage.num_blocks().size(), " and ",
              stage.num_channels().size());
  TORCH_CHECK(stage.num_modules() > 0, kWho, ": expected stage", index + 1, " to have a positive num_modules but got ",
              stage.num_modules());
  for (size_t b = 0; b < branches; ++b) {
    TORCH_CHECK(stage.num_blocks()[b] > 0 && stage.num_channels()[b] > 0, kWho, ": expected stage", index + 1,
                " to have positive num_blocks and num_channels but got ", stage.num_blocks()[b], " and ",
                stage.num_channels()[b], " in branch ", b);
  }
}

}  // namespace

// ---- OptionalSequentialList --------------------------------------------------------------------

void OptionalSequentialListImpl::push_back(NestedSequential entry) {
  if (entry) register_module(std::to_string(entries_.size()), entry);
  entries_.push_back(std::move(entry));
}

void OptionalSequentialListImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::OptionalSequentialList(size=" << entries_.size() << ")";
}

// ---- HRNet stages ------------------------------------------------------------------------------

std::vector<HRNetStage> hrnetv2_stages(int64_t width) {
  TORCH_CHECK(width > 0, "cac_models::hrnetv2_stages: expected a positive width but got ", width);
  const int64_t w = width;
  return {HRNetStage(HRNetBlock::Bottleneck, {4}, {64}).num_modules(1),
          HRNetStage(HRNetBlock::Basic, {4, 4}, {w, 2 * w}).num_modules(1),
          HRNetStage(HRNetBlock::Basic, {4, 4, 4}, {w, 2 * w, 4 * w}).num_modules(4),
          HRNetStage(HRNetBlock::Basic, {4, 4, 4, 4}, {w, 2 * w, 4 * w, 8 * w}).num_modules(3)};
}

// ---- HRModule ----------------------------------------------------------------------------------

HRModuleImpl::HRModuleImpl(const HRNetStage& stage, std::vector<int64_t> in_channels, bool multiscale_output,
                           const NormOptions& norm)
    : multiscale_output_(multiscale_output) {
  const size_t n = stage.num_blocks().size();
  TORCH_CHECK(in_channels.size() == n, "cac_models::HRModule: expected ", n, " in_channels but got ",
              in_channels.size());
  branches = register_module("branches", torch::nn::ModuleList());
  for (size_t b = 0; b < n; ++b) {
    branches->push_back(
        make_blocks(stage.block(), in_channels[b], stage.num_channels()[b], stage.num_blocks()[b], norm));
    in_channels[b] = stage.num_channels()[b] * expansion(stage.block());
  }
  const std::vector<int64_t>& c = in_channels;
  if (n > 1) {
    fuse_layers = register_module("fuse_layers", torch::nn::ModuleList());
    const size_t outputs = multiscale_output ? n : 1;
    for (size_t i = 0; i < outputs; ++i) {
      OptionalSequentialList row;
      for (size_t j = 0; j < n; ++j) {
        if (j > i) {
          // 1×1 conv + BN, then mmseg's Upsample(scale_factor=2^(j-i), bilinear, align_corners=False):
          // output size floor(size · 2^(j-i)) sampled with scale 2^-(j-i), which is exactly
          // torch::nn::Upsample with that scale factor.
          const double scale = std::ldexp(1.0, static_cast<int>(j - i));
          NestedSequential up = conv_bn(c[j], c[i], 1, 1, /*relu=*/false, norm);
          up->push_back(torch::nn::Upsample(torch::nn::UpsampleOptions()
                                                .scale_factor(std::vector<double>{scale, scale})
                                                .mode(torch::kBilinear)
                                                .align_corners(false)));
          row->push_back(up);
        } else if (j == i) {
          row->push_back(NestedSequential{nullptr});
        } else {
          NestedSequential down;
          for (size_t k = 0; k < i - j; ++k) {
            const bool last = k + 1 == i - j;
            down->push_back(conv_bn(c[j], last ? c[i] : c[j], 3, 2, /*relu=*/!last, norm));
          }
          row->push_back(down);
        }
      }
      fuse_layers->push_back(row);
    }
  }
  out_channels_ = multiscale_output || n == 1 ? in_channels : std::vector<int64_t>{in_channels[0]};
}

std::vector<torch::Tensor> HRModuleImpl::forward(std::vector<torch::Tensor> x) {
  const size_t n = branches->size();
  TORCH_CHECK(x.size() == n, "cac_models::HRModule: expected ", n, " branch inputs but got ", x.size());
  for (size_t b = 0; b < n; ++b) x[b] = branches[b]->as<torch::nn::Sequential>()->forward(x[b]);
  if (n == 1) return x;
  std::vector<torch::Tensor> fused;
  for (size_t i = 0; i < fuse_layers->size(); ++i) {
    const auto& row = *fuse_layers[i]->as<OptionalSequentialListImpl>();
    torch::Tensor y;
    for (size_t j = 0; j < n; ++j) {
      torch::Tensor term;
      if (j == i) {
        term = x[j];
      } else if (j > i) {
        // mmseg resizes the upsampled map again to branch i's size (bilinear, align_corners
        // False): a second interpolation whenever an odd size was rounded up on the way down.
        term = resize(row[j]->forward(x[j]), x[i].sizes().slice(2), /*align_corners=*/false);
      } else {
        term = row[j]->forward(x[j]);
      }
      y = y.defined() ? y + term : term;
    }
    fused.push_back(torch::relu(y));
  }
  return fused;
}

void HRModuleImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::HRModule(channels=";
  print_list(stream, out_channels_);
  stream << ", multiscale_output=" << (multiscale_output_ ? "true" : "false") << ")";
}

// ---- HRNet -------------------------------------------------------------------------------------

HRNetImpl::HRNetImpl(std::vector<HRNetStage> stages, const HRNetOptions& options_)
    : stages_(std::move(stages)), options(options_) {
  TORCH_CHECK(stages_.size() == 4, kWho, ": expected 4 stages but got ", stages_.size());
  for (size_t s = 0; s < stages_.size(); ++s) check_stage(stages_[s], s);
  TORCH_CHECK(stages_[0].num_blocks().size() == 1, kWho, ": expected stage1 to have a single branch but got ",
              stages_[0].num_blocks().size());
  TORCH_CHECK(options.in_channels() > 0, kWho, ": expected positive in_channels but got ", options.in_channels());
  const NormOptions& norm = options.norm();

  conv1 = register_module("conv1", conv(options.in_channels(), 64, 3, 2));
  bn1 = register_module("bn1", make_norm(64, norm));
  conv2 = register_module("conv2", conv(64, 64, 3, 2));
  bn2 = register_module("bn2", make_norm(64, norm));

  const HRNetStage& first = stages_[0];
  layer1 =
      register_module("layer1", make_blocks(first.block(), 64, first.num_channels()[0], first.num_blocks()[0], norm));
  std::vector<int64_t> previous{first.num_channels()[0] * expansion(first.block())};

  OptionalSequentialList* transitions[] = {&transition1, &transition2, &transition3};
  torch::nn::ModuleList* hr_stages[] = {&stage2, &stage3, &stage4};
  for (size_t s = 1; s < 4; ++s) {
    const HRNetStage& stage = stages_[s];
    std::vector<int64_t> current;
    for (int64_t c : stage.num_channels()) current.push_back(c * expansion(stage.block()));

    // Transition: keep a branch (absent entry) or change its width with a 3×3 conv; every new
    // branch starts from the last previous one through stride-2 3×3 convs (the last one changes
    // the width).
    OptionalSequentialList transition;
    const size_t before = previous.size();
    for (size_t i = 0; i < current.size(); ++i) {
      if (i < before) {
        transition->push_back(current[i] == previous[i] ? NestedSequential{nullptr}
                                                        : conv_bn(previous[i], current[i], 3, 1, /*relu=*/true, norm));
      } else {
        NestedSequential down;
        for (size_t j = 0; j + before <= i; ++j) {
          const int64_t in = previous.back();
          down->push_back(conv_bn(in, j == i - before ? current[i] : in, 3, 2, /*relu=*/true, norm));
        }
        transition->push_back(down);
      }
    }
    *transitions[s - 1] = register_module("transition" + std::to_string(s), transition);

    torch::nn::ModuleList modules;
    std::vector<int64_t> channels = current;
    for (int64_t m = 0; m < stage.num_modules(); ++m) {
      const bool multiscale = !(s == 3 && !options.multiscale_output() && m + 1 == stage.num_modules());
      HRModule module(stage, channels, multiscale, norm);
      channels = module->out_channels();
      modules->push_back(module);
    }
    *hr_stages[s - 1] = register_module("stage" + std::to_string(s + 1), modules);
    previous = channels;
  }
  out_channels_ = previous;
  // mmseg 0.x HRNet.__init__ with pretrained=None: init_cfg Kaiming (Conv2d) + Constant 1
  // (_BatchNorm); zero_init_residual is off by default and in every Table 1 config.
  mmcv_default_init(*this);
}

std::vector<torch::Tensor> HRNetImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), kWho, ": expected an input of shape [B, ",
              options.in_channels(), ", H, W] but got ", x.sizes());
  torch::Tensor h = torch::relu(bn1->forward(conv1->forward(x)));
  h = torch::relu(bn2->forward(conv2->forward(h)));
  std::vector<torch::Tensor> y{layer1->forward(h)};

  const OptionalSequentialList transitions[] = {transition1, transition2, transition3};
  const torch::nn::ModuleList hr_stages[] = {stage2, stage3, stage4};
  for (size_t s = 0; s < 3; ++s) {
    const auto& transition = *transitions[s];
    std::vector<torch::Tensor> branches;
    for (size_t i = 0; i < transition.size(); ++i) {
      // As in mmseg, every present transition entry reads the last branch (only new branches
      // have one in HRNetV2); an absent entry passes branch i through.
      if (transition[i]) {
        branches.push_back(transition[i]->forward(y.back()));
      } else {
        branches.push_back(y[i]);
      }
    }
    for (const auto& module : *hr_stages[s]) branches = module->as<HRModuleImpl>()->forward(std::move(branches));
    y = std::move(branches);
  }
  return y;
}

std::vector<int64_t> HRNetImpl::out_channels() const { return out_channels_; }

void HRNetImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::HRNet(channels=";
  print_list(stream, out_channels_);
  stream << ", norm_eval=" << (options.norm_eval() ? "true" : "false") << ")";
}

std::shared_ptr<BackboneImpl> make_hrnetv2(int64_t width, const HRNetOptions& options) {
  TORCH_CHECK(width > 0, "cac_models::make_hrnetv2: expected a positive width (18 or 48 in Table 1) but got ", width);
  return std::make_shared<HRNetImpl>(hrnetv2_stages(width), options);
}

}  // namespace cac_models
