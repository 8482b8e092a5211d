#pragma once
// Naive loop references of the cac maths, for the test suite only.
//
// Every function here is written as plain nested for-loops over b, k, i reading values through
// accessors on double tensors: deliberately not vectorised and sharing no code with the library,
// so that agreement with `cac::functional` means something. They never build an autograd graph.
//
// Conventions:
// - Inputs may be of any floating dtype; they are detached and converted to double first.
// - "general spatial": features `[B, d, *spatial]`, class scores `[B, n, *spatial]` and labels
//   `[B, *spatial]` may have any number (>= 1) of spatial dims; the loops run over the flattened
//   pixel index i in [0, S), S = prod(spatial), in row-major order.
// - Outputs are double (labels: int64), shaped as documented on each function.
//
// Also holds small builders of random test inputs shared by the test files (section at the end).

#include <torch/torch.h>

#include <cac/functional.hpp>  // cac::ProjectorWeights only

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace naive {

/// `t` `[B, c, *spatial]` as a contiguous, detached double `[B, c, S]` tensor.
inline torch::Tensor flat3(const torch::Tensor& t) {
  int64_t pixels = 1;
  for (int64_t i = 2; i < t.dim(); ++i) pixels *= t.size(i);
  return t.detach().to(torch::kDouble).reshape({t.size(0), t.size(1), pixels}).contiguous();
}

/// Labels `[B, *spatial]` as a contiguous int64 `[B, S]` tensor.
inline torch::Tensor flat_labels(const torch::Tensor& y) {
  return y.detach().to(torch::kLong).reshape({y.size(0), -1}).contiguous();
}

/// Paper Eq. 4. `f` `[B, d, *spatial]`, `p` `[B, n, *spatial]` →
/// `P[b,k,:] = Σ_i softmax(p)[b,k,i] f[b,:,i] / (Σ_i softmax(p)[b,k,i] + 1e-12)`, `[B, n, d]`.
inline torch::Tensor soft_prototypes(const torch::Tensor& f, const torch::Tensor& p) {
  const torch::Tensor F = flat3(f), L = flat3(p);
  const int64_t B = F.size(0), d = F.size(1), S = F.size(2), n = L.size(1);
  auto fa = F.accessor<double, 3>();
  auto la = L.accessor<double, 3>();
  torch::Tensor out = torch::zeros({B, n, d}, torch::kDouble);
  auto oa = out.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b) {
    // Softmax over classes at each pixel (max-shifted).
    std::vector<double> soft(static_cast<size_t>(n * S));
    for (int64_t i = 0; i < S; ++i) {
      double m = la[b][0][i];
      for (int64_t k = 1; k < n; ++k) m = std::max(m, la[b][k][i]);
      double z = 0;
      for (int64_t k = 0; k < n; ++k) z += std::exp(la[b][k][i] - m);
      for (int64_t k = 0; k < n; ++k) soft[static_cast<size_t>(k * S + i)] = std::exp(la[b][k][i] - m) / z;
    }
    for (int64_t k = 0; k < n; ++k) {
      double mass = 0;
      for (int64_t i = 0; i < S; ++i) mass += soft[static_cast<size_t>(k * S + i)];
      for (int64_t c = 0; c < d; ++c) {
        double sum = 0;
        for (int64_t i = 0; i < S; ++i) sum += soft[static_cast<size_t>(k * S + i)] * fa[b][c][i];
        oa[b][k][c] = sum / (mass + 1e-12);
      }
    }
  }
  return out;
}

