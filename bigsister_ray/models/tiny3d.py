"""Tiny3D: a small X3D-style video network that trains in minutes on a laptop CPU.

X3D's ingredients at a fraction of the width: a 3x3x3 stem (cheap with 3 input channels; motion is seen at full
resolution), stages of inverted-bottleneck blocks whose spatial-temporal mixing is a depthwise 3x3x3 conv, BatchNorm after
every conv, residual connections, a 1x1x1 expansion before global average pooling, dropout and a linear head.
Global pooling makes any T, H and W work (T >= 1, H, W >= 16); 0.34M parameters, 0.6 GFLOPs per 16 x 112 x 112
clip. The first stage expands less (1.5x) because it runs at the highest resolution, where CPU time goes.

Input: ``B x C x T x H x W`` float32 normalised with :data:`bigsister_ray.clip.KINETICS_NORM` (any per-channel
normalisation works: the model is trained from scratch), C = 3 (``rgb`` or ``diff`` clips) or 6 (``rgb+diff``,
``in_channels=6``). Output: clip logits ``B x num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Tiny3D", "tiny3d", "TINY3D_HEAD"]

#: Prefix of the classifier's state-dict keys.
TINY3D_HEAD = "head.fc."


def _conv_bn(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1),
             groups: int = 1, act: bool = True) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    layers: list[nn.Module] = [
        nn.Conv3d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
        nn.BatchNorm3d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Block(nn.Module):
    """Inverted bottleneck: 1x1x1 expand -> depthwise 3x3x3 (spatial stride) -> 1x1x1 project, + residual."""

    def __init__(self, cin: int, cout: int, expansion: float, spatial_stride: int) -> None:
        super().__init__()
        mid = int(round(cin * expansion))
        stride = (1, spatial_stride, spatial_stride)
        self.expand = _conv_bn(cin, mid, (1, 1, 1))
        self.depthwise = _conv_bn(mid, mid, (3, 3, 3), stride, groups=mid)
        self.project = _conv_bn(mid, cout, (1, 1, 1), act=False)
        self.shortcut: nn.Module | None = None
        if spatial_stride != 1 or cin != cout:
            self.shortcut = _conv_bn(cin, cout, (1, 1, 1), stride, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.project(self.depthwise(self.expand(x))) + skip)


class Head(nn.Module):
    """1x1x1 conv expansion, global average pool, dropout, linear. Keys ``head.pre.*``, ``head.fc.*``."""

    def __init__(self, cin: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pre = _conv_bn(cin, hidden, (1, 1, 1))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.pre(x)).flatten(1)))


class Tiny3D(nn.Module):
    """X3D-style tiny network.

    Input ``B x in_channels x T x H x W`` float32 (normalised); output logits ``B x num_classes``.
    ``widths``/``depths`` give the channels and blocks of the four stages (each halves H and W).
    """

    def __init__(
        self,
        num_classes: int,
        dropout: float = 0.0,
        *,
        stem_width: int = 16,
        widths: Sequence[int] = (24, 48, 96, 144),
        depths: Sequence[int] = (1, 2, 2, 2),
        expansion: float | Sequence[float] = (1.5, 2.5, 2.5, 2.5),
        head_width: int = 256,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(widths) != len(depths):
            raise ValueError(f"widths and depths must have the same length, got {len(widths)} and {len(depths)}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        # A dense 3x3x3 stem: with 3 input channels it is cheap, sees motion at full resolution, and runs on
        # oneDNN (a depthwise temporal conv here falls back to a slow CPU kernel, 2x the whole step).
        self.stem = _conv_bn(in_channels, stem_width, (3, 3, 3), (1, 2, 2))
        stages: list[nn.Module] = []
        cin = stem_width
        expansions = [expansion] * len(widths) if isinstance(expansion, (int, float)) else list(expansion)
        for width, depth, exp in zip(widths, depths, expansions):
            blocks = [Block(cin if i == 0 else width, width, exp, 2 if i == 0 else 1) for i in range(depth)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.head = Head(cin, head_width, num_classes, dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.head.fc.weight.is_meta:  # a shape-only shell (checkpoint validation, FLOP counting): nothing to fill
            return
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every block starts as the identity (stable, fast start).
        for m in self.modules():
            if isinstance(m, Block):
                nn.init.zeros_(m.project[1].weight)

    def replace_head(self, num_classes: int) -> None:
        """A freshly initialised linear classifier for ``num_classes``."""
        fc = nn.Linear(self.head.fc.in_features, num_classes).to(self.head.fc.weight.device)
        nn.init.normal_(fc.weight, std=0.01)
        nn.init.zeros_(fc.bias)
        self.head.fc = fc
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"Tiny3D expects input B x {self.in_channels} x T x H x W, got {tuple(x.shape)}")
        return self.head(self.stages(self.stem(x)))


def tiny3d(num_classes: int, weights: str | None = None, dropout: float = 0.0, *, strict: bool = True) -> Tiny3D:
    """Build Tiny3D for ``num_classes``, optionally from weights at a path or URL (the head swapped if needed)."""
    model = Tiny3D(num_classes, dropout)
    if weights is not None:
        from bigsister_ray.models.weights import load_weights

        load_weights(model, weights, head=TINY3D_HEAD, strict=strict)
    return model
