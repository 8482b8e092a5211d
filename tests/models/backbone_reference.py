#!/usr/bin/env python3
"""Independent PyTorch ports of mmsegmentation 0.x backbones, for the golden values of
tests/models/test_backbone_resnet.cpp, test_backbone_mobilenetv2.cpp and test_backbone_swin.cpp.
Needs only PyTorch (1.13 was used), no mmcv/mmseg:

    /usr/bin/python3 tests/models/backbone_reference.py

Ported from mmseg 0.x (v0.2x) sources, not from the C++ code:
- `ResNet`/`ResNetV1c` with `BasicBlock`/`Bottleneck` (style 'pytorch') of
  mmseg/models/backbones/resnet.py and `ResLayer` of mmseg/models/utils/res_layer.py
  (`contract_dilation`);
- `MobileNetV2` of mmseg/models/backbones/mobilenet_v2.py with `InvertedResidual` of
  mmseg/models/utils/inverted_residual.py, `make_divisible` of mmseg/models/utils/make_divisible.py
  and mmcv's `ConvModule` (conv, bn, activation; no conv bias with a norm);
- `SwinTransformer` of mmseg/models/backbones/swin.py (`WindowMSA`, `ShiftWindowMSA`,
  `SwinBlock`, `SwinBlockSequence`), `PatchEmbed`/`PatchMerging`/`AdaptivePadding` ('corner') of
  mmseg/models/utils/embed.py, and mmcv's `FFN` (mmcv/cnn/bricks/transformer.py) and `DropPath`
  (mmcv/cnn/bricks/drop.py).
State-dict keys are mmseg's, in mmseg's order (module registration order).

Prints parameter counts, state-dict entry counts and FNV-1a hashes of the key lists, and golden
outputs (shape, sum, cos-weighted sum, L1 norm of every output map) for deterministic weights
(`fill` of reference_common.py; `fill_hashed` in train mode) and inputs (`input_image`), each case
from freshly filled weights.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from reference_common import fill, fill_hashed, fnv1a64, input_image, stats


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


# --------------------------------------------------------------------------------------------
# ResNet (mmseg/models/backbones/resnet.py, mmseg/models/utils/res_layer.py)
# --------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        # norm1/norm2 are built with postfix 1/2: module names bn1, bn2.
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = bn(planes)
        # mmseg: conv2 = build_conv_layer(conv_cfg, planes, planes, 3, padding=1, bias=False)
        # (no dilation on the second convolution).
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        # style='pytorch': conv1_stride 1, conv2_stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu(out)


class ResLayer(nn.Sequential):
    def __init__(self, block, inplanes, planes, num_blocks, stride=1, dilation=1, contract_dilation=False):
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            # avg_down=False (ResNetV1c)
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                bn(planes * block.expansion))
        if dilation > 1 and contract_dilation:
            first_dilation = dilation // 2
        else:
            first_dilation = dilation
        layers = [block(inplanes=inplanes, planes=planes, stride=stride, dilation=first_dilation,
                        downsample=downsample)]
        inplanes = planes * block.expansion
        for _ in range(1, num_blocks):
            layers.append(block(inplanes=inplanes, planes=planes, stride=1, dilation=dilation))
        super().__init__(*layers)


class ResNet(nn.Module):
    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth, in_channels=3, stem_channels=64, base_channels=64, strides=(1, 2, 2, 2),
                 dilations=(1, 1, 1, 1), deep_stem=False, contract_dilation=False, norm_eval=False):
        super().__init__()
        self.deep_stem = deep_stem
        self.norm_eval = norm_eval
        self.block, stage_blocks = self.arch_settings[depth]
        if deep_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_channels // 2, 3, stride=2, padding=1, bias=False),
                bn(stem_channels // 2), nn.ReLU(inplace=True),
                nn.Conv2d(stem_channels // 2, stem_channels // 2, 3, stride=1, padding=1, bias=False),
                bn(stem_channels // 2), nn.ReLU(inplace=True),
                nn.Conv2d(stem_channels // 2, stem_channels, 3, stride=1, padding=1, bias=False),
                bn(stem_channels), nn.ReLU(inplace=True))
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = bn(stem_channels)  # norm1 with postfix 1
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem_channels
        self.res_layers = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2 ** i
            layer = ResLayer(self.block, inplanes, planes, num_blocks, stride=strides[i], dilation=dilations[i],
                             contract_dilation=contract_dilation)
            inplanes = planes * self.block.expansion
            self.add_module(f'layer{i + 1}', layer)
            self.res_layers.append(f'layer{i + 1}')

    def forward(self, x):
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for name in self.res_layers:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs

    def train(self, mode=True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def resnet_v1c(depth, **kwargs):
    # ResNetV1c: deep_stem=True, avg_down=False; every Table 1 config sets contract_dilation=True.
    return ResNet(depth, deep_stem=True, contract_dilation=True, **kwargs)


# --------------------------------------------------------------------------------------------
# MobileNetV2 (mmseg/models/backbones/mobilenet_v2.py, mmseg/models/utils/inverted_residual.py)
# --------------------------------------------------------------------------------------------

def make_divisible(value, divisor, min_value=None, min_ratio=0.9):
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < min_ratio * value:
        new_value += divisor
    return new_value


class ConvModule(nn.Module):
    """mmcv ConvModule with norm_cfg BN: conv (bias='auto' -> no bias), bn, activation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 act='ReLU6'):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=False)
        self.bn = bn(out_channels)
        self.activate = nn.ReLU6(inplace=True) if act == 'ReLU6' else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.activate is not None:
            x = self.activate(x)
        return x