/// Paper Eq. 1 / released batch pooling. `f` `[B, d, *spatial]`, `C` `[n, d]`, `y_resized`
/// `[B, *spatial]` on the features' grid (already resized). Each class k gets the mean of f over
/// the pixels labelled k (over all images when `batch_scope`, else per image); a class without
/// pixels keeps row k of C. Returns `[n, d]` (batch scope) or `[B, n, d]` (image scope).
inline torch::Tensor ground_truth_prototypes(const torch::Tensor& f, const torch::Tensor& C,
                                             const torch::Tensor& y_resized, bool batch_scope, int64_t ignore) {
  const torch::Tensor F = flat3(f), W = C.detach().to(torch::kDouble).reshape({C.size(0), -1}).contiguous();
  const torch::Tensor Y = flat_labels(y_resized);
  const int64_t B = F.size(0), d = F.size(1), S = F.size(2), n = W.size(0);
  auto fa = F.accessor<double, 3>();
  auto wa = W.accessor<double, 2>();
  auto ya = Y.accessor<int64_t, 2>();
  const int64_t groups = batch_scope ? 1 : B;
  torch::Tensor out = torch::zeros({groups, n, d}, torch::kDouble);
  auto oa = out.accessor<double, 3>();
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t b_begin = batch_scope ? 0 : g, b_end = batch_scope ? B : g + 1;
    for (int64_t k = 0; k < n; ++k) {
      double count = 0;
      std::vector<double> sum(static_cast<size_t>(d), 0.0);
      for (int64_t b = b_begin; b < b_end; ++b) {
        for (int64_t i = 0; i < S; ++i) {
          if (ya[b][i] == ignore || ya[b][i] != k) continue;  // k == ignore never gets pixels
          count += 1;
          for (int64_t c = 0; c < d; ++c) sum[static_cast<size_t>(c)] += fa[b][c][i];
        }
      }
      for (int64_t c = 0; c < d; ++c)
        oa[g][k][c] = count > 0 ? sum[static_cast<size_t>(c)] / (count + 1e-12) : wa[k][c];
    }
  }
  return batch_scope ? out[0] : out;
}

/// Paper Eqs. 3/6. `f` `[B, d, *spatial]`, `W` `[n, d]` (shared) or `[B, n, d]` (per image) →
/// `τ·⟨f/(‖f‖+1e-12), w/(‖w‖+1e-12)⟩`, `[B, n, *spatial]`.
inline torch::Tensor cosine_logits(const torch::Tensor& f, const torch::Tensor& W, double tau) {
  const torch::Tensor F = flat3(f);
  const int64_t B = F.size(0), d = F.size(1), S = F.size(2);
  const torch::Tensor Wb =
      (W.dim() == 2 ? W.unsqueeze(0).expand({B, W.size(0), W.size(1)}) : W).detach().to(torch::kDouble).contiguous();
  const int64_t n = Wb.size(1);
  auto fa = F.accessor<double, 3>();
  auto wa = Wb.accessor<double, 3>();
  torch::Tensor out = torch::zeros({B, n, S}, torch::kDouble);
  auto oa = out.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < n; ++k) {
      double wn = 0;
      for (int64_t c = 0; c < d; ++c) wn += wa[b][k][c] * wa[b][k][c];
      wn = std::sqrt(wn);
      for (int64_t i = 0; i < S; ++i) {
        double fn = 0, dot = 0;
        for (int64_t c = 0; c < d; ++c) {
          fn += fa[b][c][i] * fa[b][c][i];
          dot += fa[b][c][i] * wa[b][k][c];
        }
        fn = std::sqrt(fn);
        oa[b][k][i] = tau * dot / ((fn + 1e-12) * (wn + 1e-12));
      }
    }
  }
  std::vector<int64_t> shape = f.sizes().vec();
  shape[1] = n;
  return out.reshape(shape);
}

/// PyTorch's nearest source index (given an output size): identity when out == in, dst >> 1
/// when out == 2·in, else min(floor(dst · (float)in / (float)out), in − 1) computed in float.
inline int64_t nearest_source(int64_t dst, int64_t in, int64_t out) {
  if (out == in) return dst;
  if (out == 2 * in) return dst >> 1;
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const float src = static_cast<float>(dst) * scale;
  return std::min(static_cast<int64_t>(std::floor(src)), in - 1);
}

