#include "common.hpp"

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/init.h>

#include <ATen/Context.h>

namespace cac_models {

Norm2dImpl::Norm2dImpl(const torch::nn::BatchNorm2dOptions& options_, bool sync_) : options(options_), sync(sync_) {
  reset();
}

Norm2dImpl::Norm2dImpl(int64_t channels, const NormOptions& norm)
    : Norm2dImpl(torch::nn::BatchNorm2dOptions(channels).eps(norm.eps()).momentum(norm.momentum()), norm.sync()) {}

Norm2dImpl::Norm2dImpl(const torch::nn::BatchNorm2dImpl& norm, bool sync_) : Norm2dImpl(norm.options, sync_) {
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters(/*recurse=*/false)) {
    const torch::Tensor* source = norm.named_parameters(false).find(item.key());
    if (source == nullptr || !source->defined()) continue;
    item.value().copy_(*source);
    item.value().set_requires_grad(source->requires_grad());
  }
  for (auto& item : named_buffers(/*recurse=*/false)) {
    const torch::Tensor* source = norm.named_buffers(false).find(item.key());
    if (source != nullptr && source->defined() && item.value().defined()) item.value().copy_(*source);
  }
  train(norm.is_training());
}

void Norm2dImpl::reset() {
  const int64_t channels = options.num_features();
  TORCH_CHECK(channels > 0, "cac_models::Norm2d: expected num_features > 0 but got ", channels);
  const bool affine = options.affine(), track = options.track_running_stats();
  weight = register_parameter("weight", affine ? torch::ones({channels}) : torch::Tensor(), affine);
  bias = register_parameter("bias", affine ? torch::zeros({channels}) : torch::Tensor(), affine);
  running_mean = register_buffer("running_mean", track ? torch::zeros({channels}) : torch::Tensor());
  running_var = register_buffer("running_var", track ? torch::ones({channels}) : torch::Tensor());
  num_batches_tracked =
      register_buffer("num_batches_tracked", track ? torch::tensor(0, torch::dtype(torch::kLong)) : torch::Tensor());
}

torch::Tensor Norm2dImpl::forward(const torch::Tensor& input) {
  if (sync && sync_function && is_training()) return (*sync_function)(input, *this);
  TORCH_CHECK(input.dim() == 4, "cac_models::Norm2d: expected a 4-D input [N, C, H, W] but got ", input.sizes());
  // torch::nn::BatchNorm2d's forward, step for step.
  const double factor =
      running_average_factor(options, is_training() && options.track_running_stats(), num_batches_tracked);
  return torch::batch_norm(input, weight, bias, running_mean, running_var,
                           is_training() || !options.track_running_stats(), factor, options.eps(),
                           at::globalContext().userEnabledCuDNN());
}

void Norm2dImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::Norm2d(" << options.num_features() << ", eps=" << options.eps() << ", momentum=";
  if (options.momentum().has_value()) {
    stream << *options.momentum();
  } else {
    stream << "None";
  }
  stream << ", affine=" << (options.affine() ? "true" : "false")
         << ", track_running_stats=" << (options.track_running_stats() ? "true" : "false")
         << ", sync=" << (sync ? "true" : "false") << ")";
}

double running_average_factor(const torch::nn::BatchNorm2dOptions& options, bool update,
                              torch::Tensor num_batches_tracked) {
  if (!update || !num_batches_tracked.defined()) return options.momentum().value_or(0.0);
  torch::NoGradGuard no_grad;
  num_batches_tracked += 1;
  return options.momentum().has_value() ? *options.momentum() : 1.0 / num_batches_tracked.item<double>();
}

int64_t set_sync_norm(torch::nn::Module& module, std::shared_ptr<const SyncNormFunction> function) {
  int64_t count = 0;
  const auto install = [&](Norm2dImpl* norm) {
    if (norm == nullptr || !norm->sync) return;
    norm->sync_function = function;
    ++count;
  };
  install(module.as<Norm2dImpl>());  // works for a module not (yet) held by a shared_ptr
  for (const auto& child : module.modules(/*include_self=*/false)) install(child->as<Norm2dImpl>());
  return count;
}

Norm2d make_norm(int64_t channels, const NormOptions& options) { return Norm2d(channels, options); }

void kaiming_init(torch::nn::Conv2dImpl& conv) {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_normal_(conv.weight, /*a=*/0.0, torch::kFanOut, torch::kReLU);
  if (conv.bias.defined()) torch::nn::init::zeros_(conv.bias);
}

void constant_init(Norm2dImpl& norm, double weight, double bias) {
  torch::NoGradGuard no_grad;
  if (norm.weight.defined()) norm.weight.fill_(weight);
  if (norm.bias.defined()) norm.bias.fill_(bias);
}

void mmcv_default_init(torch::nn::Module& module) {
  const auto apply = [](torch::nn::Module& m) {
    if (auto* conv = m.as<torch::nn::Conv2dImpl>()) kaiming_init(*conv);
    if (auto* norm = m.as<Norm2dImpl>()) constant_init(*norm, 1.0, 0.0);
  };
  apply(module);  // works for a module not (yet) held by a shared_ptr
  for (const auto& child : module.modules(/*include_self=*/false)) apply(*child);
}

void ConvModuleImpl::reset() {
  conv = register_module(
      "conv",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), options.out_channels(), options.kernel_size())
                            .stride(options.stride())
                            .padding(options.padding())
                            .dilation(options.dilation())
                            .groups(options.groups())
                            .bias(!options.norm())));
  kaiming_init(*conv);
  if (options.norm()) {
    bn = register_module("bn", make_norm(options.out_channels(), options.norm_options()));
    constant_init(*bn, 1.0, 0.0);
  }
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
  return torch::nn::functional::interpolate(x, torch::nn::functional::InterpolateFuncOptions()
                                                   .size(size.vec())
                                                   .mode(torch::kBilinear)
                                                   .align_corners(align_corners));
}

void BackboneImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (!norm_eval()) return;
  for (const auto& module : modules()) {
    if (auto* norm = module->as<Norm2dImpl>()) norm->eval();
  }
}

void print_list(std::ostream& stream, const std::vector<int64_t>& values) {
  stream << "(";
  for (size_t i = 0; i < values.size(); ++i) stream << (i ? ", " : "") << values[i];
  stream << ")";
}

}  // namespace cac_models
