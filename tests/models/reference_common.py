"""Helpers shared by the PyTorch reference ports (hrnet_reference.py, backbone_reference.py) that
produce the golden values of tests/models/test_backbone_*.cpp; tests/models/model_test_support.hpp
implements the same rules in C++. Needs only PyTorch (1.13 was used)."""
import math

import torch


def fill(model):
    """Deterministic weights: entry k of the state dict (parameters and buffers, in order),
    flattened, gets v[n] = sin(0.37 n + k). Weights of two or more dimensions (convolutions,
    linear layers) are scaled by 1/sqrt(fan_in) = 1/sqrt(t[0].numel()); other weights (batch and
    layer norms) become 0.3 + 0.05 v, running variances 1 + 0.5 |v|, everything else (biases,
    running means, Swin's relative_position_bias_table) 0.1 v. Integer entries (BN's
    num_batches_tracked, Swin's relative_position_index) are left alone but still count in k."""
    with torch.no_grad():
        for k, (name, t) in enumerate(model.state_dict().items()):
            if t.dtype == torch.int64:
                continue
            v = torch.sin(torch.arange(t.numel(), dtype=torch.float64) * 0.37 + k).reshape(t.shape)
            if name.endswith('weight') and t.dim() >= 2:
                v = v / math.sqrt(t[0].numel())
            elif name.endswith('running_var'):
                v = 1 + 0.5 * v.abs()
            elif name.endswith('weight'):
                v = 0.3 + 0.05 * v
            else:
                v = 0.1 * v
            t.copy_(v.to(t.dtype))


P = 2147483647  # 2**31 - 1, a prime


def hashed_values(numel, k):
    """numel pseudo-random values in [-1, 1) for state-dict entry k, in exact integer arithmetic
    (every product stays below 2**62, so int64 holds it): h = ((48271 n + 69621 k + 12345) mod P)**2
    mod P, then h = 48271 h mod P, and v = h / P * 2 - 1 (in float64, in that order)."""
    n = torch.arange(numel, dtype=torch.int64)
    h = (n * 48271 + k * 69621 + 12345) % P
    h = (h * h) % P
    h = (h * 48271) % P
    return h.double() / P * 2 - 1


def fill_hashed(model):
    """`fill`, then every weight of two or more dimensions (convolutions, linear layers) replaced by
    hashed_values(numel, k) / sqrt(fan_in), k its state-dict index as in `fill`. For the train-mode
    batch-norm cases: the rows of a `fill` weight are all sin(0.37 i + phase) = a cos(0.37 i) +
    b sin(0.37 i), so each convolution has rank 2 and its output channels are combinations of two
    maps; train-mode batch norm standardizes each channel by its batch standard deviation, and the
    channels where the two maps nearly cancel blow up float rounding (a 2**-24 relative change of the
    input moves the outputs by up to 14% of their L1 norm). These weights have full rank, and the
    same change moves them by about 1e-6 (docs/testing.md)."""
    fill(model)
    with torch.no_grad():
        for k, (name, t) in enumerate(model.state_dict().items()):
            if name.endswith('weight') and t.dim() >= 2:
                v = hashed_values(t.numel(), k).reshape(t.shape) / math.sqrt(t[0].numel())
                t.copy_(v.to(t.dtype))


def input_image(shape):
    """The deterministic input: cos(0.11 n) over the flattened tensor of `shape`."""
    n = 1
    for s in shape:
        n *= s
    return torch.cos(torch.arange(n, dtype=torch.float64) * 0.11).reshape(shape).float()


def fnv1a64(text):
    h = 0xcbf29ce484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def stats(o):
    """(sum, weighted sum, L1 norm) of a map; the weights cos(0.7 n) over the flattened map make
    the second number sensitive to where the values sit. The L1 norm is the scale of the
    tolerances (for ReLU'd maps it equals the sum)."""
    flat = o.double().flatten()
    w = torch.cos(torch.arange(flat.numel(), dtype=torch.float64) * 0.7)
    return flat.sum().item(), (flat * w).sum().item(), flat.abs().sum().item()
