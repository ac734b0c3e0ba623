"""The model registry: every backbone selectable by ``model.name``, with what its input must look like.

Each entry is a :class:`ModelSpec` (input normalisation, minimum frames and size, fixed sizes where the
architecture has them, the input channels it takes, the classifier's key prefix), a builder and optionally
its own weight loader. :func:`build_model` never downloads anything unless told to: weights come from a path
or URL the user gives (``model.weights``), loaded with an audit (:func:`bigsister_ray.models.weights.load_weights`)
and the classifier replaced for our classes; the ``mobilenet_tsm`` models also take ``torchvision:IMAGENET1K_V1``.

=================  =================  ==========  ========  ======================================
name               normalisation      min T       min size  notes
=================  =================  ==========  ========  ======================================
i3d                I3D_NORM ([-1,1])  8           32        Inception-v1 I3D, loads public .pt files
r3d_18             KINETICS_NORM      4           32        torchvision ResNet3D-18
mc3_18             KINETICS_NORM      4           32        torchvision mixed convolutions
r2plus1d_18        KINETICS_NORM      4           32        torchvision (2+1)D ResNet-18
s3d                KINETICS_NORM      8           32        torchvision S3D, global pool made adaptive
mvit_v2_s          KINETICS_NORM      16 (fixed)  224 fix.  torchvision MViTv2-S: exactly 16 x 224 x 224
swin3d_t           KINETICS_NORM      2           32        torchvision Video Swin-T
tiny3d             KINETICS_NORM      1           32        small X3D-style CNN for CPUs; rgb+diff too
mobilenet_tsm      IMAGENET_NORM      1           32        ImageNet MobileNetV2 + temporal shift; rgb+diff too
mobilenet_tsm_top  IMAGENET_NORM      1           32        the same, trained from its last stage only
=================  =================  ==========  ========  ======================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bigsister_ray.clip import I3D_NORM, IMAGENET_NORM, KINETICS_NORM, ClipSpec, Normalization, input_channels
from bigsister_ray.errors import ConfigError

__all__ = [
    "ModelSpec",
    "Builder",
    "Loader",
    "build_model",
    "get_model_spec",
    "list_models",
    "register_model",
    "check_clip",
]

#: ``builder(num_classes, dropout) -> nn.Module`` with fresh weights (no download); called with a keyword
#: ``in_channels`` too when the clip's input has other than 3 channels (models whose spec lists them).
Builder = Callable[..., nn.Module]
#: ``loader(model, source, strict=...)``: loads weights into a model in place, with an audit.
Loader = Callable[..., object]


class ModelSpec(BaseModel):
    """What a registered model needs from its input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    norm: Normalization = Field(description="Normalisation of the uint8 -> float input (clip.to_model_input).")
    min_frames: int = Field(ge=1, description="Smallest T the forward pass accepts.")
    min_size: int = Field(ge=1, description="Smallest H = W the forward pass accepts.")
    description: str = ""
    fixed_frames: int | None = Field(None, description="T the architecture is built for (positional embeddings), if any.")
    fixed_size: int | None = Field(None, description="H = W the architecture is built for, if any.")
    head: str = Field(description="State-dict key prefix of the classifier (replaced when the class count differs).")
    input_channels: tuple[int, ...] = Field((3,), description="Input channel counts the model can be built for "
                                            "(3: rgb or diff clips; 6: rgb+diff).")

    def check_clip(self, clip: ClipSpec) -> None:
        """Raise :class:`ConfigError` when ``clip`` cannot be fed to this model, saying what would fit."""
        problems = []
        if input_channels(clip.input) not in self.input_channels:
            takes = [n for n, c in self._models_by_channels().items() if input_channels(clip.input) in c]
            problems.append(f"clip.input {clip.input!r} needs {input_channels(clip.input)} input channels, which "
                            f"this model does not take (models that do: {', '.join(takes)})")
        if self.fixed_frames is not None and clip.frames != self.fixed_frames:
            problems.append(f"clip.frames must be exactly {self.fixed_frames} (got {clip.frames})")
        elif clip.frames < self.min_frames:
            problems.append(f"clip.frames must be >= {self.min_frames} (got {clip.frames})")
        if self.fixed_size is not None and clip.size != self.fixed_size:
            problems.append(f"clip.size must be exactly {self.fixed_size} (got {clip.size})")
        elif clip.size < self.min_size:
            problems.append(f"clip.size must be >= {self.min_size} (got {clip.size})")
        if problems:
            raise ConfigError(
                f"model {self.name!r} does not fit the clip spec: {'; '.join(problems)}. "
                f"Change clip.* in the config or pick another model.name ({', '.join(list_models())})"
            )

    @staticmethod
    def _models_by_channels() -> dict[str, tuple[int, ...]]:
        return {name: get_model_spec(name).input_channels for name in list_models()}


