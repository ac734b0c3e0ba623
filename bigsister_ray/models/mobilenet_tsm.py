"""MobileNetV2-TSM: an ImageNet-initialised MobileNetV2 whose frames exchange information through temporal shifts.

The Temporal Shift Module (Lin, Gan and Han, "TSM: Temporal Shift Module for Efficient Video Understanding",
ICCV 2019) turns a 2D image network into a video network at no extra parameters or FLOPs: at the start of each
inverted-residual block's residual branch, 1/8 of the channels take their values from the next frame and 1/8
from the previous one (zeros past the clip's ends), so every block mixes time as well as space while the
skip connection keeps the frame's own features. Blocks without a residual connection (those that change
resolution or width) are left as they are, as in the original TSM MobileNetV2. Each frame then goes through
the same 2D network, the 1280-channel features are averaged over space and time, and a linear layer gives
the clip logits.

Everything except the classifier is torchvision's ``mobilenet_v2().features`` with the same state-dict keys
(``features.N...``), so torchvision's ImageNet weights load as they are, and the classifier is
``classifier.1`` as in torchvision (a 1000-class ImageNet head is reported as replaced). Weights
(:func:`load_mobilenet_weights`) come from a path or URL the user gives (``model.weights``), in torchvision's
layout or in the older ``features.N.conv.K`` layout of the original PyTorch MobileNetV2 port (flat
``conv`` sequences with the ReLUs counted), which is renamed to torchvision's one to one, in order, and then
audited key by key (:func:`bigsister_ray.models.weights.load_weights`); or, on a machine that can download,
``torchvision:IMAGENET1K_V1`` (or ``..._V2``) for torchvision's named weights.

The first ``frozen_blocks`` blocks of ``features`` (the registry's ``mobilenet_tsm`` keeps the first four:
the stem and the blocks up to the first 24-channel stage, edge and texture filters that suit any camera) are
not trained: their parameters do not require gradients and their BatchNorm layers stay in eval mode, which
also saves the backward pass through the highest-resolution layers, most of a CPU step.

Input: ``B x C x T x H x W`` float32 normalised with :data:`bigsister_ray.clip.IMAGENET_NORM`, C = 3
(``rgb`` or ``diff`` clips) or 6 (``rgb+diff``), any T >= 1, H, W >= 32. Output: clip logits
``B x num_classes``. With C = 6 the stem convolution takes the frames and their differences; loaded 3-channel
weights are repeated onto both halves, so on a still scene (zero difference) the stem computes exactly the
ImageNet features and motion adds the same filters' response to the change. This early fusion costs one
network's compute; two networks with late fusion would double it on CPUs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigsister_ray.errors import CheckpointError

__all__ = [
    "MobileNetTSM",
    "mobilenet_tsm",
    "MOBILENET_TSM_HEAD",
    "TORCHVISION_WEIGHTS_PREFIX",
    "temporal_shift",
    "convert_mobilenet_v2_state_dict",
    "load_mobilenet_weights",
]

log = logging.getLogger(__name__)

#: Prefix of the classifier's state-dict keys (torchvision's ``classifier.1``).
MOBILENET_TSM_HEAD = "classifier.1."
#: ``model.weights`` value prefix naming torchvision's weights, e.g. ``torchvision:IMAGENET1K_V1``.
TORCHVISION_WEIGHTS_PREFIX = "torchvision:"
#: Blocks of ``features`` the registry's ``mobilenet_tsm`` keeps frozen.
DEFAULT_FROZEN_BLOCKS = 4
#: ... and its ``mobilenet_tsm_top``: all but the 160-channel stage and the final 1x1 convolution.
TOP_FROZEN_BLOCKS = 14
_FEATURES = 1280


# --------------------------------------------------------------------------------------------- the shift
def temporal_shift(x: torch.Tensor, frames: int, fold_div: int = 8) -> torch.Tensor:
    """Shift ``1/fold_div`` of the channels one frame back in time and ``1/fold_div`` one frame forward.

    ``x``: ``(B*T) x C x H x W`` (frames of a clip consecutive). Channels ``[0, C/8)`` at time t take the
    values of t + 1, channels ``[C/8, 2C/8)`` those of t - 1, the rest stay; zeros past the clip's ends.
    """
    nt, c, h, w = x.shape
    if nt % frames:
        raise ValueError(f"temporal_shift: {nt} frames is not a multiple of T = {frames}")
    fold = c // fold_div
    if frames == 1 or fold == 0:
        return x
    x = x.view(nt // frames, frames, c, h, w)
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # from the next frame
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]  # from the previous frame
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class ShiftedInvertedResidual(nn.Module):
    """torchvision's ``InvertedResidual`` with a residual connection, the shift at the start of its branch.

    Holds the block's own ``conv`` sequence, so its state-dict keys are the block's keys.
    """

    def __init__(self, block: nn.Module, fold_div: int = 8) -> None:
        super().__init__()
        if not getattr(block, "use_res_connect", False):
            raise ValueError("ShiftedInvertedResidual wraps blocks with a residual connection only")
        self.conv = block.conv
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return x + self.conv(temporal_shift(x, frames, self.fold_div))


# --------------------------------------------------------------------------------------------- the model
class MobileNetTSM(nn.Module):
    """MobileNetV2 with temporal shifts, temporal average pooling and a linear head.

    Input ``B x C x T x H x W`` float32 (C = ``in_channels``, 3 or 6; normalised with ImageNet statistics);
    output logits ``B x num_classes``. ``frozen_blocks``: leading blocks of ``features`` kept fixed;
    ``shift_frozen``: whether those blocks shift channels in time too (False: they compute exactly the
    pretrained per-frame features, and only the trained blocks mix time).
    """

    def __init__(self, num_classes: int, dropout: float = 0.2, *, in_channels: int = 3, frozen_blocks: int = 0,
                 fold_div: int = 8, shift_frozen: bool = True, fusion: str = "early") -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if in_channels not in (3, 6):
            raise ValueError(f"in_channels must be 3 (rgb or diff clips) or 6 (rgb+diff), got {in_channels}")
        if fusion not in ("early", "late"):
            raise ValueError(f"fusion must be 'early' or 'late', got {fusion!r}")
        base = mobilenet_v2(weights=None)
        if not 0 <= frozen_blocks <= len(base.features):
            raise ValueError(f"frozen_blocks must be in [0, {len(base.features)}], got {frozen_blocks}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        #: 6-channel input: ``early`` stacks frames and differences into one stem; ``late`` runs each 3-channel
        #: half through the same network and concatenates the two pooled features (twice the compute).
        self.streams = 2 if in_channels == 6 and fusion == "late" else 1
        self.frozen_blocks = frozen_blocks
        blocks = [ShiftedInvertedResidual(b, fold_div)
                  if getattr(b, "use_res_connect", False) and (shift_frozen or i >= frozen_blocks) else b
                  for i, b in enumerate(base.features)]
        self.features = nn.Sequential(*blocks)
        if in_channels != 3 and self.streams == 1:
            stem = self.features[0][0]
            self.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride,
                                            stem.padding, bias=False)
            if not stem.weight.is_meta:
                with torch.no_grad():  # the ImageNet-style initialisation, repeated: see the module docstring
                    self.features[0][0].weight.copy_(stem.weight.repeat(1, in_channels // 3, 1, 1))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(_FEATURES * self.streams, num_classes))
        self._init_head()
        for block in self.features[:frozen_blocks]:
            block.requires_grad_(False)

    def _init_head(self) -> None:
        fc = self.classifier[1]
        if fc.weight.is_meta:  # a shape-only shell (checkpoint validation, FLOP counting)
            return
        nn.init.normal_(fc.weight, std=0.01)
        nn.init.zeros_(fc.bias)

    def train(self, mode: bool = True) -> "MobileNetTSM":
        """Train mode everywhere except the frozen blocks, whose BatchNorm statistics stay as loaded."""
        super().train(mode)
        for block in self.features[: self.frozen_blocks]:
            block.eval()
        return self

    def replace_head(self, num_classes: int) -> None:
        """A freshly initialised linear classifier for ``num_classes`` (the rest of the network is kept)."""
        self.classifier[1] = nn.Linear(_FEATURES * self.streams, num_classes).to(self.classifier[1].weight.device)
        self.num_classes = num_classes
        self._init_head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"MobileNetTSM expects input B x {self.in_channels} x T x H x W, got {tuple(x.shape)}")
        if self.streams == 2:  # frames, then differences, as two batches of the one network
            x = torch.cat(x.chunk(2, dim=1), dim=0)
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w)  # frames of one clip consecutive
        for block in self.features:
            x = block(x, t) if isinstance(block, ShiftedInvertedResidual) else block(x)
        x = x.mean(dim=(2, 3)).view(b, t, -1).mean(dim=1)  # spatial, then temporal average
        if self.streams == 2:
            x = torch.cat(x.chunk(2, dim=0), dim=1)  # B x (frame features, difference features)
        return self.classifier(x)


# --------------------------------------------------------------------------------------------- weights
_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_OLD_BLOCK_KEY = re.compile(rf"^features\.(?P<block>\d+)\.conv\.(?P<layer>\d+)\.(?P<param>{_PARAM})$")


def _layers_with_state(module: nn.Module) -> list[str]:
    """Names (relative to ``module``) of the leaf modules holding parameters or buffers, in order."""
    return [name for name, m in module.named_modules()
            if name and not list(m.children()) and (list(m.parameters(recurse=False)) or list(m.buffers(recurse=False)))]


def convert_mobilenet_v2_state_dict(tensors: Mapping[str, torch.Tensor], in_channels: int = 3
                                    ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """MobileNetV2 weights in any known layout -> :class:`MobileNetTSM` keys. Returns ``(tensors, notes)``.

    * torchvision's full model (``features.*``, ``classifier.1.*``): unchanged.
    * torchvision's ``features`` alone (``0.0.weight``, ...): prefixed with ``features.``.
    * The older layout (``features.N.conv.K.*``, the block's layers flat with the ReLUs counted, e.g.
      ``conv.0`` ``conv.1`` ``conv.3`` ``conv.4`` ``conv.6`` ``conv.7``): the layers of each block are matched
      one to one, in order, to torchvision's (``conv.0.0`` ``conv.0.1`` ``conv.1.0`` ``conv.1.1`` ``conv.2``
      ``conv.3``). A block whose layer count differs is left as it is, so the audit reports its keys.
    * A 3-channel stem for a 6-channel model (``rgb+diff``): repeated on both halves.

    Shapes are not checked here: :func:`~bigsister_ray.models.weights.load_weights` audits every key.
    """
    out = dict(tensors)
    notes: list[str] = []
    if out and not any(k.startswith("features.") for k in out) and all(re.match(r"^\d+\.", k) for k in out):
        out = {f"features.{k}": v for k, v in out.items()}
        notes.append("keys prefixed with 'features.' (a MobileNetV2 features state dict)")
    from torchvision.models import mobilenet_v2

    with torch.device("meta"):  # torchvision's block structure, without memory
        features = mobilenet_v2(weights=None).features
    old_blocks = sorted({int(m["block"]) for k in out if (m := _OLD_BLOCK_KEY.match(k))
                         and f"features.{m['block']}.conv.0.weight" in out})
    rename: dict[str, str] = {}
    for n in old_blocks:
        if n >= len(features) or not hasattr(features[n], "conv"):
            continue
        prefix = f"features.{n}.conv."
        keys = [k for k in out if k.startswith(prefix) and _OLD_BLOCK_KEY.match(k)]
        old_layers = sorted({int(_OLD_BLOCK_KEY.match(k)["layer"]) for k in keys})
        new_layers = _layers_with_state(features[n].conv)
        if len(old_layers) != len(new_layers):
            notes.append(f"block features.{n}: {len(old_layers)} layers in the file, {len(new_layers)} in the "
                         "model; left as they are")
            continue
        table = dict(zip(old_layers, new_layers))
        for k in keys:
            m = _OLD_BLOCK_KEY.match(k)
            rename[k] = f"{prefix}{table[int(m['layer'])]}.{m['param']}"
    if rename:
        out = {rename.get(k, k): v for k, v in out.items()}  # the file's order kept
        notes.append(f"{len(rename)} keys of {len(old_blocks)} blocks renamed from the older features.N.conv.K layout")
    stem = out.get("features.0.0.weight")
    if in_channels != 3 and stem is not None and stem.ndim == 4 and stem.shape[1] == 3:
        out["features.0.0.weight"] = stem.repeat(1, in_channels // 3, 1, 1)
        notes.append(f"3-channel stem repeated onto {in_channels} input channels")
    return out, notes


def _torchvision_weights(name: str) -> dict[str, torch.Tensor]:
    """torchvision's named MobileNetV2 weights (downloaded to the torch hub cache on first use)."""
    from torchvision.models import MobileNet_V2_Weights

    try:
        weights = MobileNet_V2_Weights[name]
    except KeyError:
        choices = ", ".join(TORCHVISION_WEIGHTS_PREFIX + w.name for w in MobileNet_V2_Weights)
        raise CheckpointError(f"model.weights: unknown torchvision weights {name!r}: expected one of {choices}") from None
    try:
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as err:  # no network, a damaged download
        raise CheckpointError(
            f"could not fetch torchvision's {TORCHVISION_WEIGHTS_PREFIX}{name} ({type(err).__name__}: {err}); on a "
            "machine without internet access set model.weights to a copy of the file (a path or URL)"
        ) from err