/// Nearest resize of integer labels `y` `[B, *spatial]` to `[B, *sizes]` (general spatial),
/// looping over every output position. Returns int64.
inline torch::Tensor resize_labels(const torch::Tensor& y, at::IntArrayRef sizes) {
  const torch::Tensor Y = y.detach().to(torch::kLong).contiguous();
  const int64_t B = Y.size(0), dims = static_cast<int64_t>(sizes.size());
  std::vector<int64_t> out_shape{B};
  int64_t out_pixels = 1;
  for (int64_t s : sizes) {
    out_shape.push_back(s);
    out_pixels *= s;
  }
  int64_t in_pixels = 1;
  for (int64_t j = 0; j < dims; ++j) in_pixels *= Y.size(j + 1);
  torch::Tensor out = torch::empty({B, out_pixels}, torch::kLong);
  const torch::Tensor Yf = Y.reshape({B, in_pixels});
  auto ya = Yf.accessor<int64_t, 2>();
  auto oa = out.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t o = 0; o < out_pixels; ++o) {
      // Decompose o (row-major over `sizes`), map each coordinate, recompose the input index.
      int64_t rest = o, src = 0, stride = 1;
      for (int64_t j = dims - 1; j >= 0; --j) {
        const int64_t coord = rest % sizes[j];
        rest /= sizes[j];
        src += nearest_source(coord, Y.size(j + 1), sizes[j]) * stride;
        stride *= Y.size(j + 1);
      }
      oa[b][o] = ya[b][src];
    }
  }
  return out.reshape(out_shape);
}

/// The released distillation loss (paper Eqs. 7, 10, 11 with label mixing). `pp` (student) and
/// `py` (teacher) `[B, n, *spatial]`, `y` `[B, *spatial']` at any resolution (nearest-resized
/// to pp's spatial size here). Per pixel: target = w·softmax(py) + (1−w)·onehot(y) (ignored
/// pixels take class 0 in the one-hot), ℓ = −Σ_j target_j log_softmax(pp)_j, weight
/// H = max(0, −Σ_j q_j log(q_j + 1e-12)) (q = softmax(py)) if `entropy` else 1, and 0 on ignored
/// pixels (the max only matters for a numerically one-hot q, see below).
/// Class-wise: mean over classes k present in y of Σ ℓH[y=k] / (ΣH[y=k] + 1e-12) (0 if none);
/// else Σ ℓH / (ΣH + 1e-12). Returns a 0-dim double tensor.
inline torch::Tensor distill(const torch::Tensor& pp, const torch::Tensor& py, const torch::Tensor& y,
                             double teacher_weight, bool entropy, bool class_wise, int64_t ignore) {
  const torch::Tensor P = flat3(pp), Q = flat3(py);
  const torch::Tensor Y = flat_labels(resize_labels(y, pp.sizes().slice(2)));
  const int64_t B = P.size(0), n = P.size(1), S = P.size(2);
  auto pa = P.accessor<double, 3>();
  auto qa = Q.accessor<double, 3>();
  auto ya = Y.accessor<int64_t, 2>();
  std::vector<double> class_num(static_cast<size_t>(n), 0.0), class_den(static_cast<size_t>(n), 0.0);
  std::vector<bool> present(static_cast<size_t>(n), false);
  double num = 0, den = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < S; ++i) {
      const int64_t label = ya[b][i];
      const bool ignored = label == ignore;
      double pm = pa[b][0][i], qm = qa[b][0][i];
      for (int64_t j = 1; j < n; ++j) {
        pm = std::max(pm, pa[b][j][i]);
        qm = std::max(qm, qa[b][j][i]);
      }
      double pz = 0, qz = 0;
      for (int64_t j = 0; j < n; ++j) {
        pz += std::exp(pa[b][j][i] - pm);
        qz += std::exp(qa[b][j][i] - qm);
      }
      double loss = 0, h = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double log_p = pa[b][j][i] - pm - std::log(pz);
        const double q = std::exp(qa[b][j][i] - qm) / qz;
        const double onehot = (ignored ? 0 : label) == j ? 1.0 : 0.0;
        loss -= (teacher_weight * q + (1.0 - teacher_weight) * onehot) * log_p;
        h -= q * std::log(q + 1e-12);
      }
      // An entropy is never negative: for a one-hot q, log(1 + 1e-12) > 0 in double would make
      // h ≈ −1e-12 (in float32 1 + 1e-12 rounds to 1 and h is exactly 0, as in the released code).
      const double weight = ignored ? 0.0 : (entropy ? std::max(h, 0.0) : 1.0);
      num += loss * weight;
      den += weight;
      if (!ignored) {
        class_num[static_cast<size_t>(label)] += loss * weight;
        class_den[static_cast<size_t>(label)] += weight;
        present[static_cast<size_t>(label)] = true;
      }
    }
  }
  if (!class_wise) return torch::tensor(num / (den + 1e-12), torch::kDouble);
  double total = 0;
  int64_t count = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (!present[static_cast<size_t>(k)]) continue;
    total += class_num[static_cast<size_t>(k)] / (class_den[static_cast<size_t>(k)] + 1e-12);
    ++count;
  }
  return torch::tensor(count == 0 ? 0.0 : total / static_cast<double>(count), torch::kDouble);
}