class InvertedResidual(nn.Module):
    def __init__(self, in_channels, out_channels, stride, expand_ratio, dilation=1):
        super().__init__()
        assert stride in [1, 2]
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden_dim = int(round(in_channels * expand_ratio))
        layers = []
        if expand_ratio != 1:
            layers.append(ConvModule(in_channels, hidden_dim, kernel_size=1))
        layers.extend([
            ConvModule(hidden_dim, hidden_dim, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                       groups=hidden_dim),
            ConvModule(hidden_dim, out_channels, kernel_size=1, act=None),
        ])
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    arch_settings = [[1, 16, 1], [6, 24, 2], [6, 32, 3], [6, 64, 4], [6, 96, 3], [6, 160, 3], [6, 320, 1]]

    def __init__(self, widen_factor=1., strides=(1, 2, 2, 2, 1, 2, 1), dilations=(1, 1, 1, 1, 1, 1, 1),
                 out_indices=(1, 2, 4, 6), norm_eval=False):
        super().__init__()
        self.out_indices = out_indices
        self.norm_eval = norm_eval
        self.in_channels = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvModule(3, self.in_channels, kernel_size=3, stride=2, padding=1)
        self.layers = []
        for i, (expand_ratio, channel, num_blocks) in enumerate(self.arch_settings):
            out_channels = make_divisible(channel * widen_factor, 8)
            blocks = []
            for j in range(num_blocks):
                blocks.append(InvertedResidual(self.in_channels, out_channels, strides[i] if j == 0 else 1,
                                               expand_ratio=expand_ratio, dilation=dilations[i] if j == 0 else 1))
                self.in_channels = out_channels
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            self.layers.append(f'layer{i + 1}')

    def forward(self, x):
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def train(self, mode=True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


MOBILENETV2_D8 = dict(strides=(1, 2, 2, 1, 1, 1, 1), dilations=(1, 1, 1, 2, 2, 4, 4), out_indices=(1, 2, 4, 6))


# --------------------------------------------------------------------------------------------
# Swin Transformer (mmseg/models/backbones/swin.py, mmseg/models/utils/embed.py, mmcv FFN)
# --------------------------------------------------------------------------------------------

def drop_path(x, drop_prob=0., training=False):
    # mmcv/cnn/bricks/drop.py
    if drop_prob == 0. or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)
    return x.div(keep_prob) * random_tensor.floor()


class DropPath(nn.Module):
    def __init__(self, drop_prob=0.1):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)


