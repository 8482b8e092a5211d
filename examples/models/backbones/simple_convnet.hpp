#pragma once
/// \file
/// A small plain convolutional backbone for the bundled context-shift dataset and for tests:
/// stages of two 3×3 `ConvModule`s (BN, ReLU), the first strided.

#include "../common.hpp"

#include <torch/nn/modules/container/modulelist.h>

#include <ostream>
#include <vector>

namespace cac_models {

/// Options of `SimpleConvNet`.
struct SimpleConvNetOptions {
  /// Channels of the input image.
  /// Default: 3
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Output channels of each stage (stage i at stride 2^(i+1)).
  /// Default: {16, 32, 48}
  TORCH_ARG(std::vector<int64_t>, channels) = std::vector<int64_t>{16, 32, 48};
  /// Stride of the first convolution of each stage (as many as `channels`).
  /// Default: {2, 2, 2}
  TORCH_ARG(std::vector<int64_t>, strides) = std::vector<int64_t>{2, 2, 2};
  /// Batch norm of every layer.
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm) = {};
};

/// `stages.i.0` (3×3, stride `strides[i]`) and `stages.i.1` (3×3) `ConvModule`s per stage;
/// `forward` returns every stage, sizes rounded up at each stride.
class SimpleConvNetImpl : public BackboneImpl {
 public:
  explicit SimpleConvNetImpl(const SimpleConvNetOptions& options_ = {});
  std::vector<torch::Tensor> forward(const torch::Tensor& x) override;
  std::vector<int64_t> out_channels() const override { return options.channels(); }
  /// Prints `cac_models::SimpleConvNet(channels=(16, 32, 48))`.
  void pretty_print(std::ostream& stream) const override;

  /// The stages, each a `NestedSequential` of two `ConvModule`s.
  torch::nn::ModuleList stages{nullptr};

  /// The options this backbone was built with.
  SimpleConvNetOptions options;
};
TORCH_MODULE(SimpleConvNet);

}  // namespace cac_models
