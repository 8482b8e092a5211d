#include "segmentor.hpp"

namespace cac_models {

namespace {
constexpr const char* kWho = "cac_models::EncoderDecoder";

/// Adds the head's terms to `all` under `prefix.` and its `total` to `total`.
void add_head(std::map<std::string, torch::Tensor>& all, torch::Tensor& total,
              const std::map<std::string, torch::Tensor>& losses, const std::string& prefix) {
  for (const auto& [name, value] : losses) {
    if (name == "total") {
      total = total.defined() ? total + value : value;
    } else {
      all[prefix + "." + name] = value;
    }
  }
}
}  // namespace

EncoderDecoderImpl::EncoderDecoderImpl(std::shared_ptr<BackboneImpl> backbone_,
                                       std::shared_ptr<DecodeHeadImpl> decode_head_,
                                       std::shared_ptr<DecodeHeadImpl> auxiliary_head_)
    : EncoderDecoderImpl(std::move(backbone_), std::vector<std::shared_ptr<DecodeHeadImpl>>{std::move(decode_head_)},
                         std::move(auxiliary_head_)) {}

EncoderDecoderImpl::EncoderDecoderImpl(std::shared_ptr<BackboneImpl> backbone_,
                                       std::vector<std::shared_ptr<DecodeHeadImpl>> decode_heads,
                                       std::shared_ptr<DecodeHeadImpl> auxiliary_head_)
    : heads_(std::move(decode_heads)) {
  TORCH_CHECK(backbone_ != nullptr, kWho, ": expected a backbone but got null");
  TORCH_CHECK(!heads_.empty(), kWho, ": expected at least one decode head but got none");
  for (size_t i = 0; i < heads_.size(); ++i) {
    TORCH_CHECK(heads_[i] != nullptr, kWho, ": expected decode head ", i, " but got null");
    const bool cascade_head = std::dynamic_pointer_cast<CascadeDecodeHeadImpl>(heads_[i]) != nullptr;
    TORCH_CHECK(cascade_head == (i > 0), kWho, ": expected ",
                i == 0 ? "an ordinary decode head first" : "a cascade head (e.g. OCRHead)", " at position ", i,
                " but got ", heads_[i]->name());
  }
  backbone = register_module("backbone", backbone_);
  if (heads_.size() == 1) {
    decode_head = register_module("decode_head", heads_.front());
  } else {
    decode_head_list = torch::nn::ModuleList();
    for (const auto& head : heads_) decode_head_list->push_back(head);
    decode_head_list = register_module("decode_head", decode_head_list);
  }
  if (auxiliary_head_) auxiliary_head = register_module("auxiliary_head", auxiliary_head_);
}

std::vector<torch::Tensor> EncoderDecoderImpl::extract_features(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 4, kWho, ": expected images of shape [B, C, H, W] but got ", images.sizes());
  return backbone->forward(images);
}

torch::Tensor EncoderDecoderImpl::forward(const torch::Tensor& images) {
  const std::vector<torch::Tensor> x = extract_features(images);
  torch::Tensor out = heads_.front()->forward_test(x);
  for (size_t i = 1; i < heads_.size(); ++i) {
    out = std::static_pointer_cast<CascadeDecodeHeadImpl>(heads_[i])->forward_test(x, out);
  }
  return resize(out, images.sizes().slice(2), align_corners());
}

std::map<std::string, torch::Tensor> EncoderDecoderImpl::forward_branches(const torch::Tensor& images,
                                                                          const torch::Tensor& labels) {
  TORCH_CHECK(labels.dim() == 3 && labels.size(0) == images.size(0), kWho, ": expected labels of shape [",
              images.size(0), ", H, W] but got ", labels.sizes());
  TORCH_CHECK(has_cac(), kWho, ": expected a model whose last decode head has the context-aware classifier ",
              "for forward_branches but it has none");
  const std::vector<torch::Tensor> x = extract_features(images);
  torch::Tensor features;
  if (!is_cascade()) {
    features = decode_head->features(x);
  } else {
    torch::Tensor prev = heads_.front()->forward_test(x);
    for (size_t i = 1; i + 1 < heads_.size(); ++i) {
      prev = std::static_pointer_cast<CascadeDecodeHeadImpl>(heads_[i])->forward_test(x, prev);
    }
    features = std::static_pointer_cast<CascadeDecodeHeadImpl>(heads_.back())->features(x, prev);
  }
  std::map<std::string, torch::Tensor> out = heads_.back()->branches(features, labels);
  for (auto& entry : out) entry.second = resize(entry.second, images.sizes().slice(2), align_corners());
  return out;
}

std::map<std::string, torch::Tensor> EncoderDecoderImpl::forward_train(const torch::Tensor& images,
                                                                       const torch::Tensor& labels) {
  TORCH_CHECK(labels.dim() == 3 && labels.size(0) == images.size(0), kWho, ": expected labels of shape [",
              images.size(0), ", H, W] but got ", labels.sizes());
  const std::vector<torch::Tensor> x = extract_features(images);
  std::map<std::string, torch::Tensor> all;
  torch::Tensor total;
  if (!is_cascade()) {
    add_head(all, total, decode_head->forward_train(x, labels), "decode");
  } else {
    add_head(all, total, heads_.front()->forward_train(x, labels), "decode_0");
    // As mmseg's CascadeEncoderDecoder: each later head reads the previous head's test output,
    // computed again (in training mode, with gradients).
    torch::Tensor prev = heads_.front()->forward_test(x);
    for (size_t i = 1; i < heads_.size(); ++i) {
      auto head = std::static_pointer_cast<CascadeDecodeHeadImpl>(heads_[i]);
      add_head(all, total, head->forward_train(x, prev, labels), "decode_" + std::to_string(i));
      if (i + 1 < heads_.size()) prev = head->forward_test(x, prev);
    }
  }
  if (auxiliary_head) add_head(all, total, auxiliary_head->forward_train(x, labels), "aux");
  all["total"] = total;
  return all;
}

void EncoderDecoderImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "cac_models::EncoderDecoder(cascade=" << is_cascade() << ", num_classes=" << num_classes()
         << ", auxiliary_head=" << (auxiliary_head != nullptr) << ")";
}

}  // namespace cac_models
