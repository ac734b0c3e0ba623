"""I3D: Inception-v1 inflated to 3D (Carreira & Zisserman, 2017), written to load the public PyTorch checkpoints.

The module names and shapes follow the widely used PyTorch port (``rgb_imagenet.pt`` / ``rgb_charades.pt``
family): 344 state-dict keys such as ``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_4b.b1b.bn.running_var`` and
``logits.conv3d.bias``; every BatchNorm uses ``eps=1e-3``; the classifier is a 1x1x1 conv with a bias.

Differences from that port, so the network runs at any size we use:

* TF-style "same" padding is computed from the actual input size in every conv and max pool, so odd and
  small sizes work (the original already did this for convs).
* The fixed ``AvgPool3d((2, 7, 7))`` (valid only at 224 x 224 and T >= 16) is replaced by a spatial global
  average followed by a temporal average over windows of 2 (1 when only one time step is left). At 224 x 224
  and T >= 16 this equals the original per-time logits; the clip logits are their mean over time.

Input: ``B x 3 x T x H x W`` float RGB scaled to [-1, 1] (:data:`bigsister_ray.clip.I3D_NORM`), T >= 8, H, W >= 32.
Output: clip logits ``B x num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InceptionI3d", "i3d", "I3D_HEAD", "I3D_BN_EPS"]

#: Prefix of the classifier's state-dict keys (replaced when the number of classes differs).
I3D_HEAD = "logits."
#: BatchNorm epsilon of the original TensorFlow model and its PyTorch port.
I3D_BN_EPS = 1e-3

_Triple = tuple[int, int, int]


def _same_pad(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """F.pad amounts (last dim first) for TensorFlow 'SAME' padding of a T x H x W input."""
    pads: list[int] = []
    for s, k, st in zip(reversed(tuple(size)), reversed(tuple(kernel)), reversed(tuple(stride))):
        total = max(k - st, 0) if s % st == 0 else max(k - (s % st), 0)
        pads += [total // 2, total - total // 2]
    return pads


class MaxPool3dSame(nn.Module):
    """Max pooling with TF 'SAME' padding (zeros; inputs follow a ReLU, so zero is never above the max)."""

    def __init__(self, kernel_size: _Triple, stride: _Triple) -> None:
        super().__init__()
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_pad(x.shape[2:], self.kernel_size, self.stride))
        return F.max_pool3d(x, self.kernel_size, self.stride)


class Unit3D(nn.Module):
    """Conv3d (TF 'SAME' padding) + optional BatchNorm (eps 1e-3) + optional ReLU. Keys: ``conv3d.*``, ``bn.*``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Triple = (1, 1, 1),
        stride: _Triple = (1, 1, 1),
        *,
        use_batch_norm: bool = True,
        use_bias: bool = False,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel_size, self.stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=I3D_BN_EPS, momentum=0.01) if use_batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, _same_pad(x.shape[2:], self.kernel_size, self.stride)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.activation else x


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool 3x3->1x1.

    ``out`` is ``[b0, b1a, b1b, b2a, b2b, b3b]`` output channels, as in the original definition.
    """

    def __init__(self, in_channels: int, out: Sequence[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


# (name, in_channels, [b0, b1a, b1b, b2a, b2b, b3b]); pools are placed by name below.
_MIXED: list[tuple[str, int, list[int]]] = [
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]),
]


class InceptionI3d(nn.Module):
    """Inception-v1 I3D.

    Input ``B x 3 x T x H x W`` float32 in [-1, 1] (T >= 8, H, W >= 32); output clip logits ``B x num_classes``.
    :meth:`per_time_logits` gives the ``B x num_classes x T'`` logits before the temporal mean.
    """

    def __init__(self, num_classes: int = 400, dropout: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        # The classifier is registered first, as in the original port (same state-dict order).
        self.logits = Unit3D(1024, num_classes, use_batch_norm=False, use_bias=True, activation=False)
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED[0][1:])
        self.Mixed_3c = InceptionModule(*_MIXED[1][1:])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*_MIXED[2][1:])
        self.Mixed_4c = InceptionModule(*_MIXED[3][1:])
        self.Mixed_4d = InceptionModule(*_MIXED[4][1:])
        self.Mixed_4e = InceptionModule(*_MIXED[5][1:])
        self.Mixed_4f = InceptionModule(*_MIXED[6][1:])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED[7][1:])
        self.Mixed_5c = InceptionModule(*_MIXED[8][1:])
        self.dropout = nn.Dropout(dropout)
        self._features = [
            "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
            "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
            "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
        ]  # fmt: skip

    def replace_head(self, num_classes: int) -> None:
        """A freshly initialised classifier for ``num_classes`` (the rest of the network is kept)."""
        self.logits = Unit3D(1024, num_classes, use_batch_norm=False, use_bias=True, activation=False)
        self.logits.to(self.Conv3d_1a_7x7.conv3d.weight.device)
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 1024 x T/8 x H/32 x W/32`` (rounded up) Mixed_5c features."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D expects input B x 3 x T x H x W, got {tuple(x.shape)}")
        for name in self._features:
            x = getattr(self, name)(x)
        return x

    def per_time_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per remaining time step, ``B x num_classes x T'`` (T' = ceil(T/8) - 1, at least 1)."""
        x = self.features(x)
        x = F.adaptive_avg_pool3d(x, (x.shape[2], 1, 1))
        x = F.avg_pool3d(x, (min(2, x.shape[2]), 1, 1), stride=1)
        x = self.logits(self.dropout(x))
        return x.flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.per_time_logits(x).mean(dim=2)


def i3d(
    num_classes: int = 400,
    weights: str | Path | None = None,
    dropout: float = 0.5,
    *,
    strict: bool = True,
) -> InceptionI3d:
    """Build I3D for ``num_classes``, optionally starting from weights at a path or URL.

    The weights may have any number of classes (Kinetics 400, Charades 157, ...): a classifier of another
    shape is replaced by a fresh one and everything else is loaded. Every missing, unexpected or mis-shaped
    key is reported; with ``strict`` any such key outside the classifier raises
    :class:`~bigsister_ray.errors.CheckpointError` (old files without ``num_batches_tracked`` are fine).
    """
    model = InceptionI3d(num_classes=num_classes, dropout=dropout)
    if weights is not None:
        from bigsister_ray.models.weights import load_weights

        load_weights(model, weights, head=I3D_HEAD, strict=strict)
    return model