def load_mobilenet_weights(model: MobileNetTSM, source: str | Path | Mapping[str, Any], *, strict: bool = True,
                           timeout_s: float = 60.0):
    """Load MobileNetV2 weights into ``model`` in place and audit every key; returns the ``LoadReport``.

    ``source``: a path or http(s) URL of a state dict (torchvision's layout, the older ``features.N.conv.K``
    layout, or one of our checkpoints), an in-memory state dict, or ``torchvision:<NAME>`` for torchvision's
    named weights. A classifier of another shape is replaced; with ``strict`` any other missing, unexpected or
    mis-shaped key raises :class:`CheckpointError` naming them (with the file's own name for renamed keys) and
    the model is left untouched.
    """
    from bigsister_ray.models.weights import load_weights, read_state_dict

    if isinstance(source, str) and source.startswith(TORCHVISION_WEIGHTS_PREFIX):
        tensors, shown = _torchvision_weights(source[len(TORCHVISION_WEIGHTS_PREFIX):]), source
    else:
        tensors, shown = read_state_dict(source, timeout_s=timeout_s)
    converted, notes = convert_mobilenet_v2_state_dict(tensors, model.in_channels // model.streams)
    for note in notes:
        log.info("weights from %s: %s", shown, note)
    try:
        report = load_weights(model, converted, head=MOBILENET_TSM_HEAD, strict=strict)
    except CheckpointError as err:
        origin = {id(v): k for k, v in tensors.items()}
        renamed = {k: origin[id(v)] for k, v in converted.items() if id(v) in origin and origin[id(v)] != k}
        named = [f"{k} is {old} in the file" for k, old in renamed.items() if re.search(rf"\b{re.escape(k)}\b", str(err))]
        hint = f"\n  renamed from the older layout: {'; '.join(named[:8])}" if named else ""
        raise CheckpointError(f"MobileNetV2 weights from {shown}: {err}{hint}") from err
    report.source = shown
    return report


def mobilenet_tsm(num_classes: int, weights: str | Path | None = None, dropout: float = 0.2, *, in_channels: int = 3,
                  frozen_blocks: int = DEFAULT_FROZEN_BLOCKS, strict: bool = True) -> MobileNetTSM:
    """Build MobileNetV2-TSM for ``num_classes``, optionally from weights (see :func:`load_mobilenet_weights`)."""
    model = MobileNetTSM(num_classes, dropout, in_channels=in_channels, frozen_blocks=frozen_blocks)
    if weights is not None:
        load_mobilenet_weights(model, weights, strict=strict)
    return model
