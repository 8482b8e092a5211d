#pragma once
/// \file
/// Building blocks shared by the reference models (mmcv/mmsegmentation 0.x equivalents), with
/// module names that follow mmsegmentation's state-dict keys one-to-one.

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace cac_models {

/// Activation after a `ConvModule` (mmcv `act_cfg`).
enum class Activation { None, ReLU, ReLU6 };

/// Normalisation used by every `ConvModule` and backbone (mmcv `norm_cfg`). Plain batch norm on
/// one process; the distributed engine turns `sync` into cross-process statistics.
struct NormOptions {
  /// Synchronise batch statistics across the process group (mmseg `SyncBN`).
  /// Default: false
  TORCH_ARG(bool, sync) = false;
  /// Batch-norm epsilon.
  /// Default: 1e-5
  TORCH_ARG(double, eps) = 1e-5;
  /// Batch-norm momentum.
  /// Default: 0.1
  TORCH_ARG(double, momentum) = 0.1;
};

/// Options of `ConvModule` (mmcv `ConvModule`: conv → norm → activation).
struct ConvModuleOptions {
  /// `in_channels`, `out_channels`, `kernel_size` as in `Conv2d`.
  ConvModuleOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  /// Input channels. No default.
  TORCH_ARG(int64_t, in_channels);
  /// Output channels. No default.
  TORCH_ARG(int64_t, out_channels);
  /// Square kernel size. No default.
  TORCH_ARG(int64_t, kernel_size);
  /// Default: 1
  TORCH_ARG(int64_t, stride) = 1;
  /// Default: 0
  TORCH_ARG(int64_t, padding) = 0;
  /// Default: 1
  TORCH_ARG(int64_t, dilation) = 1;
  /// Default: 1
  TORCH_ARG(int64_t, groups) = 1;
  /// Whether the block has a batch norm (named `bn`); the conv has a bias only without one
  /// (mmcv's `bias='auto'`).
  /// Default: true
  TORCH_ARG(bool, norm) = true;
  /// Batch-norm settings.
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm_options) = {};
  /// Default: Activation::ReLU
  TORCH_ARG(Activation, activation) = Activation::ReLU;
};

/// mmcv's `ConvModule`: `conv` (+ `bn`) (+ activation); keys `conv.weight`, `bn.weight`, ...
class ConvModuleImpl : public torch::nn::Cloneable<ConvModuleImpl> {
 public:
  explicit ConvModuleImpl(const ConvModuleOptions& options_) : options(options_) { reset(); }
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  ConvModuleOptions options;
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvModule);

/// A `torch::nn::Sequential` of tensor-to-tensor modules with a non-template `forward`, so that
/// it can itself be an element of a `Sequential` (Python's nested `nn.Sequential`s: HRNet's
/// transition and fuse layers, mmcv's `FFN`); children are named `0`, `1`, ... as in `Sequential`.
class NestedSequentialImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  /// Applies the children in order.
  torch::Tensor forward(torch::Tensor x) { return torch::nn::SequentialImpl::forward(std::move(x)); }
};
TORCH_MODULE(NestedSequential);

/// A batch-norm layer with the given settings (mmcv `build_norm_layer` for BN/SyncBN).
torch::nn::BatchNorm2d make_norm(int64_t channels, const NormOptions& options);

/// Bilinear resize of `x` `[B, C, H, W]` to `size` (mmseg `resize`).
torch::Tensor resize(const torch::Tensor& x, at::IntArrayRef size, bool align_corners);

/// A multi-scale feature extractor: returns one feature map per output stage.
class BackboneImpl : public torch::nn::Module {
 public:
  /// The feature maps of the output stages, highest resolution first.
  virtual std::vector<torch::Tensor> forward(const torch::Tensor& x) = 0;
  /// Channels of each output stage.
  virtual std::vector<int64_t> out_channels() const = 0;

 protected:
  /// Puts every batch norm of this backbone in eval mode (mmseg `norm_eval`: frozen running
  /// statistics while the rest trains); backbones call it from `train`.
  void set_norms_eval();
};

/// Writes `values` as `(a, b, c)` (for `pretty_print`).
void print_list(std::ostream& stream, const std::vector<int64_t>& values);

}  // namespace cac_models
