"""A tiny EfficientNet-shaped model for the profile tests: what the op maps and profiles must cope with.

A stem conv whose BatchNorm and ReLU6 are separate modules (``_bn0``, a root-level ``_act`` used twice, as
EfficientNet's ``_swish``), a ``ModuleList`` of inverted-residual blocks (expand 1x1, depthwise 3x3 with
padding, project 1x1, each with its own BatchNorm; a residual add in the block's own forward), a head conv,
pooling, a root-level flatten and a classifier. ``make()`` is an mpk model factory (``file.py:make``).
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout)
        self._swish = nn.ReLU6()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._swish(self._bn0(self._expand_conv(x)))
        y = self._swish(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class MiniNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(8)
        self._blocks = nn.ModuleList([Block(8, 8, 2, 1), Block(8, 16, 2, 2), Block(16, 16, 2, 1)])
        self._conv_head = nn.Conv2d(16, 32, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(32)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(32, 10)
        self._act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._act(self._bn1(self._conv_head(x)))
        return self._fc(self._avg_pooling(x).flatten(1))


def make() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = MiniNet().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding them changes weights
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model, (torch.randn(1, 3, 32, 32),)
