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

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace cac_models {

/// Activation after a `ConvModule` (mmcv `act_cfg`).
enum class Activation { None, ReLU, ReLU6 };

/// Normalisation used by every `ConvModule` and backbone (mmcv `norm_cfg`). Plain batch norm on
/// one process; the distributed engine turns `sync` into cross-process statistics
/// (`cac_engine::synchronize_batch_norms`).
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

class Norm2dImpl;

/// Batch norm of a `Norm2d` in training with statistics over a group of processes: returns the
/// output for `input` and updates `norm`'s running statistics. Installed by the distributed engine
/// (`set_sync_norm`).
using SyncNormFunction = std::function<torch::Tensor(const torch::Tensor& input, Norm2dImpl& norm)>;

/// The batch norm of every reference model (mmcv `build_norm_layer` for `BN`/`SyncBN`): exactly
/// `torch::nn::BatchNorm2d` (same options, parameters `weight`, `bias`, buffers `running_mean`,
/// `running_var`, `num_batches_tracked`, initialisation and forward), except that a layer built
/// with `sync` calls its `sync_function` in training when one is installed. Without one (a single
/// process) it is plain batch norm.
///
/// ```
/// cac_models::Norm2d norm(64, cac_models::NormOptions().sync(true));
/// auto y = norm->forward(torch::randn({2, 64, 8, 8}));
/// ```
class Norm2dImpl : public torch::nn::Cloneable<Norm2dImpl> {
 public:
  /// A fresh layer with LibTorch's batch-norm options; `sync` marks it for synchronisation.
  explicit Norm2dImpl(const torch::nn::BatchNorm2dOptions& options_, bool sync_ = false);
  /// A fresh layer of `channels` with the eps, momentum and `sync` of `norm`.
  Norm2dImpl(int64_t channels, const NormOptions& norm);
  /// A layer with the options, parameters, buffers and mode of `norm` (copies), marked `sync`.
  explicit Norm2dImpl(const torch::nn::BatchNorm2dImpl& norm, bool sync_ = false);
  /// Registers fresh parameters (ones, zeros) and buffers (zeros, ones, 0), as `BatchNorm2d`.
  void reset() override;
  /// `(*sync_function)(input, *this)` in training when `sync` and a function is installed,
  /// otherwise `torch::nn::BatchNorm2d`'s forward. `input` is `[N, C, H, W]` with C = `num_features`.
  torch::Tensor forward(const torch::Tensor& input);
  /// Prints `cac_models::Norm2d(C, eps=..., momentum=..., sync=...)`.
  void pretty_print(std::ostream& stream) const override;

  /// The options of `torch::nn::BatchNorm2d`.
  torch::nn::BatchNorm2dOptions options;
  /// Whether the layer takes part in synchronisation (`NormOptions::sync`, mmseg `SyncBN`).
  bool sync = false;
  /// The synchronised forward pass, shared by the layers of a model (null: plain batch norm).
  std::shared_ptr<const SyncNormFunction> sync_function;
  /// Scale (`affine` only).
  torch::Tensor weight;
  /// Shift (`affine` only).
  torch::Tensor bias;
  /// Running mean (`track_running_stats` only).
  torch::Tensor running_mean;
  /// Running unbiased variance (`track_running_stats` only).
  torch::Tensor running_var;
  /// Number of training batches seen (`track_running_stats` only).
  torch::Tensor num_batches_tracked;
};
TORCH_MODULE(Norm2d);

/// The running-average factor of one batch-norm step, exactly as `torch::nn::BatchNorm2d` computes
/// it: when `update` (training with running statistics) and `num_batches_tracked` is defined, it
/// increments `num_batches_tracked` and returns the momentum, or 1 / `num_batches_tracked` when the
/// momentum is None (cumulative average); otherwise the momentum (0 when None).
double running_average_factor(const torch::nn::BatchNorm2dOptions& options, bool update,
                              torch::Tensor num_batches_tracked);

/// Installs `function` in every `Norm2d` of `module` (itself included) that was built with `sync`;
/// null removes it. Returns the number of such layers.
int64_t set_sync_norm(torch::nn::Module& module, std::shared_ptr<const SyncNormFunction> function);

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
/// Initialised as mmcv's `ConvModule.init_weights`: the conv by `kaiming_init` (Kaiming normal,
/// fan_out, ReLU, whatever the activation; bias 0), the norm by `constant_init(1, 0)`.
///
/// ```
/// cac_models::ConvModule block(cac_models::ConvModuleOptions(512, 512, 3).padding(1));
/// auto y = block->forward(torch::randn({2, 512, 8, 8}));  // conv → bn → ReLU
/// ```
class ConvModuleImpl : public torch::nn::Cloneable<ConvModuleImpl> {
 public:
  /// Stores the options and registers `conv` (and `bn`), initialised as mmcv does.
  explicit ConvModuleImpl(const ConvModuleOptions& options_) : options(options_) { reset(); }
  /// Registers `conv` (bias only without a norm) and `bn`, then applies mmcv's initialisation.
  void reset() override;
  /// conv → bn (if any) → activation.
  torch::Tensor forward(const torch::Tensor& x);
  /// The block's options.
  ConvModuleOptions options;
  /// The convolution (Kaiming normal fan_out, bias 0).
  torch::nn::Conv2d conv{nullptr};
  /// The batch norm (weight 1, bias 0), null without `norm`.
  Norm2d bn{nullptr};
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
Norm2d make_norm(int64_t channels, const NormOptions& options);

/// mmcv's `kaiming_init(conv, a=0, mode='fan_out', nonlinearity='relu', distribution='normal')`:
/// weight ~ N(0, 2 / (out_channels · k_h · k_w)) (fan_out counts the output channels, not the
/// groups), bias 0. What mmcv's `ConvModule.init_weights` does to its conv, and mmseg 0.x's
/// backbones (`init_cfg` `dict(type='Kaiming', layer='Conv2d')`) to every conv when no
/// checkpoint is given.
void kaiming_init(torch::nn::Conv2dImpl& conv);

/// mmcv's `constant_init(norm, weight, bias)`: the scale set to `weight`, the shift to `bias`
/// (a layer without `affine` is left alone).
void constant_init(Norm2dImpl& norm, double weight, double bias = 0.0);

/// mmseg 0.x's backbone initialisation without a checkpoint (ResNet, HRNet, MobileNetV2:
/// `init_cfg = [dict(type='Kaiming', layer='Conv2d'), dict(type='Constant', val=1,
/// layer=['_BatchNorm', 'GroupNorm'])]`): `kaiming_init` on every `Conv2d` of `module` and
/// `constant_init(norm, 1, 0)` on every `Norm2d`, itself included.
void mmcv_default_init(torch::nn::Module& module);

/// Bilinear resize of `x` `[B, C, H, W]` to `size` (mmseg `resize`).
torch::Tensor resize(const torch::Tensor& x, at::IntArrayRef size, bool align_corners);

/// A multi-scale feature extractor: returns one feature map per output stage.
class BackboneImpl : public torch::nn::Module {
 public:
  /// The feature maps of the output stages, highest resolution first.
  virtual std::vector<torch::Tensor> forward(const torch::Tensor& x) = 0;
  /// Channels of each output stage.
  virtual std::vector<int64_t> out_channels() const = 0;
  /// Sets training mode; with `norm_eval()` every batch norm of the backbone then goes back to
  /// eval mode (mmseg `norm_eval`: frozen running statistics while the rest trains).
  void train(bool on = true) override;

 protected:
  /// Whether the backbone keeps its batch norms in eval mode (its options' `norm_eval`).
  /// Default: false
  virtual bool norm_eval() const { return false; }
};

/// Writes `values` as `(a, b, c)` (for `pretty_print`).
void print_list(std::ostream& stream, const std::vector<int64_t>& values);

}  // namespace cac_models
