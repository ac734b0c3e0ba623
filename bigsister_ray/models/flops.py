"""Forward (and training-step) FLOPs of a model at a ClipSpec, for model FLOP utilisation figures.

Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the ``meta`` device: no memory is allocated
and nothing is computed, so I3D at 64 x 224 x 224 is counted instantly. FLOPs here count a multiply-add as 2.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bigsister_ray.clip import ClipSpec, input_channels

__all__ = ["model_flops", "mfu"]


def model_flops(
    model: nn.Module | str,
    clip: ClipSpec,
    *,
    batch_size: int = 1,
    num_classes: int = 2,
    backward: bool = False,
) -> int:
    """FLOPs of one forward pass (``backward=True``: forward + backward, a training step) on
    ``batch_size`` clips of ``clip``. ``model`` is a module (copied to the meta device, the original untouched)
    or a registry name (built with ``num_classes`` outputs and the clip's input channels)."""
    channels = input_channels(clip.input)
    if isinstance(model, str):
        from bigsister_ray.models.registry import build_model

        with torch.device("meta"):
            shell = build_model(model, num_classes, in_channels=channels)
    else:
        shell = copy.deepcopy(model).to("meta")
    shell.train(backward)
    x = torch.empty(batch_size, channels, clip.frames, clip.size, clip.size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        if backward:
            shell(x).sum().backward()
        else:
            with torch.no_grad():
                shell(x)
    return int(counter.get_total_flops())


def mfu(flops_per_item: float, items_per_s: float, peak_flops: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s over the device's peak (e.g. 989e12 for H100 bf16 dense)."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}")
    return flops_per_item * items_per_s / peak_flops