/// The projector θ applied row-wise: `x` `[..., 2d]` → relu(x·fc1ᵀ)·fc2ᵀ + b2, `[..., d]`.
/// `fc1` `[h, 2d]`, `fc2` `[d, h]`, `b2` `[d]` or undefined.
inline torch::Tensor project(const torch::Tensor& x, const torch::Tensor& fc1, const torch::Tensor& fc2,
                             const torch::Tensor& b2) {
  const torch::Tensor X = x.detach().to(torch::kDouble).reshape({-1, x.size(-1)}).contiguous();
  const torch::Tensor A = fc1.detach().to(torch::kDouble).contiguous();
  const torch::Tensor Bm = fc2.detach().to(torch::kDouble).contiguous();
  const int64_t rows = X.size(0), in = X.size(1), h = A.size(0), d = Bm.size(0);
  auto xa = X.accessor<double, 2>();
  auto aa = A.accessor<double, 2>();
  auto ba = Bm.accessor<double, 2>();
  torch::Tensor out = torch::zeros({rows, d}, torch::kDouble);
  auto oa = out.accessor<double, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> hidden(static_cast<size_t>(h), 0.0);
    for (int64_t u = 0; u < h; ++u) {
      double s = 0;
      for (int64_t c = 0; c < in; ++c) s += aa[u][c] * xa[r][c];
      hidden[static_cast<size_t>(u)] = std::max(s, 0.0);
    }
    for (int64_t c = 0; c < d; ++c) {
      double s = b2.defined() ? b2[c].item<double>() : 0.0;
      for (int64_t u = 0; u < h; ++u) s += ba[c][u] * hidden[static_cast<size_t>(u)];
      oa[r][c] = s;
    }
  }
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = d;
  return out.reshape(shape);
}

/// `a` `[..., n, d]` ⊕ `b` `[n, d]` (broadcast over the leading dims) on the last dim.
inline torch::Tensor concat_rows(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor bb = b.detach().to(torch::kDouble).expand(a.sizes());
  return torch::cat({a.to(torch::kDouble), bb}, -1);
}

/// Estimated context-aware logits pp (Eqs. 4-6): `[B, n, *spatial]`.
inline torch::Tensor context_logits(const torch::Tensor& f, const torch::Tensor& C, const torch::Tensor& p,
                                    const cac::ProjectorWeights& theta, double tau) {
  const torch::Tensor W = C.reshape({C.size(0), C.size(1)});
  const torch::Tensor A =
      project(concat_rows(soft_prototypes(f, p), W), theta.fc1_weight, theta.fc2_weight, theta.fc2_bias);
  return cosine_logits(f, A, tau);
}

