#include "decode_head.hpp"

#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>

#include <numeric>

namespace cac_models {

std::ostream& operator<<(std::ostream& stream, InputTransform transform) {
  switch (transform) {
    case InputTransform::Single: return stream << "Single";
    case InputTransform::ResizeConcat: return stream << "ResizeConcat";
    case InputTransform::MultipleSelect: return stream << "MultipleSelect";
  }
  return stream;
}

namespace {

/// Reduced-precision logits are scored in float32 (mmseg's `force_fp32` on `losses`).
torch::Tensor to_loss_dtype(const torch::Tensor& x) {
  const auto type = x.scalar_type();
  return (type == torch::kHalf || type == torch::kBFloat16) ? x.to(torch::kFloat) : x;
}

}  // namespace

DecodeHeadImpl::DecodeHeadImpl(const DecodeHeadOptions& options_, std::string who)
    : options(options_), who_(std::move(who)) {
  const auto& in = options.in_channels();
  const auto& index = options.in_index();
  TORCH_CHECK(!in.empty(), who_, ": expected at least one in_channels value but got none");
  TORCH_CHECK(in.size() == index.size(), who_, ": expected as many in_index as in_channels values (",
              in.size(), ") but got ", index.size());
  TORCH_CHECK(options.input_transform() != InputTransform::Single || in.size() == 1, who_,
              ": expected one in_channels value for InputTransform::Single but got ", in.size());
  for (int64_t c : in) TORCH_CHECK(c > 0, who_, ": expected positive in_channels but got ", c);
  TORCH_CHECK(options.channels() > 0, who_, ": expected positive channels but got ", options.channels());
  TORCH_CHECK(options.num_classes() > 0, who_, ": expected positive num_classes but got ", options.num_classes());

  conv_seg = register_module("conv_seg", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.channels(),
                                                                                       options.num_classes(), 1)));
  {
    torch::NoGradGuard no_grad;
    torch::nn::init::normal_(conv_seg->weight, 0.0, 0.01);
    torch::nn::init::zeros_(conv_seg->bias);
  }
  set_dropout_ratio(options.dropout_ratio());
  if (options.cac()) {
    const auto& given = options.cac_head();
    cac::ContextAwareHeadOptions head_options(options.channels(), options.num_classes());
    head_options.tau(given.tau()).oracle_scope(given.oracle_scope()).ignore_index(options.ignore_index());
    if (given.hidden_channels() > 0) head_options.hidden_channels(given.hidden_channels());
    cac = register_module("cac", cac::ContextAwareHead(head_options));
    criterion_ = cac::ContextAwareLoss(
        cac::ContextAwareLossOptions(options.cac_loss()).align_corners(options.align_corners()).ignore_index(
            options.ignore_index()));
  }
}

void DecodeHeadImpl::set_dropout_ratio(double ratio) {
  TORCH_CHECK(ratio < 1.0, who_, ": expected dropout_ratio below 1 but got ", ratio);
  options.dropout_ratio(ratio);
  if (ratio > 0.0) {
    if (!dropout) dropout = register_module("dropout", torch::nn::Dropout2d(torch::nn::Dropout2dOptions(ratio)));
    dropout->options.p(ratio);
  } else if (dropout) {
    unregister_module("dropout");
    dropout = nullptr;
  }
}

torch::Tensor DecodeHeadImpl::logits(const torch::Tensor& features) {
  TORCH_CHECK(features.dim() == 4 && features.size(1) == options.channels(), who_,
              ": expected features of shape [B, ", options.channels(), ", h, w] but got ", features.sizes());
  return conv_seg->forward(dropout ? dropout->forward(features) : features);
}

torch::Tensor DecodeHeadImpl::predict(const torch::Tensor& features) {
  torch::Tensor p = logits(features);
  if (!cac) return p;
  // cac is autocast-safe by itself (its maths runs in float32 whatever the caller's autocast).
  return cac->forward(features, conv_seg->weight.to(features.scalar_type()), p.to(features.scalar_type()));
}

std::map<std::string, torch::Tensor> DecodeHeadImpl::branches(const torch::Tensor& features,
                                                              const torch::Tensor& labels) {
  TORCH_CHECK(cac, who_, ": expected a head with the context-aware classifier (options.cac) for branches()");
  torch::Tensor p = logits(features);
  const auto type = features.scalar_type();
  const cac::ContextAwareOutput out =
      cac->forward_train(features, conv_seg->weight.to(type), p.to(type), labels.to(torch::kLong));
  return {{"logits", out.logits}, {"context", out.context_logits}, {"oracle", out.oracle_logits}};
}

