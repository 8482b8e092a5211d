#include "sync_batch_norm.hpp"

#include <torch/autograd.h>
#include <torch/torch.h>

namespace cac_models {

namespace {

// y = (x - mean) * invstd * weight + bias with the group's mean and variance; the backward pass
// all-reduces sum(dy) and sum(dy * x̂) to form the input gradient (PyTorch's SyncBatchNorm); the
// weight/bias gradients stay local. Both passes use ATen's fused batch-norm kernels in evaluation
// mode (the group's statistics as constants): one kernel for the output, one for dy·w·invstd and
// the two per-channel sums, then one fused multiply-add and one add for the terms through the
// statistics: dx = w·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)) = dy·w·invstd + x·b + c.
struct SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& mean,
                               const torch::Tensor& var, double eps, double count, int64_t sum_address) {
    const auto type = input.scalar_type();
    // An affine-free layer gets unit weights: the backward kernel then returns sum(dy * x̂).
    const torch::Tensor scale = weight.defined() ? weight.to(type) : torch::ones_like(mean);
    const torch::Tensor output =
        std::get<0>(at::native_batch_norm(input, scale, bias.defined() ? bias.to(type) : torch::Tensor(), mean, var,
                                          /*training=*/false, 0.0, eps));
    ctx->save_for_backward({input, scale, mean, var});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["count"] = count;
    ctx->saved_data["sum"] = sum_address;
    ctx->saved_data["has_weight"] = weight.defined();
    ctx->saved_data["has_bias"] = bias.defined();
    return output;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& input = saved[0];
    const torch::Tensor& scale = saved[1];
    const torch::Tensor& mean = saved[2];
    const torch::Tensor& var = saved[3];
    const double eps = ctx->saved_data["eps"].toDouble();
    const double count = ctx->saved_data["count"].toDouble();
    const auto& all_reduce_sum =
        *reinterpret_cast<const AllReduceSum*>(static_cast<intptr_t>(ctx->saved_data["sum"].toInt()));

    const int64_t channels = input.size(1);
    const std::vector<int64_t> shape{1, channels, 1, 1};
    // grad_input = dy·w·invstd, sum_dy_xhat = Σ dy·x̂, sum_dy = Σ dy (this rank's).
    auto [grad_input, sum_dy_xhat, sum_dy] =
        at::native_batch_norm_backward(grad_outputs[0].contiguous(), input, scale, mean, var, torch::Tensor(),
                                       torch::Tensor(), /*train=*/false, eps, {true, true, true});
    std::vector<torch::Tensor> sums{torch::cat({sum_dy, sum_dy_xhat}).to(torch::kDouble)};
    all_reduce_sum(sums);
    const torch::Tensor mean_dy = sums[0].narrow(0, 0, channels) / count;
    const torch::Tensor mean_dy_xhat = sums[0].narrow(0, channels, channels) / count;
    const torch::Tensor invstd = (var.to(torch::kDouble) + eps).rsqrt();
    const torch::Tensor w_invstd = scale.to(torch::kDouble) * invstd;
    const torch::Tensor b = -w_invstd * invstd * mean_dy_xhat;
    const torch::Tensor c = -w_invstd * mean_dy - b * mean.to(torch::kDouble);
    grad_input.addcmul_(input, b.to(input.scalar_type()).view(shape)).add_(c.to(input.scalar_type()).view(shape));
    return {grad_input,
            ctx->saved_data["has_weight"].toBool() ? sum_dy_xhat : torch::Tensor(),
            ctx->saved_data["has_bias"].toBool() ? sum_dy : torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor sync_batch_norm(const torch::Tensor& input, const torch::nn::BatchNorm2dOptions& options, bool training,
                              const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor running_mean,
                              torch::Tensor running_var, torch::Tensor num_batches_tracked, const AllReduceSum& sum) {
  TORCH_CHECK(input.dim() == 4, "cac_models::sync_batch_norm: expected a 4-D input [N, C, H, W] but got ",
              input.sizes());
  const int64_t channels = input.size(1);
  TORCH_CHECK(channels == options.num_features(), "cac_models::sync_batch_norm: expected ", options.num_features(),
              " channels but got ", channels);
  const bool track = options.track_running_stats() && running_mean.defined() && running_var.defined();
  const bool batch_statistics = training || !track;
  const double factor = running_average_factor(options, training && track, num_batches_tracked);
  if (!batch_statistics || !sum)
    return torch::batch_norm(input, weight, bias, running_mean, running_var, batch_statistics, factor, options.eps(),
                             at::globalContext().userEnabledCuDNN());

  torch::Tensor mean;
  torch::Tensor var;
  double count = 0;
  {
    torch::NoGradGuard no_grad;
    const int64_t local_count = channels > 0 ? input.numel() / channels : 0;
    auto stats = torch::zeros({2 * channels + 1}, torch::dtype(torch::kDouble).device(input.device()));
    if (local_count > 0) {
      auto [var, local_mean] = torch::var_mean(input, {0, 2, 3}, /*unbiased=*/false);
      auto mean64 = local_mean.to(torch::kDouble);
      auto var64 = var.to(torch::kDouble);
      stats.narrow(0, 0, channels).copy_(mean64 * static_cast<double>(local_count));
      stats.narrow(0, channels, channels).copy_((var64 + mean64 * mean64) * static_cast<double>(local_count));
      stats[2 * channels].fill_(static_cast<double>(local_count));
    }
    std::vector<torch::Tensor> sums{stats};
    sum(sums);
    count = stats[2 * channels].item<double>();
    TORCH_CHECK(count > 1,
                "cac_models::sync_batch_norm: expected more than 1 value per channel over the group in "
                "training but got ",
                count);
    auto mean64 = stats.narrow(0, 0, channels) / count;
    auto var64 = (stats.narrow(0, channels, channels) / count - mean64 * mean64).clamp_min(0);
    mean = mean64.to(input.scalar_type());
    var = var64.to(input.scalar_type());
    if (training && track) {
      running_mean.mul_(1 - factor).add_(mean64.to(running_mean.scalar_type()), factor);
      running_var.mul_(1 - factor).add_((var64 * (count / (count - 1))).to(running_var.scalar_type()), factor);
    }
  }
  return SyncBatchNormFunction::apply(input.contiguous(), weight, bias, mean, var, options.eps(), count,
                                      static_cast<int64_t>(reinterpret_cast<intptr_t>(&sum)));
}

torch::Tensor sync_batch_norm(const torch::Tensor& input, torch::nn::BatchNorm2dImpl& norm, const AllReduceSum& sum) {
  return sync_batch_norm(input, norm.options, norm.is_training(), norm.weight, norm.bias, norm.running_mean,
                         norm.running_var, norm.num_batches_tracked, sum);
}

int64_t set_sync_batch_norm(torch::nn::Module& module, std::shared_ptr<const AllReduceSum> sum) {
  if (!sum) return set_sync_norm(module, nullptr);
  return set_sync_norm(module,
                       std::make_shared<const SyncNormFunction>([sum](const torch::Tensor& input, Norm2dImpl& norm) {
                         return sync_batch_norm(input, norm.options, norm.is_training(), norm.weight, norm.bias,
                                                norm.running_mean, norm.running_var, norm.num_batches_tracked, *sum);
                       }));
}

}  // namespace cac_models
