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

/// Reduced-precision logits are scored in float32 (mmseg's `force_fp32` on `losses`); the
/// context-aware terms need no cast (the library computes them in float32).
torch::Tensor to_loss_dtype(const torch::Tensor& x) {
  const auto type = x.scalar_type();
  return (type == torch::kHalf || type == torch::kBFloat16) ? x.to(torch::kFloat) : x;
}

}  // namespace

cac::ContextAwareHeadOptions CACHeadSettings::head_options(int64_t channels, int64_t num_classes,
                                                           int64_t ignore_index) const {
  cac::ContextAwareHeadOptions head(channels, num_classes);
  head.tau(tau()).oracle_scope(oracle_scope()).ignore_index(ignore_index);
  if (hidden_channels()) head.hidden_channels(*hidden_channels());
  return head;
}

DecodeHeadImpl::DecodeHeadImpl(const DecodeHeadOptions& options, std::string who) : who_(std::move(who)) {
  const auto& in = options.in_channels();
  const auto& index = options.in_index();
  TORCH_CHECK(!in.empty(), who_, ": expected at least one in_channels value but got none");
  TORCH_CHECK(in.size() == index.size(), who_, ": expected as many in_index as in_channels values (", in.size(),
              ") but got ", index.size());
  TORCH_CHECK(options.input_transform() != InputTransform::Single || in.size() == 1, who_,
              ": expected one in_channels value for InputTransform::Single but got ", in.size());
  for (int64_t c : in) TORCH_CHECK(c > 0, who_, ": expected positive in_channels but got ", c);
  TORCH_CHECK(options.channels() > 0, who_, ": expected positive channels but got ", options.channels());
  TORCH_CHECK(options.num_classes() > 0, who_, ": expected positive num_classes but got ", options.num_classes());
  TORCH_CHECK(options.dropout_ratio() < 1.0, who_, ": expected dropout_ratio below 1 but got ",
              options.dropout_ratio());

  conv_seg = register_module("conv_seg",
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(options.channels(), options.num_classes(), 1)));
  {
    torch::NoGradGuard no_grad;
    torch::nn::init::normal_(conv_seg->weight, 0.0, 0.01);
    torch::nn::init::zeros_(conv_seg->bias);
  }
  apply_dropout(options.dropout_ratio());
  if (options.cac()) {
    cac = register_module("cac", cac::ContextAwareHead(options.cac_head().head_options(
                                     options.channels(), options.num_classes(), options.ignore_index())));
    criterion = cac::ContextAwareLoss(cac::ContextAwareLossOptions(options.cac_loss())
                                          .align_corners(options.align_corners())
                                          .ignore_index(options.ignore_index()));
  }
}

void DecodeHeadImpl::set_dropout_ratio(double ratio) {
  TORCH_CHECK(ratio < 1.0, who_, ": expected dropout_ratio below 1 but got ", ratio);
  mutable_decode_options().dropout_ratio(ratio);
  apply_dropout(ratio);
}

void DecodeHeadImpl::apply_dropout(double ratio) {
  if (ratio > 0.0) {
    if (!dropout) dropout = register_module("dropout", torch::nn::Dropout2d(torch::nn::Dropout2dOptions(ratio)));
    dropout->options.p(ratio);
  } else if (dropout) {
    unregister_module("dropout");
    dropout = nullptr;
  }
}

torch::Tensor DecodeHeadImpl::logits(const torch::Tensor& features) {
  const int64_t channels = decode_options().channels();
  TORCH_CHECK(features.dim() == 4 && features.size(1) == channels, who_, ": expected features of shape [B, ", channels,
              ", h, w] but got ", features.sizes());
  return conv_seg->forward(dropout ? dropout->forward(features) : features);
}

torch::Tensor DecodeHeadImpl::predict(const torch::Tensor& features) {
  torch::Tensor p = logits(features);
  return cac ? cac->forward(features, conv_seg->weight, p) : p;
}

cac::ContextAwareOutput DecodeHeadImpl::forward_cac(const torch::Tensor& features, const torch::Tensor& labels) {
  TORCH_CHECK(cac, who_, ": expected a head with the context-aware classifier (cac option) but it has none");
  return cac->forward_train(features, conv_seg->weight, logits(features), labels);
}

std::map<std::string, torch::Tensor> DecodeHeadImpl::branches(const torch::Tensor& features,
                                                              const torch::Tensor& labels) {
  const cac::ContextAwareOutput out = forward_cac(features, labels.to(torch::kLong));
  return {{"logits", out.logits}, {"context", out.context_logits}, {"oracle", out.oracle_logits}};
}

