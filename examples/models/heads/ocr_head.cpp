#include "ocr_head.hpp"

#include <cmath>

namespace cac_models {

namespace {

torch::nn::Sequential two_convs(int64_t in, int64_t channels, const NormOptions& norm) {
  return torch::nn::Sequential(ConvModule(ConvModuleOptions(in, channels, 1).norm_options(norm)),
                               ConvModule(ConvModuleOptions(channels, channels, 1).norm_options(norm)));
}

}  // namespace

ObjectAttentionBlockImpl::ObjectAttentionBlockImpl(int64_t in_channels, int64_t channels_, const NormOptions& norm)
    : channels(channels_) {
  TORCH_CHECK(in_channels > 0 && channels > 0, "cac_models::ObjectAttentionBlock: expected positive channels but got ",
              in_channels, " and ", channels);
  key_project = register_module("key_project", two_convs(in_channels, channels, norm));
  query_project = register_module("query_project", two_convs(in_channels, channels, norm));
  value_project =
      register_module("value_project", ConvModule(ConvModuleOptions(in_channels, channels, 1).norm_options(norm)));
  out_project =
      register_module("out_project", ConvModule(ConvModuleOptions(channels, in_channels, 1).norm_options(norm)));
  bottleneck =
      register_module("bottleneck", ConvModule(ConvModuleOptions(2 * in_channels, in_channels, 1).norm_options(norm)));
}

torch::Tensor ObjectAttentionBlockImpl::forward(const torch::Tensor& query_feats, const torch::Tensor& key_feats) {
  const int64_t batch = query_feats.size(0);
  const torch::Tensor query = query_project->forward(query_feats).flatten(2).transpose(1, 2);  // [B, hw, c]
  const torch::Tensor key = key_project->forward(key_feats).flatten(2);                        // [B, c, n]
  const torch::Tensor value = value_project->forward(key_feats).flatten(2).transpose(1, 2);    // [B, n, c]
  const torch::Tensor attention =
      torch::softmax(torch::matmul(query, key) * std::pow(static_cast<double>(channels), -0.5), -1);
  torch::Tensor context = torch::matmul(attention, value).transpose(1, 2);  // [B, c, hw]
  context = context.reshape({batch, channels, query_feats.size(2), query_feats.size(3)});
  context = out_project->forward(context);
  return bottleneck->forward(torch::cat({context, query_feats}, 1));
}

torch::Tensor spatial_gather(const torch::Tensor& features, const torch::Tensor& probs) {
  const torch::Tensor weights = torch::softmax(probs.flatten(2), 2);                          // [B, n, hw]
  const torch::Tensor context = torch::matmul(weights, features.flatten(2).transpose(1, 2));  // [B, n, d]
  return context.transpose(1, 2).unsqueeze(3);                                                // [B, d, n, 1]
}

OCRHeadImpl::OCRHeadImpl(const OCRHeadOptions& options_)
    : CascadeDecodeHeadImpl(options_.decode(), "cac_models::OCRHead"), options(options_) {
  TORCH_CHECK(options.ocr_channels() > 0, who_, ": expected positive ocr_channels but got ", options.ocr_channels());
  const int64_t c = options.decode().channels();
  const NormOptions& norm = options.decode().norm();
  bottleneck = register_module("bottleneck",
                               ConvModule(ConvModuleOptions(input_channels(), c, 3).padding(1).norm_options(norm)));
  object_context_block = register_module("object_context_block", ObjectAttentionBlock(c, options.ocr_channels(), norm));
}

torch::Tensor OCRHeadImpl::features(const std::vector<torch::Tensor>& inputs, const torch::Tensor& prev_logits) {
  const torch::Tensor x = transform_inputs(inputs);
  const torch::Tensor feats = bottleneck->forward(x);
  TORCH_CHECK(prev_logits.dim() == 4 && prev_logits.size(0) == feats.size(0) &&
                  prev_logits.sizes().slice(2).equals(feats.sizes().slice(2)),
              who_, ": expected the previous head's logits of shape [", feats.size(0), ", n, ", feats.size(2), ", ",
              feats.size(3), "] but got ", prev_logits.sizes());
  // Under autocast the previous logits may be in another precision than the features.
  const torch::Tensor context = spatial_gather(feats, prev_logits.to(feats.scalar_type()));
  return object_context_block->forward(feats, context);
}

void OCRHeadImpl::pretty_print_options(std::ostream& stream) const {
  stream << ", ocr_channels=" << options.ocr_channels();
}

}  // namespace cac_models