class AdaptivePadding(nn.Module):
    def __init__(self, kernel_size=1, stride=1, dilation=1, padding='corner'):
        super().__init__()
        assert padding in ('same', 'corner')
        self.padding = padding
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = (stride, stride)
        self.dilation = (dilation, dilation)

    def get_pad_shape(self, input_shape):
        input_h, input_w = input_shape
        kernel_h, kernel_w = self.kernel_size
        stride_h, stride_w = self.stride
        output_h = math.ceil(input_h / stride_h)
        output_w = math.ceil(input_w / stride_w)
        pad_h = max((output_h - 1) * stride_h + (kernel_h - 1) * self.dilation[0] + 1 - input_h, 0)
        pad_w = max((output_w - 1) * stride_w + (kernel_w - 1) * self.dilation[1] + 1 - input_w, 0)
        return pad_h, pad_w

    def forward(self, x):
        pad_h, pad_w = self.get_pad_shape(x.size()[-2:])
        if pad_h > 0 or pad_w > 0:
            if self.padding == 'corner':
                x = F.pad(x, [0, pad_w, 0, pad_h])
            else:
                x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return x


class PatchEmbed(nn.Module):
    def __init__(self, in_channels=3, embed_dims=768, kernel_size=16, stride=None, norm=True):
        super().__init__()
        if stride is None:
            stride = kernel_size
        self.adap_padding = AdaptivePadding(kernel_size=kernel_size, stride=stride, dilation=1, padding='corner')
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride=stride, padding=0, bias=True)
        self.norm = nn.LayerNorm(embed_dims) if norm else None

    def forward(self, x):
        x = self.adap_padding(x)
        x = self.projection(x)
        out_size = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, out_size


class PatchMerging(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=2, stride=None, norm=True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        stride = stride or kernel_size
        self.adap_padding = AdaptivePadding(kernel_size=kernel_size, stride=stride, dilation=1, padding='corner')
        self.sampler = nn.Unfold(kernel_size=kernel_size, dilation=1, padding=0, stride=stride)
        sample_dim = kernel_size * kernel_size * in_channels
        self.norm = nn.LayerNorm(sample_dim) if norm else None
        self.reduction = nn.Linear(sample_dim, out_channels, bias=False)

    def forward(self, x, input_size):
        B, L, C = x.shape
        H, W = input_size
        assert L == H * W, 'input feature has wrong size'
        x = x.view(B, H, W, C).permute([0, 3, 1, 2])  # B, C, H, W
        x = self.adap_padding(x)
        H, W = x.shape[-2:]
        x = self.sampler(x)
        k, s = self.sampler.kernel_size, self.sampler.stride
        out_h = (H - (k - 1) - 1) // s + 1
        out_w = (W - (k - 1) - 1) // s + 1
        x = x.transpose(1, 2)
        x = self.norm(x) if self.norm else x
        x = self.reduction(x)
        return x, (out_h, out_w)


class WindowMSA(nn.Module):
    def __init__(self, embed_dims, num_heads, window_size, qkv_bias=True, qk_scale=None, attn_drop_rate=0.,
                 proj_drop_rate=0.):
        super().__init__()
        self.embed_dims = embed_dims
        self.window_size = window_size  # (Wh, Ww)
        self.num_heads = num_heads
        head_embed_dims = embed_dims // num_heads
        self.scale = qk_scale or head_embed_dims ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        Wh, Ww = self.window_size
        rel_index_coords = self.double_step_seq(2 * Ww - 1, Wh, 1, Ww)
        rel_position_index = rel_index_coords + rel_index_coords.T
        rel_position_index = rel_position_index.flip(1).contiguous()
        self.register_buffer('relative_position_index', rel_position_index)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop_rate)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, mask=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1))
        relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
        attn = attn + relative_position_bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.softmax(attn)
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x

    @staticmethod
    def double_step_seq(step1, len1, step2, len2):
        seq1 = torch.arange(0, step1 * len1, step1)
        seq2 = torch.arange(0, step2 * len2, step2)
        return (seq1[:, None] + seq2[None, :]).reshape(1, -1)