/// Oracle logits py (Eqs. 1-3): labels `y` at any resolution (resized to f's grid), `[B, n, *spatial]`.
inline torch::Tensor oracle_logits(const torch::Tensor& f, const torch::Tensor& C, const torch::Tensor& y,
                                   const cac::ProjectorWeights& theta, double tau, bool batch_scope, int64_t ignore) {
  const torch::Tensor W = C.reshape({C.size(0), C.size(1)});
  const torch::Tensor prototypes =
      ground_truth_prototypes(f, W, resize_labels(y, f.sizes().slice(2)), batch_scope, ignore);
  const torch::Tensor A = project(concat_rows(prototypes, W), theta.fc1_weight, theta.fc2_weight, theta.fc2_bias);
  return cosine_logits(f, A, tau);
}

/// Mean cross-entropy of `logits` `[B, n, *spatial]` against `y` `[B, *spatial]` (same spatial
/// size) over non-ignored pixels (0 when all are ignored). Returns a 0-dim double tensor.
inline torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& y, int64_t ignore) {
  const torch::Tensor L = flat3(logits);
  const torch::Tensor Y = flat_labels(y);
  const int64_t B = L.size(0), n = L.size(1), S = L.size(2);
  auto la = L.accessor<double, 3>();
  auto ya = Y.accessor<int64_t, 2>();
  double sum = 0;
  int64_t count = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < S; ++i) {
      if (ya[b][i] == ignore) continue;
      double m = la[b][0][i];
      for (int64_t j = 1; j < n; ++j) m = std::max(m, la[b][j][i]);
      double z = 0;
      for (int64_t j = 0; j < n; ++j) z += std::exp(la[b][j][i] - m);
      sum -= la[b][ya[b][i]][i] - m - std::log(z);
      ++count;
    }
  }
  return torch::tensor(count == 0 ? 0.0 : sum / static_cast<double>(count), torch::kDouble);
}

// ---------------------------------------------------------------------------------------------
// Builders of random test inputs (seeded; deterministic for a given seed).

/// Shape `[B, c, *spatial]`.
inline std::vector<int64_t> shape_of(int64_t B, int64_t c, const std::vector<int64_t>& spatial) {
  std::vector<int64_t> shape{B, c};
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  return shape;
}

/// Standard-normal tensor of `shape` from generator seed `seed`.
inline torch::Tensor randn(const std::vector<int64_t>& shape, uint64_t seed, torch::ScalarType dtype = torch::kDouble) {
  auto generator = at::detail::createCPUGenerator(seed);
  return at::randn(shape, generator, torch::TensorOptions().dtype(torch::kDouble)).to(dtype);
}

/// Labels `[B, *spatial]` (int64) uniform in [0, n), with about `ignore_fraction` of the pixels
/// set to `ignore`.
inline torch::Tensor random_labels(int64_t B, const std::vector<int64_t>& spatial, int64_t n, uint64_t seed,
                                   double ignore_fraction = 0.2, int64_t ignore = 255) {
  std::vector<int64_t> shape{B};
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  auto generator = at::detail::createCPUGenerator(seed);
  torch::Tensor labels = at::randint(0, n, shape, generator, torch::TensorOptions().dtype(torch::kLong));
  const torch::Tensor coin = at::rand(shape, generator, torch::TensorOptions().dtype(torch::kDouble));
  return labels.masked_fill(coin < ignore_fraction, ignore);
}

/// Random projector weights (fc1 `[h, 2d]`, fc2 `[d, h]`, bias `[d]`) scaled like LibTorch's
/// default Linear initialisation.
inline cac::ProjectorWeights random_projector(int64_t d, int64_t h, uint64_t seed,
                                              torch::ScalarType dtype = torch::kDouble) {
  return {randn({h, 2 * d}, seed, dtype) / std::sqrt(2.0 * static_cast<double>(d)),
          randn({d, h}, seed + 1, dtype) / std::sqrt(static_cast<double>(h)), randn({d}, seed + 2, dtype) * 0.1};
}

}  // namespace naive