std::map<std::string, torch::Tensor> DecodeHeadImpl::losses(const torch::Tensor& features,
                                                            const torch::Tensor& labels) {
  TORCH_CHECK(labels.dim() == 3 && labels.scalar_type() == torch::kLong, who_,
              ": expected int64 labels of shape [B, H, W] but got ", labels.scalar_type(), " ", labels.sizes());
  TORCH_CHECK(labels.size(0) == features.size(0), who_, ": expected labels for ", features.size(0),
              " images but got ", labels.sizes());
  const double weight = options.loss_weight();
  std::map<std::string, torch::Tensor> out;
  torch::Tensor p = logits(features);
  if (!cac) {
    // mmseg 0.x CrossEntropyLoss: per-pixel CE (0 on ignored pixels) averaged over all B·H·W pixels
    // (`weight_reduce_loss` with avg_non_ignore=False).
    const torch::Tensor scores = to_loss_dtype(resize(p, labels.sizes().slice(1), options.align_corners()));
    const torch::Tensor per_pixel = torch::nn::functional::cross_entropy(
        scores, labels,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(options.ignore_index()).reduction(torch::kNone));
    out["loss_ce"] = per_pixel.mean() * weight;
    return out;
  }
  const auto type = features.scalar_type();
  const cac::ContextAwareOutput prediction =
      cac->forward_train(features, conv_seg->weight.to(type), p.to(type), labels);
  const cac::ContextAwareLosses terms = criterion_->forward(prediction, labels);
  const auto& loss_options = criterion_->options;
  // A zero-weight term is reported but kept out of the gradient, as in cac::ContextAwareLoss.
  const auto weighted = [weight](const torch::Tensor& term, double term_weight) {
    return term_weight != 0.0 ? term * (term_weight * weight) : term.detach() * 0.0;
  };
  out["loss_ce"] = weighted(terms.context_ce, loss_options.context_weight());
  out["loss_pre_self"] = weighted(terms.logits_ce, loss_options.logits_weight());
  out["loss_pre"] = weighted(terms.oracle_ce, loss_options.oracle_weight());
  out["loss_kl"] = weighted(terms.kl, loss_options.kl_weight());
  return out;
}

torch::Tensor DecodeHeadImpl::forward_test(const std::vector<torch::Tensor>& inputs) {
  return predict(features(inputs));
}

std::map<std::string, torch::Tensor> DecodeHeadImpl::forward_train(const std::vector<torch::Tensor>& inputs,
                                                                   const torch::Tensor& labels) {
  return losses(features(inputs), labels);
}

int64_t DecodeHeadImpl::input_channels() const {
  TORCH_CHECK(options.input_transform() != InputTransform::MultipleSelect, who_,
              ": expected InputTransform::Single or ResizeConcat for input_channels() but got MultipleSelect");
  const auto& in = options.in_channels();
  return std::accumulate(in.begin(), in.end(), int64_t{0});
}

std::vector<torch::Tensor> DecodeHeadImpl::select_inputs(const std::vector<torch::Tensor>& inputs) const {
  const auto count = static_cast<int64_t>(inputs.size());
  std::vector<torch::Tensor> selected;
  for (size_t i = 0; i < options.in_index().size(); ++i) {
    int64_t index = options.in_index()[i];
    if (index < 0) index += count;
    TORCH_CHECK(index >= 0 && index < count, who_, ": expected in_index ", options.in_index()[i],
                " to select one of the ", count, " backbone stages but it is out of range");
    const torch::Tensor& x = inputs[static_cast<size_t>(index)];
    TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels()[i], who_, ": expected stage ", index,
                " of shape [B, ", options.in_channels()[i], ", h, w] but got ", x.sizes());
    selected.push_back(x);
  }
  return selected;
}

torch::Tensor DecodeHeadImpl::transform_inputs(const std::vector<torch::Tensor>& inputs) const {
  TORCH_CHECK(options.input_transform() != InputTransform::MultipleSelect, who_,
              ": expected InputTransform::Single or ResizeConcat for transform_inputs() but got MultipleSelect");
  std::vector<torch::Tensor> selected = select_inputs(inputs);
  if (options.input_transform() == InputTransform::Single) return selected.front();
  const auto size = selected.front().sizes().slice(2);
  for (auto& x : selected) x = resize(x, size, options.align_corners());
  return torch::cat(selected, 1);
}

void DecodeHeadImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << who_ << "(in_channels=" << at::IntArrayRef(options.in_channels())
         << ", in_index=" << at::IntArrayRef(options.in_index()) << ", input_transform=" << options.input_transform()
         << ", channels=" << options.channels() << ", num_classes=" << options.num_classes()
         << ", dropout_ratio=" << options.dropout_ratio() << ", align_corners=" << options.align_corners()
         << ", loss_weight=" << options.loss_weight() << ", cac=" << options.cac();
  pretty_print_options(stream);
  stream << ")";
}

torch::Tensor CascadeDecodeHeadImpl::features(const std::vector<torch::Tensor>& /*inputs*/) {
  TORCH_CHECK(false, who_, ": expected the previous head's logits too; call features(inputs, prev_logits)");
  return {};
}

torch::Tensor CascadeDecodeHeadImpl::forward_test(const std::vector<torch::Tensor>& inputs,
                                                  const torch::Tensor& prev_logits) {
  return predict(features(inputs, prev_logits));
}

std::map<std::string, torch::Tensor> CascadeDecodeHeadImpl::forward_train(const std::vector<torch::Tensor>& inputs,
                                                                          const torch::Tensor& prev_logits,
                                                                          const torch::Tensor& labels) {
  return losses(features(inputs, prev_logits), labels);
}

}  // namespace cac_models