class ShiftWindowMSA(nn.Module):
    def __init__(self, embed_dims, num_heads, window_size, shift_size=0, qkv_bias=True, qk_scale=None,
                 attn_drop_rate=0, proj_drop_rate=0, drop_path_rate=0.):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        assert 0 <= self.shift_size < self.window_size
        self.w_msa = WindowMSA(embed_dims, num_heads, (window_size, window_size), qkv_bias, qk_scale,
                               attn_drop_rate, proj_drop_rate)
        self.drop = DropPath(drop_path_rate)

    def forward(self, query, hw_shape):
        B, L, C = query.shape
        H, W = hw_shape
        assert L == H * W, 'input feature has wrong size'
        query = query.view(B, H, W, C)
        pad_r = (self.window_size - W % self.window_size) % self.window_size
        pad_b = (self.window_size - H % self.window_size) % self.window_size
        query = F.pad(query, (0, 0, 0, pad_r, 0, pad_b))
        H_pad, W_pad = query.shape[1], query.shape[2]
        if self.shift_size > 0:
            shifted_query = torch.roll(query, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            img_mask = torch.zeros((1, H_pad, W_pad, 1), device=query.device)
            h_slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                        slice(-self.shift_size, None))
            w_slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                        slice(-self.shift_size, None))
            cnt = 0
            for h in h_slices:
                for w in w_slices:
                    img_mask[:, h, w, :] = cnt
                    cnt += 1
            mask_windows = self.window_partition(img_mask)
            mask_windows = mask_windows.view(-1, self.window_size * self.window_size)
            attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
        else:
            shifted_query = query
            attn_mask = None
        query_windows = self.window_partition(shifted_query)
        query_windows = query_windows.view(-1, self.window_size ** 2, C)
        attn_windows = self.w_msa(query_windows, mask=attn_mask)
        attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
        shifted_x = self.window_reverse(attn_windows, H_pad, W_pad)
        if self.shift_size > 0:
            x = torch.roll(shifted_x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        else:
            x = shifted_x
        if pad_r > 0 or pad_b:
            x = x[:, :H, :W, :].contiguous()
        x = x.view(B, H * W, C)
        x = self.drop(x)
        return x

    def window_reverse(self, windows, H, W):
        window_size = self.window_size
        B = int(windows.shape[0] / (H * W / window_size / window_size))
        x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)

    def window_partition(self, x):
        B, H, W, C = x.shape
        window_size = self.window_size
        x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
        windows = x.permute(0, 1, 3, 2, 4, 5).contiguous()
        return windows.view(-1, window_size, window_size, C)


class FFN(nn.Module):
    """mmcv FFN (num_fcs=2, add_identity=True): layers = [Sequential(Linear, act, Dropout), Linear,
    Dropout]; identity + dropout_layer(layers(x))."""

    def __init__(self, embed_dims, feedforward_channels, ffn_drop=0., drop_path_rate=0.):
        super().__init__()
        self.activate = nn.GELU()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), self.activate, nn.Dropout(ffn_drop)),
            nn.Linear(feedforward_channels, embed_dims),
            nn.Dropout(ffn_drop))
        self.dropout_layer = DropPath(drop_path_rate) if drop_path_rate is not None else nn.Identity()

    def forward(self, x, identity=None):
        out = self.layers(x)
        if identity is None:
            identity = x
        return identity + self.dropout_layer(out)


class SwinBlock(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, window_size=7, shift=False, qkv_bias=True,
                 drop_rate=0., attn_drop_rate=0., drop_path_rate=0.):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, window_size // 2 if shift else 0, qkv_bias,
                                   None, attn_drop_rate, drop_rate, drop_path_rate)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, feedforward_channels, ffn_drop=drop_rate, drop_path_rate=drop_path_rate)

    def forward(self, x, hw_shape):
        identity = x
        x = self.norm1(x)
        x = self.attn(x, hw_shape)
        x = x + identity
        identity = x
        x = self.norm2(x)
        x = self.ffn(x, identity=identity)
        return x


class SwinBlockSequence(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, depth, window_size=7, qkv_bias=True,
                 drop_rate=0., attn_drop_rate=0., drop_path_rate=(), downsample=None):
        super().__init__()
        assert len(drop_path_rate) == depth
        self.blocks = nn.ModuleList()
        for i in range(depth):
            self.blocks.append(SwinBlock(embed_dims, num_heads, feedforward_channels, window_size,
                                         shift=i % 2 == 1, qkv_bias=qkv_bias, drop_rate=drop_rate,
                                         attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate[i]))
        self.downsample = downsample

    def forward(self, x, hw_shape):
        for block in self.blocks:
            x = block(x, hw_shape)
        if self.downsample:
            x_down, down_hw_shape = self.downsample(x, hw_shape)
            return x_down, down_hw_shape, x, hw_shape
        return x, hw_shape, x, hw_shape


