#pragma once
/// \file
/// Result types of the cac modules.

#include <ATen/core/Tensor.h>

namespace cac {

/// The three predictions of a context-aware head (paper Fig. 5).
///
/// All are class scores `[B, n, *spatial]` at the features' resolution. Dtypes: p is the
/// classifier's own output (e.g. bfloat16 under autocast); pp and py have the features' dtype, or
/// float32 when the head ran under autocast (docs/api.md, "Mixed precision").
struct ContextAwareOutput {
  /// p: the original classifier's logits, passed through unchanged (with its bias).
  at::Tensor logits;
  /// pp: logits of the estimated context-aware classifier (paper Eq. 6); what inference uses.
  at::Tensor context_logits;
  /// py: logits of the oracle context-aware classifier (paper Eq. 3); defined only in training.
  at::Tensor oracle_logits;
};

/// Every term of the context-aware training objective (paper Eq. 8), unweighted, and their
/// weighted sum. Each is a 0-dim float tensor: float32 for float32, float16 and bfloat16 logits
/// (computed in float32, with or without autocast), float64 for float64.
struct ContextAwareLosses {
  /// Σ weight·term: what to call `backward()` on.
  at::Tensor total;
  /// L^ce: cross-entropy of the original logits p.
  at::Tensor logits_ce;
  /// L^ce_p: cross-entropy of the context-aware logits pp.
  at::Tensor context_ce;
  /// L^ce_y: cross-entropy of the oracle logits py.
  at::Tensor oracle_ce;
  /// L_KL: the entropy-aware distillation from py to pp (paper Eq. 11).
  at::Tensor kl;
};

}  // namespace cac
