"""What a clip is, everywhere: :class:`ClipSpec` and THE preprocessing shared by data, train and serve.

A clip is ``spec.frames`` RGB frames sampled at ``spec.fps`` and resized to ``spec.size`` x ``spec.size``.
These functions define it, and every flow calls them (never a copy):

* :func:`scale_frame` runs at decode time (the Ray Data decode step in :mod:`bigsister_ray.video.files`, the
  serving stream readers in :mod:`bigsister_ray.video.stream`): FFmpeg's scaler turns one decoded video frame
  (the decoder's own YUV pixels, any size) straight into uint8 ``size x size x 3`` RGB. No full-resolution RGB
  frame is ever made, and training and serving get the same bytes for the same decoded frame.
* :func:`preprocess_frames` resizes frames that are already RGB arrays (``T x H x W x 3`` -> ``T x S x S x 3``,
  torch's antialiased bilinear): images and uploads decoded to RGB. Video frames go through :func:`scale_frame`.
* :func:`to_model_input` runs next to the model (the training loop, evaluation, the Classifier): uint8 clips
  ``B x T x S x S x 3`` -> float32 ``B x C x T x S x S`` normalised with the checkpoint's :class:`Normalization`,
  as the checkpoint's ``ClipSpec.input`` says: the frames (``rgb``, C = 3), their differences (``diff``, C = 3)
  or both stacked on the channels (``rgb+diff``, C = 6).

:func:`sample_indices` picks which frames of a video make up a clip; :func:`window_starts` lays sliding
windows over a sequence of already-sampled frames.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ClipSpec",
    "InputMode",
    "INPUT_MODES",
    "input_channels",
    "Normalization",
    "CLIP_PRESETS",
    "KINETICS_NORM",
    "I3D_NORM",
    "IMAGENET_NORM",
    "sample_indices",
    "SCALE_INTERPOLATION",
    "scaled_size",
    "scale_frame",
    "preprocess_frames",
    "to_model_input",
    "window_starts",
]


#: What the model sees of a clip (see :func:`to_model_input`).
InputMode = Literal["rgb", "diff", "rgb+diff"]
INPUT_MODES: tuple[str, ...] = get_args(InputMode)


def input_channels(mode: str) -> int:
    """Channels of the model input for ``mode``: 3 for ``rgb`` and ``diff``, 6 for ``rgb+diff``."""
    if mode not in INPUT_MODES:
        raise ValueError(f"unknown clip input {mode!r}: expected one of {', '.join(INPUT_MODES)}")
    return 6 if mode == "rgb+diff" else 3


class ClipSpec(BaseModel):
    """Frames per clip, sampling rate, spatial size, window stride and model input. Immutable; stored in every
    checkpoint (a checkpoint written before ``input`` existed reads as ``rgb``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(16, ge=4, le=256, description="Frames per clip (T).")
    fps: float = Field(8.0, gt=0, le=60, description="Frames per second sampled from the video.")
    size: int = Field(112, ge=32, le=512, description="Output height and width in pixels.")
    stride: int = Field(8, ge=1, description="Frames between the starts of consecutive windows (serving, detect).")
    resize: Literal["squash", "crop"] = Field(
        "squash",
        description="squash: the whole frame resized to size x size (CCTV action happens at the edges too); "
        "crop: short side to size, then a centre crop.",
    )
    input: InputMode = Field(
        "rgb",
        description="What the model sees: rgb: the frames; diff: frame differences x[t] - x[t-1] of the normalised "
        "clip (the first frame's difference is zero), which carry motion and drop the static scene, so a camera's "
        "background and colours matter less; rgb+diff: both, stacked as 6 channels (models that take them: "
        "tiny3d, mobilenet_tsm; mobilenet_tsm_top runs them as two streams).",
    )

    @model_validator(mode="after")
    def _stride_within_clip(self) -> "ClipSpec":
        if self.stride > self.frames:
            raise ValueError(f"clip.stride ({self.stride}) must be <= clip.frames ({self.frames}): windows would skip frames")
        return self

    @property
    def duration_s(self) -> float:
        """Seconds of video one clip covers."""
        return self.frames / self.fps

    @property
    def stride_s(self) -> float:
        return self.stride / self.fps


#: Named presets. ``laptop`` trains and serves on a CPU; ``i3d`` is the original I3D input for GPU clusters.
CLIP_PRESETS: dict[str, ClipSpec] = {
    "laptop": ClipSpec(frames=16, fps=8.0, size=112, stride=8),
    "i3d": ClipSpec(frames=64, fps=25.0, size=224, stride=32),
    "i3d-32": ClipSpec(frames=32, fps=15.0, size=224, stride=16),
}


class Normalization(BaseModel):
    """Per-channel RGB normalisation applied after scaling uint8 to [0, 1]: ``(x - mean) / std``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @model_validator(mode="after")
    def _positive_std(self) -> "Normalization":
        if any(s <= 0 for s in self.std):
            raise ValueError(f"normalization std must be > 0, got {self.std}")
        return self


#: I3D's contract: RGB scaled to [-1, 1].
I3D_NORM = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
#: torchvision's Kinetics video models.
KINETICS_NORM = Normalization(mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989))
#: ImageNet-trained image models (torchvision's classification weights).
IMAGENET_NORM = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def sample_indices(
    num_frames: int,
    video_fps: float,
    spec: ClipSpec,
    start_s: float = 0.0,
    end_s: float | None = None,
    offset_s: float = 0.0,
) -> np.ndarray:
    """Frame indices (into a video of ``num_frames`` at ``video_fps``) of one clip of ``spec``.

    The clip covers ``spec.duration_s`` seconds centred on ``[start_s, end_s]`` (the whole video when
    ``end_s`` is None), shifted by ``offset_s`` (temporal jitter). A span shorter than the clip is widened
    into the surrounding video; a video shorter than the clip is resampled by looping its frames, so no clip
    is ever dropped for being short. Indices are always within ``[0, num_frames)``.
    """
    if num_frames <= 0:
        raise ValueError(f"expected a video with at least one frame, got num_frames={num_frames}")
    if not video_fps or video_fps <= 0 or not math.isfinite(video_fps):
        raise ValueError(f"expected a positive video fps, got {video_fps!r}")
    video_s = num_frames / video_fps
    end_s = video_s if end_s is None else min(end_s, video_s)
    start_s = max(0.0, min(start_s, end_s))
    need = spec.duration_s
    centre = (start_s + end_s) / 2.0 + offset_s
    t0 = centre - need / 2.0
    # Keep the window inside the video where the video is long enough.
    if video_s >= need:
        t0 = min(max(t0, 0.0), video_s - need)
        times = t0 + np.arange(spec.frames) / spec.fps
        idx = np.floor(times * video_fps + 1e-6).astype(np.int64)
        return np.clip(idx, 0, num_frames - 1)
    # Shorter than one clip: walk the video at spec.fps and loop.
    per_pass = max(1, int(math.floor(video_s * spec.fps + 1e-6)))
    times = (np.arange(spec.frames) % per_pass) / spec.fps
    idx = np.floor(times * video_fps + 1e-6).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


#: FFmpeg (swscale) algorithm of :func:`scale_frame`. swscale's bilinear filter widens with the shrink factor, so
#: a 1080p frame brought down to 112 pixels is averaged over its whole footprint (antialiased), like the torch
#: kernel of :func:`preprocess_frames`; ``area`` is about 20% cheaper and ``fast_bilinear`` aliases.
SCALE_INTERPOLATION = "BILINEAR"


def scaled_size(spec: ClipSpec, height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` a ``height x width`` frame is resized to before the crop (``squash``: size x size)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"expected a frame of positive size, got {width}x{height}")
    s = spec.size
    if spec.resize == "crop":
        scale = s / min(height, width)
        return max(s, round(height * scale)), max(s, round(width * scale))
    return s, s


def _centre_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size x size`` of ``... x H x W x C`` (a view)."""
    h, w = arr.shape[-3], arr.shape[-2]
    top, left = (h - size) // 2, (w - size) // 2
    return arr[..., top : top + size, left : left + size, :]


def scale_frame(frame, spec: ClipSpec, reformatter=None) -> np.ndarray:
    """One decoded PyAV ``VideoFrame`` (any pixel format and size) -> uint8 RGB ``size x size x 3``.

    FFmpeg's scaler converts and resizes in one pass from the decoder's pixels (:data:`SCALE_INTERPOLATION`,
    one thread, the frame's own colourspace), so the cost follows the small output, not the camera's
    resolution. ``reformatter``: an ``av.video.reformatter.VideoReformatter`` kept by the caller for a stream
    of frames (it keeps FFmpeg's scaler set up between frames; the bytes are the same without it).
    Deterministic: the same decoded frame gives the same bytes in the data pipeline and in serving.
    """
    from av.video.reformatter import VideoReformatter

    out_h, out_w = scaled_size(spec, int(frame.height), int(frame.width))
    fmt = reformatter if reformatter is not None else VideoReformatter()
    small = fmt.reformat(frame, width=out_w, height=out_h, format="rgb24", interpolation=SCALE_INTERPOLATION,
                         threads=1)
    arr = small.to_ndarray()
    if (out_h, out_w) != (spec.size, spec.size):
        arr = _centre_crop(arr, spec.size)
    return np.ascontiguousarray(arr)


def preprocess_frames(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Resize RGB frames ``T x H x W x 3`` (uint8, any size) to ``T x size x size x 3`` uint8.

    Bilinear with antialiasing (torch's uint8 kernel), deterministic. For frames that are already RGB arrays;
    decoded video frames are resized by :func:`scale_frame` at decode time.
    """
    import torch
    import torch.nn.functional as F

    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames shaped T x H x W x 3, got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {arr.dtype}")
    t, h, w, _ = arr.shape
    out_h, out_w = scaled_size(spec, h, w)
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)  # T,3,H,W (channels-last memory)
    if (out_h, out_w) != (h, w):
        x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    out = x.permute(0, 2, 3, 1).numpy()
    if (out_h, out_w) != (spec.size, spec.size):
        out = _centre_crop(out, spec.size)
    return np.ascontiguousarray(out)


def to_model_input(clips, norm: Normalization, input_mode: str = "rgb"):
    """uint8 clips ``B x T x H x W x 3`` (or one ``T x H x W x 3``) -> float32 ``B x C x T x H x W``, normalised.

    ``input_mode`` is the clip's :attr:`ClipSpec.input`:

    * ``rgb``: the normalised frames, C = 3.
    * ``diff``: ``x[t] - x[t-1]`` of the normalised frames (the first frame's difference is zero), C = 3.
    * ``rgb+diff``: the frames, then their differences, stacked on the channels, C = 6.

    The one conversion used by training, evaluation and serving (:func:`bigsister_ray.models.predict_proba`),
    so the same uint8 clip gives the same tensor everywhere. Accepts numpy arrays or torch tensors (on any
    device); never goes through float64.
    """
    import torch

    input_channels(input_mode)  # an unknown mode fails before any work
    x = clips if isinstance(clips, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(clips))
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected clips shaped B x T x H x W x 3, got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 clips, got {x.dtype}")
    x = x.permute(0, 4, 1, 2, 3).to(torch.float32).div_(255.0)
    mean = torch.tensor(norm.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1, 1)
    x = x.sub_(mean).div_(std)
    if input_mode == "rgb":
        return x.contiguous()
    diff = torch.zeros_like(x)
    diff[:, :, 1:] = x[:, :, 1:] - x[:, :, :-1]
    out = diff if input_mode == "diff" else torch.cat([x, diff], dim=1)
    return out.contiguous()


def window_starts(num_frames: int, spec: ClipSpec) -> Sequence[int]:
    """Start offsets of the sliding windows of ``spec.frames`` frames every ``spec.stride`` frames.

    A sequence shorter than one window yields one window at 0 (the caller loops or pads it).
    """
    if num_frames <= spec.frames:
        return [0] if num_frames > 0 else []
    return list(range(0, num_frames - spec.frames + 1, spec.stride))
