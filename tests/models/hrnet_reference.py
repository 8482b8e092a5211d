#!/usr/bin/env python3
"""Independent PyTorch port of mmsegmentation 0.x `HRNet` (mmseg/models/backbones/hrnet.py,
with `BasicBlock`/`Bottleneck` of mmseg/models/backbones/resnet.py and `mmseg.ops.Upsample`/`resize`)
for the golden values of tests/models/test_backbone_hrnet.cpp. Needs only PyTorch (1.13 was used):

    /usr/bin/python3 tests/models/hrnet_reference.py

Prints the parameter counts of HRNetV2-W18/W48 (multiscale_output true and false), the number of
W18 state-dict entries with an FNV-1a hash of the ordered key list, and the golden outputs of W18
(shape, sum, cos-weighted sum of every branch) for deterministic inputs (`input_image`) and weights
(every state-dict entry filled by `fill` of reference_common.py, in state-dict order; in train mode
`fill_hashed`), in train mode (1x3x128x128, 2x3x66x50) and eval mode (1x3x64x64, 2x3x66x50), each
case from freshly filled weights.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from reference_common import fill, fill_hashed, fnv1a64, input_image, stats


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        # style='pytorch': the stride is on conv2
        self.conv1 = nn.Conv2d(inplanes, planes, 1, 1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


def resize(x, size, mode='bilinear', align_corners=False):
    # mmseg.ops.resize: always F.interpolate with a size
    return F.interpolate(x, tuple(int(s) for s in size), None, mode, align_corners)


class Upsample(nn.Module):
    # mmseg.ops.Upsample: size = int(t * scale_factor), then resize
    def __init__(self, scale_factor, mode, align_corners):
        super().__init__()
        self.scale_factor = float(scale_factor)
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x):
        size = [int(t * self.scale_factor) for t in x.shape[-2:]]
        return resize(x, size, self.mode, self.align_corners)


class HRModule(nn.Module):
    def __init__(self, num_branches, block, num_blocks, in_channels, num_channels, multiscale_output=True):
        super().__init__()
        self.in_channels = in_channels
        self.num_branches = num_branches
        self.multiscale_output = multiscale_output
        self.branches = nn.ModuleList(
            [self._make_one_branch(i, block, num_blocks, num_channels) for i in range(num_branches)])
        self.fuse_layers = self._make_fuse_layers()
        self.relu = nn.ReLU(inplace=False)

    def _make_one_branch(self, i, block, num_blocks, num_channels, stride=1):
        downsample = None
        if stride != 1 or self.in_channels[i] != num_channels[i] * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels[i], num_channels[i] * block.expansion, 1, stride, bias=False),
                bn(num_channels[i] * block.expansion))
        layers = [block(self.in_channels[i], num_channels[i], stride, downsample=downsample)]
        self.in_channels[i] = num_channels[i] * block.expansion
        for _ in range(1, num_blocks[i]):
            layers.append(block(self.in_channels[i], num_channels[i]))
        return nn.Sequential(*layers)

    def _make_fuse_layers(self):
        if self.num_branches == 1:
            return None
        n = self.num_branches
        c = self.in_channels
        fuse_layers = []
        for i in range(n if self.multiscale_output else 1):
            fuse_layer = []
            for j in range(n):
                if j > i:
                    fuse_layer.append(nn.Sequential(
                        nn.Conv2d(c[j], c[i], 1, 1, 0, bias=False), bn(c[i]),
                        Upsample(scale_factor=2 ** (j - i), mode='bilinear', align_corners=False)))
                elif j == i:
                    fuse_layer.append(None)
                else:
                    downs = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            downs.append(nn.Sequential(nn.Conv2d(c[j], c[i], 3, 2, 1, bias=False), bn(c[i])))
                        else:
                            downs.append(nn.Sequential(nn.Conv2d(c[j], c[j], 3, 2, 1, bias=False), bn(c[j]),
                                                       nn.ReLU(inplace=False)))
                    fuse_layer.append(nn.Sequential(*downs))
            fuse_layers.append(nn.ModuleList(fuse_layer))
        return nn.ModuleList(fuse_layers)

    def forward(self, x):
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        for i in range(self.num_branches):
            x[i] = self.branches[i](x[i])
        x_fuse = []
        for i in range(len(self.fuse_layers)):
            y = 0
            for j in range(self.num_branches):
                if i == j:
                    y += x[j]
                elif j > i:
                    y = y + resize(self.fuse_layers[i][j](x[j]), size=x[i].shape[2:], mode='bilinear',
                                   align_corners=False)
                else:
                    y += self.fuse_layers[i][j](x[j])
            x_fuse.append(self.relu(y))
        return x_fuse


BLOCKS = {'BASIC': BasicBlock, 'BOTTLENECK': Bottleneck}


def hrnetv2_extra(w):
    return dict(
        stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(4,), num_channels=(64,)),
        stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(4, 4), num_channels=(w, 2 * w)),
        stage3=dict(num_modules=4, num_branches=3, block='BASIC', num_blocks=(4, 4, 4),
                    num_channels=(w, 2 * w, 4 * w)),
        stage4=dict(num_modules=3, num_branches=4, block='BASIC', num_blocks=(4, 4, 4, 4),
                    num_channels=(w, 2 * w, 4 * w, 8 * w)))


class HRNet(nn.Module):
    def __init__(self, extra, in_channels=3, multiscale_output=True):
        super().__init__()
        self.extra = extra
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 2, 1, bias=False)
        self.bn1 = bn(64)  # build_norm_layer(BN, 64, postfix=1) -> 'bn1'
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = bn(64)
        self.relu = nn.ReLU(inplace=True)

        s1 = extra['stage1']
        block = BLOCKS[s1['block']]
        stage1_out = s1['num_channels'][0] * block.expansion
        self.layer1 = self._make_layer(block, 64, s1['num_channels'][0], s1['num_blocks'][0])

        pre = [stage1_out]
        for s in (2, 3, 4):
            cfg = extra[f'stage{s}']
            block = BLOCKS[cfg['block']]
            nc = [c * block.expansion for c in cfg['num_channels']]
            setattr(self, f'transition{s - 1}', self._make_transition_layer(pre, nc))
            stage, pre = self._make_stage(cfg, nc, multiscale_output if s == 4 else True)
            setattr(self, f'stage{s}', stage)

    def _make_transition_layer(self, pre, cur):
        layers = []
        for i in range(len(cur)):
            if i < len(pre):
                if cur[i] != pre[i]:
                    layers.append(nn.Sequential(nn.Conv2d(pre[i], cur[i], 3, 1, 1, bias=False), bn(cur[i]),
                                                nn.ReLU(inplace=True)))
                else:
                    layers.append(None)
            else:
                downs = []
                for j in range(i + 1 - len(pre)):
                    cin = pre[-1]
                    cout = cur[i] if j == i - len(pre) else cin
                    downs.append(nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), bn(cout),
                                               nn.ReLU(inplace=True)))
                layers.append(nn.Sequential(*downs))
        return nn.ModuleList(layers)

    def _make_layer(self, block, inplanes, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                       bn(planes * block.expansion))
        layers = [block(inplanes, planes, stride, downsample=downsample)]
        inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(inplanes, planes))
        return nn.Sequential(*layers)

    def _make_stage(self, cfg, in_channels, multiscale_output=True):
        block = BLOCKS[cfg['block']]
        mods = []
        for i in range(cfg['num_modules']):
            ms = not (not multiscale_output and i == cfg['num_modules'] - 1)
            mods.append(HRModule(cfg['num_branches'], block, cfg['num_blocks'], in_channels,
                                 cfg['num_channels'], ms))
        return nn.Sequential(*mods), in_channels

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        y = [x]
        for s in (2, 3, 4):
            t = getattr(self, f'transition{s - 1}')
            n = self.extra[f'stage{s}']['num_branches']
            xs = []
            for i in range(n):
                if t[i] is not None:
                    xs.append(t[i](y[-1]))
                else:
                    xs.append(y[i])
            y = getattr(self, f'stage{s}')(xs)
        return y


def main():
    for w, expected in ((18, 9562260), (48, None)):
        for multiscale in (True, False):
            m = HRNet(hrnetv2_extra(w), multiscale_output=multiscale)
            count = sum(p.numel() for p in m.parameters())
            print(f'HRNetV2-W{w} multiscale_output={multiscale}: parameters {count}' +
                  (f' (spec {expected})' if expected and multiscale else ''))
    m = HRNet(hrnetv2_extra(18))
    keys = list(m.state_dict().keys())
    print('W18 state-dict entries', len(keys), 'parameter tensors', len(list(m.parameters())),
          'key-list FNV-1a 64 (keys joined by newlines)', hex(fnv1a64('\n'.join(keys))))
    # Train mode: fill_hashed weights (full rank, so that batch norm over the batch statistics is
    # well-conditioned) and at least 12 values per channel in the deepest branch (1x3x128x128: 4x4;
    # 2x3x66x50: two 3x2 maps).
    for shape, mode in (((1, 3, 128, 128), 'train'), ((1, 3, 64, 64), 'eval'),
                        ((2, 3, 66, 50), 'train'), ((2, 3, 66, 50), 'eval')):
        # every case starts from the filled weights and running statistics
        (fill_hashed if mode == 'train' else fill)(m)
        m.train(mode == 'train')
        with torch.no_grad():
            outs = m(input_image(shape))
        print(f'// {shape} {mode}' + (' (fill_hashed)' if mode == 'train' else ''))
        for o in outs:
            s_, w_, _ = stats(o)
            print(f'    {{{{{", ".join(str(d) for d in o.shape)}}}, {s_:.10g}, {w_:.10g}}},')


if __name__ == '__main__':
    main()