class _DropoutLinear(nn.Linear):
    """nn.Linear with dropout on its input; same state-dict keys as nn.Linear, so foreign heads still match."""

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(x))


def _tv(name: str) -> Builder:
    def build(num_classes: int, dropout: float) -> nn.Module:
        import torchvision.models.video as video

        model = getattr(video, name)(weights=None, num_classes=num_classes)
        if name in ("r3d_18", "mc3_18", "r2plus1d_18"):
            model.fc = _DropoutLinear(model.fc.in_features, num_classes, dropout)
        elif name == "swin3d_t":
            model.head = _DropoutLinear(model.head.in_features, num_classes, dropout)
        elif name == "s3d":
            # The fixed AvgPool3d((2, 7, 7)) only fits 224 x 224 and T >= 16; the mean that follows makes a
            # global average equivalent there and lets smaller clips through.
            model.avgpool = nn.AdaptiveAvgPool3d(1)
            model.classifier[0].p = dropout
        elif name == "mvit_v2_s":
            model.head[0].p = dropout
        return model

    return build


def _i3d(num_classes: int, dropout: float) -> nn.Module:
    from bigsister_ray.models.i3d import InceptionI3d

    return InceptionI3d(num_classes=num_classes, dropout=dropout)


def _tiny3d(num_classes: int, dropout: float, in_channels: int = 3) -> nn.Module:
    from bigsister_ray.models.tiny3d import Tiny3D

    return Tiny3D(num_classes=num_classes, dropout=dropout, in_channels=in_channels)


def _mobilenet_tsm(num_classes: int, dropout: float, in_channels: int = 3) -> nn.Module:
    from bigsister_ray.models.mobilenet_tsm import DEFAULT_FROZEN_BLOCKS, MobileNetTSM

    return MobileNetTSM(num_classes, dropout, in_channels=in_channels, frozen_blocks=DEFAULT_FROZEN_BLOCKS)


def _mobilenet_tsm_top(num_classes: int, dropout: float, in_channels: int = 3) -> nn.Module:
    from bigsister_ray.models.mobilenet_tsm import TOP_FROZEN_BLOCKS, MobileNetTSM

    return MobileNetTSM(num_classes, dropout, in_channels=in_channels, frozen_blocks=TOP_FROZEN_BLOCKS,
                        shift_frozen=False, fusion="late")


def _load_mobilenet(model: nn.Module, source: str | Path, *, strict: bool = True) -> object:
    from bigsister_ray.models.mobilenet_tsm import load_mobilenet_weights

    return load_mobilenet_weights(model, source, strict=strict)


_REGISTRY: dict[str, tuple[ModelSpec, Builder, Loader | None]] = {}
_LOCK = threading.RLock()  # Serve replicas and Ray Train workers may look models up from several threads


def register_model(spec: ModelSpec, builder: Builder, *, loader: Loader | None = None, replace: bool = False) -> None:
    """Add a model to the registry (``replace`` to overwrite an existing name).

    ``loader(model, source, strict=...)`` loads ``model.weights`` when the model needs more than
    :func:`~bigsister_ray.models.weights.load_weights` with its head prefix (e.g. renaming a foreign layout).
    """
    with _LOCK:
        _ensure_builtins()
        if spec.name in _REGISTRY and not replace:
            raise ValueError(f"model {spec.name!r} is already registered")
        _REGISTRY[spec.name] = (spec, builder, loader)


_BUILTINS_DONE = False


def _ensure_builtins() -> None:
    global _BUILTINS_DONE
    with _LOCK:
        if not _BUILTINS_DONE:
            _BUILTINS_DONE = True
            _register_builtins()