class SwinTransformer(nn.Module):
    def __init__(self, in_channels=3, embed_dims=96, patch_size=4, window_size=7, mlp_ratio=4,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), strides=(4, 2, 2, 2), out_indices=(0, 1, 2, 3),
                 qkv_bias=True, patch_norm=True, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.1):
        super().__init__()
        num_layers = len(depths)
        self.out_indices = out_indices
        assert strides[0] == patch_size
        self.patch_embed = PatchEmbed(in_channels, embed_dims, kernel_size=patch_size, stride=strides[0],
                                      norm=patch_norm)
        self.drop_after_pos = nn.Dropout(p=drop_rate)
        total_depth = sum(depths)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, total_depth)]
        self.stages = nn.ModuleList()
        in_channels = embed_dims
        for i in range(num_layers):
            if i < num_layers - 1:
                downsample = PatchMerging(in_channels, 2 * in_channels, stride=strides[i + 1], norm=patch_norm)
            else:
                downsample = None
            stage = SwinBlockSequence(in_channels, num_heads[i], int(mlp_ratio * in_channels), depths[i],
                                      window_size, qkv_bias, drop_rate, attn_drop_rate,
                                      dpr[sum(depths[:i]):sum(depths[:i + 1])], downsample)
            self.stages.append(stage)
            if downsample:
                in_channels = downsample.out_channels
        self.num_features = [int(embed_dims * 2 ** i) for i in range(num_layers)]
        for i in out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))

    def forward(self, x):
        x, hw_shape = self.patch_embed(x)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape, out, out_hw_shape = stage(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                out = out.view(-1, *out_hw_shape, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                outs.append(out)
        return outs


SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
SWIN_B = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12)
SWIN_L = dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12)
SWIN_SMALL_TEST = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)


# --------------------------------------------------------------------------------------------

def count(m):
    return sum(p.numel() for p in m.parameters())


def describe_keys(label, m):
    keys = list(m.state_dict().keys())
    print(f'{label}: state-dict entries {len(keys)}, parameter tensors {len(list(m.parameters()))}, '
          f'key-list FNV-1a 64 {hex(fnv1a64(chr(10).join(keys)))}')


def scale_bias_tables(m, factor=30.0):
    """Multiplies every relative_position_bias_table by `factor` (after `fill`): with fill's 0.1 v the
    position bias hardly moves the attention (dropping it changes the Swin-T outputs by 3e-7 of their
    L1 norm), with 3 v dropping it changes them by 9e-5 or more and transposing the index by 2.3e-5
    or more."""
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if name.endswith('relative_position_bias_table'):
                t.mul_(factor)


def golden(label, m, shape, train, post=None):
    # Every case starts from the filled weights and running statistics; train mode with the full-rank
    # weights of fill_hashed, which keep batch norm over the batch statistics well-conditioned.
    (fill_hashed if train else fill)(m)
    if post is not None:
        post(m)
    m.train(train)
    with torch.no_grad():
        outs = m(input_image(shape))
    print(f'// {label} {shape} {"train (fill_hashed)" if train else "eval"}')
    for o in outs:
        s_, w_, a_ = stats(o)
        print(f'    {{{{{", ".join(str(d) for d in o.shape)}}}, {s_:.10g}, {w_:.10g}, {a_:.10g}}},')