std::map<std::string, torch::Tensor> DecodeHeadImpl::losses(const torch::Tensor& features,
                                                            const torch::Tensor& labels) {
  TORCH_CHECK(labels.dim() == 3 && labels.scalar_type() == torch::kLong, who_,
              ": expected int64 labels of shape [B, H, W] but got ", labels.scalar_type(), " ", labels.sizes());
  TORCH_CHECK(labels.size(0) == features.size(0), who_, ": expected labels for ", features.size(0), " images but got ",
              labels.sizes());
  const DecodeHeadOptions& o = decode_options();
  const double weight = o.loss_weight();
  if (!cac) {
    // mmseg 0.x CrossEntropyLoss: per-pixel CE (0 on ignored pixels) averaged over all B·H·W pixels
    // (`weight_reduce_loss` with avg_non_ignore=False).
    const torch::Tensor scores = to_loss_dtype(resize(logits(features), labels.sizes().slice(1), o.align_corners()));
    const torch::Tensor per_pixel = torch::nn::functional::cross_entropy(
        scores, labels,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(o.ignore_index()).reduction(torch::kNone));
    const torch::Tensor loss = per_pixel.mean() * weight;
    return {{"loss_ce", loss.detach()}, {"total", loss}};
  }
  // The library's objective: its total (zero-weight terms left out) is what trains; each term is
  // reported times its weights, as mmseg logs them.
  const cac::ContextAwareLosses terms = criterion->forward(forward_cac(features, labels), labels);
  const cac::ContextAwareLossOptions& term_weights = criterion->options;
  const auto reported = [weight](const torch::Tensor& term, double term_weight) {
    return term.detach() * (term_weight * weight);
  };
  return {{"loss_ce", reported(terms.context_ce, term_weights.context_weight())},
          {"loss_pre_self", reported(terms.logits_ce, term_weights.logits_weight())},
          {"loss_pre", reported(terms.oracle_ce, term_weights.oracle_weight())},
          {"loss_kl", reported(terms.kl, term_weights.kl_weight())},
          {"total", terms.total * weight}};
}

torch::Tensor DecodeHeadImpl::forward_test(const std::vector<torch::Tensor>& inputs) {
  return predict(features(inputs));
}

std::map<std::string, torch::Tensor> DecodeHeadImpl::forward_train(const std::vector<torch::Tensor>& inputs,
                                                                   const torch::Tensor& labels) {
  return losses(features(inputs), labels);
}

int64_t DecodeHeadImpl::input_channels() const {
  TORCH_CHECK(decode_options().input_transform() != InputTransform::MultipleSelect, who_,
              ": expected InputTransform::Single or ResizeConcat for input_channels() but got MultipleSelect");
  const auto& in = decode_options().in_channels();
  return std::accumulate(in.begin(), in.end(), int64_t{0});
}

std::vector<torch::Tensor> DecodeHeadImpl::select_inputs(const std::vector<torch::Tensor>& inputs) const {
  const DecodeHeadOptions& o = decode_options();
  const auto count = static_cast<int64_t>(inputs.size());
  std::vector<torch::Tensor> selected;
  for (size_t i = 0; i < o.in_index().size(); ++i) {
    int64_t index = o.in_index()[i];
    if (index < 0) index += count;
    TORCH_CHECK(index >= 0 && index < count, who_, ": expected in_index ", o.in_index()[i], " to select one of the ",
                count, " backbone stages but it is out of range");
    const torch::Tensor& x = inputs[static_cast<size_t>(index)];
    TORCH_CHECK(x.dim() == 4 && x.size(1) == o.in_channels()[i], who_, ": expected stage ", index, " of shape [B, ",
                o.in_channels()[i], ", h, w] but got ", x.sizes());
    selected.push_back(x);
  }
  return selected;
}

torch::Tensor DecodeHeadImpl::transform_inputs(const std::vector<torch::Tensor>& inputs) const {
  const DecodeHeadOptions& o = decode_options();
  TORCH_CHECK(o.input_transform() != InputTransform::MultipleSelect, who_,
              ": expected InputTransform::Single or ResizeConcat for transform_inputs() but got MultipleSelect");
  std::vector<torch::Tensor> selected = select_inputs(inputs);
  if (o.input_transform() == InputTransform::Single) return selected.front();
  const auto size = selected.front().sizes().slice(2);
  for (auto& x : selected) x = resize(x, size, o.align_corners());
  return torch::cat(selected, 1);
}

void DecodeHeadImpl::pretty_print(std::ostream& stream) const {
  const DecodeHeadOptions& o = decode_options();
  stream << std::boolalpha << who_ << "(in_channels=" << at::IntArrayRef(o.in_channels())
         << ", in_index=" << at::IntArrayRef(o.in_index()) << ", input_transform=" << o.input_transform()
         << ", channels=" << o.channels() << ", num_classes=" << o.num_classes()
         << ", dropout_ratio=" << o.dropout_ratio() << ", align_corners=" << o.align_corners()
         << ", loss_weight=" << o.loss_weight() << ", cac=" << o.cac();
  pretty_print_options(stream);
  stream << ")";
}

torch::Tensor CascadeDecodeHeadImpl::features(const std::vector<torch::Tensor>& /*inputs*/) {
  TORCH_CHECK(false, who_, ": expected the previous head's logits too; call features(inputs, prev_logits)");
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