def _register_builtins() -> None:
    kin = KINETICS_NORM
    register_model(ModelSpec(name="i3d", norm=I3D_NORM, min_frames=8, min_size=32, head="logits.",
                             description="Inception-v1 I3D (12.3M params); loads the public PyTorch I3D checkpoints"), _i3d)
    register_model(ModelSpec(name="r3d_18", norm=kin, min_frames=4, min_size=32, head="fc.",
                             description="torchvision ResNet3D-18 (33M params)"), _tv("r3d_18"))
    register_model(ModelSpec(name="mc3_18", norm=kin, min_frames=4, min_size=32, head="fc.",
                             description="torchvision MC3-18, mixed 3D/2D convolutions (11.5M params)"), _tv("mc3_18"))
    register_model(ModelSpec(name="r2plus1d_18", norm=kin, min_frames=4, min_size=32, head="fc.",
                             description="torchvision R(2+1)D-18 (31M params)"), _tv("r2plus1d_18"))
    register_model(ModelSpec(name="s3d", norm=kin, min_frames=8, min_size=32, head="classifier.1.",
                             description="torchvision S3D (7.9M params), global pooling made adaptive"), _tv("s3d"))
    register_model(ModelSpec(name="mvit_v2_s", norm=kin, min_frames=16, min_size=224, fixed_frames=16, fixed_size=224,
                             head="head.1.", description="torchvision MViTv2-S (34M params); input exactly 16 x 224 x 224"),
                   _tv("mvit_v2_s"))
    register_model(ModelSpec(name="swin3d_t", norm=kin, min_frames=2, min_size=32, head="head.",
                             description="torchvision Video Swin-T (28M params)"), _tv("swin3d_t"))
    register_model(ModelSpec(name="tiny3d", norm=kin, min_frames=1, min_size=32, head="head.fc.", input_channels=(3, 6),
                             description="X3D-style tiny CNN (0.34M params) that trains in minutes on a CPU"), _tiny3d)
    register_model(ModelSpec(name="mobilenet_tsm", norm=IMAGENET_NORM, min_frames=1, min_size=32, head="classifier.1.",
                             input_channels=(3, 6),
                             description="ImageNet MobileNetV2 with temporal shift (2.2M params), early blocks frozen"),
                   _mobilenet_tsm, loader=_load_mobilenet)
    register_model(ModelSpec(name="mobilenet_tsm_top", norm=IMAGENET_NORM, min_frames=1, min_size=32,
                             head="classifier.1.", input_channels=(3, 6),
                             description="ImageNet MobileNetV2 kept as pretrained (each frame alone) up to its last "
                             "stage, which trains with temporal shift: generalises from few cameras; rgb+diff as two "
                             "streams"),
                   _mobilenet_tsm_top, loader=_load_mobilenet)


def _entry(name: str) -> tuple[ModelSpec, Builder, Loader | None]:
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"model.name: unknown model {name!r}; expected one of {', '.join(sorted(_REGISTRY))}") from None


def list_models() -> list[str]:
    """Registered model names, sorted."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; :class:`ConfigError` listing the known names when unknown."""
    return _entry(name)[0]


def check_clip(name: str, clip: ClipSpec) -> None:
    """Raise :class:`ConfigError` when model ``name`` cannot take clips of ``clip``."""
    get_model_spec(name).check_clip(clip)


def build_model(
    name: str,
    num_classes: int,
    *,
    dropout: float = 0.0,
    weights: str | Path | None = None,
    strict: bool = True,
    in_channels: int = 3,
) -> nn.Module:
    """Build registered model ``name`` with a classifier for ``num_classes``.

    Input ``B x in_channels x T x H x W`` float32 normalised with ``get_model_spec(name).norm``
    (``in_channels``: :func:`bigsister_ray.clip.input_channels` of the clip's input, 3 unless ``rgb+diff``);
    output logits ``B x num_classes``. ``weights``: a path or http(s) URL of a state dict (foreign, or one of
    our checkpoints); a classifier of another shape is replaced, every other key must fit (``strict``) and the
    load is reported.
    """
    spec, builder, loader = _entry(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if in_channels not in spec.input_channels:
        raise ConfigError(f"model {name!r} takes {' or '.join(map(str, spec.input_channels))} input channels, "
                          f"got {in_channels}: use clip.input 'rgb' or 'diff' with it, or another model.name")
    model = builder(num_classes, dropout) if in_channels == 3 else builder(num_classes, dropout, in_channels=in_channels)
    if weights is not None:
        if loader is not None:
            loader(model, weights, strict=strict)
        else:
            from bigsister_ray.models.weights import load_weights

            load_weights(model, weights, head=spec.head, strict=strict)
    return model