def main():
    torch.manual_seed(0)
    print('== parameter counts')
    spec = {'ResNetV1c-50': 23527264, 'MobileNetV2': 1811712, 'Swin-T': 27520698}
    models = {
        'ResNetV1c-18': lambda: resnet_v1c(18),
        'ResNetV1c-50': lambda: resnet_v1c(50),
        'ResNetV1c-101': lambda: resnet_v1c(101),
        'ResNet-50 (7x7 stem)': lambda: ResNet(50),
        'MobileNetV2': lambda: MobileNetV2(),
        'MobileNetV2 widen 0.5': lambda: MobileNetV2(widen_factor=0.5),
        'Swin-T': lambda: SwinTransformer(**SWIN_T),
        'Swin-B': lambda: SwinTransformer(**SWIN_B),
        'Swin-L': lambda: SwinTransformer(**SWIN_L),
        'Swin small test (C=32, heads 1,2,4,8, depths 2,2,2,2)': lambda: SwinTransformer(**SWIN_SMALL_TEST),
        'Swin-T patch_norm=False (no norm in patch_embed nor in the patch mergings)':
            lambda: SwinTransformer(patch_norm=False, **SWIN_T),
        'Swin-T qkv_bias=False': lambda: SwinTransformer(qkv_bias=False, **SWIN_T),
        'Swin-T mlp_ratio=2': lambda: SwinTransformer(mlp_ratio=2, **SWIN_T),
        'Swin small test, patch_size 2': lambda: SwinTransformer(patch_size=2, strides=(2, 2, 2, 2), **SWIN_SMALL_TEST),
    }
    for name, make in models.items():
        n = count(make())
        print(f'{name}: parameters {n}' + (f' (spec {spec[name]})' if name in spec else ''))
        if name in spec:
            assert n == spec[name], (name, n, spec[name])

    print('== state-dict keys')
    describe_keys('ResNetV1c-50', resnet_v1c(50))
    describe_keys('MobileNetV2', MobileNetV2())
    describe_keys('Swin-T', SwinTransformer(**SWIN_T))
    for ws in (7, 12):
        index = WindowMSA(96, 3, (ws, ws)).relative_position_index
        s_, w_, _ = stats(index)
        print(f'relative_position_index window {ws}: shape {list(index.shape)}, sum {s_:.10g}, weighted {w_:.10g}, '
              f'[0][0] {index[0, 0].item()}, [0][-1] {index[0, -1].item()}, [-1][0] {index[-1, 0].item()}, '
              f'[1][0] {index[1, 0].item()}, [{ws}][0] {index[ws, 0].item()}')

    print('== golden outputs: {{shape}, sum, cos-weighted sum, L1 norm}')
    # Train mode: at least 12 values per channel in the deepest stage (1x3x128x128: 4x4; 2x3x66x50:
    # two 3x2 maps).
    r50 = resnet_v1c(50)
    for shape, train in (((1, 3, 128, 128), True), ((1, 3, 64, 64), False), ((2, 3, 66, 50), True),
                         ((2, 3, 66, 50), False)):
        golden('ResNetV1c-50', r50, shape, train)
    r50_d8 = resnet_v1c(50, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
    golden('ResNetV1c-50 D8', r50_d8, (1, 3, 64, 64), False)
    golden('ResNetV1c-50 D8', r50_d8, (2, 3, 66, 50), True)
    r18_d8 = resnet_v1c(18, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
    golden('ResNetV1c-18 D8', r18_d8, (1, 3, 64, 64), False)
    golden('ResNetV1c-18 D8', r18_d8, (2, 3, 66, 50), True)
    golden('ResNet-50 7x7 stem (deep_stem false)', ResNet(50), (1, 3, 64, 64), False)

    mv2_d8 = MobileNetV2(**MOBILENETV2_D8)
    for shape in ((1, 3, 64, 64), (2, 3, 66, 50)):
        for train in (True, False):
            golden('MobileNetV2 D8', mv2_d8, shape, train)
    golden('MobileNetV2 default strides', MobileNetV2(), (1, 3, 64, 64), False)

    swin_t = SwinTransformer(drop_path_rate=0.3, **SWIN_T)
    golden('Swin-T', swin_t, (1, 3, 64, 64), False)
    golden('Swin-T', swin_t, (2, 3, 61, 75), False)
    swin_small = SwinTransformer(drop_path_rate=0.3, **SWIN_SMALL_TEST)
    golden('Swin small test', swin_small, (1, 3, 224, 224), False)
    golden('Swin-T, bias tables x30', swin_t, (1, 3, 64, 64), False, scale_bias_tables)
    golden('Swin-T, bias tables x30', swin_t, (2, 3, 61, 75), False, scale_bias_tables)
    golden('Swin small test, bias tables x30', swin_small, (1, 3, 224, 224), False, scale_bias_tables)


if __name__ == '__main__':
    main()
