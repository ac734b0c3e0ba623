"""Self-describing checkpoints: one ``model.pt`` holds the weights and everything needed to use them.

The file is ``torch.save`` of plain Python types and tensors, so ``torch.load(weights_only=True)`` reads it
and no code from the file ever runs::

    {"format": "bigsister-ray-checkpoint", "format_version": 1,
     "meta": {model_name, labels, clip, norm, data_fingerprint, metrics, thresholds, temperature, ...},
     "state_dict": {name: tensor}}

:func:`load_checkpoint` rebuilds the model from the registry by name and needs no config. Serving and
``bigsister detect`` call :func:`predict_proba` with uint8 clips: the shared :func:`bigsister_ray.clip.to_model_input`
with the checkpoint's normalisation, the forward pass, and ``softmax(logits / temperature)``.

The functions here read and write local files (``torch.load`` memory-maps them; updates are atomic renames). A
checkpoint on an object store (``s3://.../best/model.pt``) is used through :func:`checkpoint_file`, which gives
a local copy and, when asked, uploads it back whole after it was changed (``bigsister evaluate`` does this).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from bigsister_ray.clip import ClipSpec, Normalization, input_channels, to_model_input
from bigsister_ray.errors import CheckpointError, ConfigError

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "CHECKPOINT_FILENAME",
    "CheckpointMeta",
    "LoadedCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "update_checkpoint_meta",
    "predict_proba",
    "resolve_checkpoint_path",
    "checkpoint_file",
]

CHECKPOINT_FORMAT = "bigsister-ray-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_FILENAME = "model.pt"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CheckpointMeta(BaseModel):
    """Everything about a checkpoint except its weights. JSON-able (``model_dump(mode="json")``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    format_version: int = Field(FORMAT_VERSION, ge=1)
    model_name: str = Field(description="Registry name (bigsister_ray.models.list_models()).")
    labels: list[str] = Field(min_length=1, description="Class names in output order.")
    clip: ClipSpec = Field(description="The clips the model was trained on (frames, fps, size, stride, input).")
    norm: Normalization = Field(description="Input normalisation (clip.to_model_input).")
    data_fingerprint: str | None = Field(None, description="Fingerprint of the prepared dataset's manifest.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="What the model reached (e.g. val macro_f1).")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Calibrated alert threshold per abnormal class.")
    temperature: float = Field(1.0, gt=0, description="Probabilities are softmax(logits / temperature).")
    epoch: int | None = Field(None, ge=0)
    created_at: str = Field(default_factory=_now)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"labels must be unique, got duplicates {dupes}")
        return labels

    @model_validator(mode="after")
    def _thresholds_known(self) -> "CheckpointMeta":
        unknown = sorted(set(self.thresholds) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds for classes not in labels: {unknown} (labels: {self.labels})")
        bad = {k: v for k, v in self.thresholds.items() if not (0.0 <= v <= 1.0) or math.isnan(v)}
        if bad:
            raise ValueError(f"thresholds must be probabilities in [0, 1], got {bad}")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass
class LoadedCheckpoint:
    """A model in eval mode on ``map_location`` and its meta."""

    model: nn.Module
    meta: CheckpointMeta
    path: Path

    @property
    def labels(self) -> list[str]:
        return self.meta.labels

    @property
    def clip(self) -> ClipSpec:
        return self.meta.clip


_REMOTE_RE = re.compile(r"^(s3|gs|gcs):/", re.IGNORECASE)


def resolve_checkpoint_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/model.pt`` for a directory. Raises :class:`CheckpointError` when absent.

    A local path only: an ``s3://``/``gs://`` URI is refused with a pointer to :func:`checkpoint_file`.
    """
    if _REMOTE_RE.match(os.fspath(path)):
        from bigsister_ray.storage import redact_uri

        raise CheckpointError(
            f"checkpoint {redact_uri(path)} is on an object store, but this reads local files: use "
            "bigsister_ray.models.checkpoint.checkpoint_file() for a local copy (bigsister evaluate takes the URI), "
            "or copy it down first (aws s3 cp / gcloud storage cp)"
        )
    p = Path(path).expanduser()
    if p.is_dir():
        inner = p / CHECKPOINT_FILENAME
        if not inner.is_file():
            raise CheckpointError(
                f"checkpoint directory {p} has no {CHECKPOINT_FILENAME}: expected a file written by save_checkpoint "
                "(bigsister train writes one per epoch under the run directory)"
            )
        return inner
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist: expected a {CHECKPOINT_FILENAME} written by `bigsister train`")
    return p


@contextmanager
def checkpoint_file(path: str | Path, *, write_back: bool = False) -> Iterator[Path]:
    """A local ``model.pt`` for ``path``: a local file or folder, or an ``s3://``/``gs://`` URI of either.

    Local: the file itself (:func:`resolve_checkpoint_path`). Remote: a copy downloaded into a temporary folder,
    removed on exit; with ``write_back`` a copy that was changed inside the block (``update_checkpoint_meta``)
    is uploaded back whole to where it came from when the block exits without an error.
    Raises :class:`CheckpointError` when there is no checkpoint at ``path``.
    """
    from bigsister_ray import storage

    s = os.fspath(path)
    if not storage.is_remote(s):
        yield resolve_checkpoint_path(path)
        return
    shown = storage.redact_uri(s)
    with tempfile.TemporaryDirectory(prefix="bigsister-ckpt-") as tmp:
        local = Path(tmp) / CHECKPOINT_FILENAME
        try:
            remote = storage.join(s, CHECKPOINT_FILENAME) if storage.is_dir(s) else s
            if not storage.exists(remote):
                raise CheckpointError(f"checkpoint {storage.redact_uri(remote)} does not exist: expected a "
                                      f"{CHECKPOINT_FILENAME} written by `bigsister train`")
            storage.copy(remote, local)
        except OSError as err:  # unreachable store, access denied: say which checkpoint
            raise CheckpointError(f"checkpoint {shown}: cannot download it ({err})") from err
        before = local.stat()
        yield local
        after = local.stat()
        if write_back and (after.st_mtime_ns, after.st_size, after.st_ino) != (before.st_mtime_ns, before.st_size, before.st_ino):
            try:
                storage.upload(local, remote)
            except OSError as err:
                raise CheckpointError(f"checkpoint {shown}: cannot upload the updated copy ({err})") from err


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint meta values must be JSON-able, got {type(value).__name__}: {value!r:.80}")


def _meta_dict(meta: CheckpointMeta) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(meta.model_dump(mode="python"), default=_jsonable))
    except TypeError as err:
        raise CheckpointError(f"cannot save checkpoint meta: {err}") from err


def _state_dict_of(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        model = model_or_state_dict
        model = getattr(model, "module", model)  # DDP / DataParallel
        model = getattr(model, "_orig_mod", model)  # torch.compile
        sd = model.state_dict()
    else:
        sd = dict(model_or_state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"state dict entry {k!r} is a {type(v).__name__}, expected a tensor")
        out[k] = v.detach().to("cpu").contiguous()
    return out


def _check_fits(meta: CheckpointMeta, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError unless ``state_dict`` is exactly the registry model's for ``meta``."""
    from bigsister_ray.models.registry import build_model

    try:
        with torch.device("meta"):
            shell = build_model(meta.model_name, meta.num_classes, in_channels=input_channels(meta.clip.input))
    except ConfigError as err:
        raise CheckpointError(f"{where}: {err}") from err
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k} weights{tuple(state_dict[k].shape)} vs model{expected[k]}"
                  for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if missing or unexpected or mismatched:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)):
            if items:
                parts.append(f"{title} ({len(items)}): {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}")
        raise CheckpointError(
            f"{where}: the weights do not match the meta (model {meta.model_name!r} with {meta.num_classes} labels "
            f"{meta.labels}): " + "; ".join(parts)
        )


def save_checkpoint(
    path: str | Path,
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
    *,
    validate: bool = True,
) -> Path:
    """Write ``model.pt`` (``path`` is the file, or a directory that gets ``model.pt``). Atomic; returns the file.

    With ``validate`` the weights are checked against ``meta`` first (the registry model for
    ``meta.model_name`` with ``len(meta.labels)`` classes, built on the meta device: no memory, no time).
    """
    p = Path(path).expanduser()
    if p.is_dir() or p.suffix == "":
        p = p / CHECKPOINT_FILENAME
    p.parent.mkdir(parents=True, exist_ok=True)
    state_dict = _state_dict_of(model_or_state_dict)
    if validate:
        _check_fits(meta, state_dict, f"cannot save checkpoint {p}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": _meta_dict(meta),
        "state_dict": state_dict,
    }
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def _read_payload(path: str | Path, *, mmap: bool) -> tuple[dict[str, Any], Path]:
    p = resolve_checkpoint_path(path)
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes): the write was interrupted; use an earlier epoch's checkpoint")
    try:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            obj = torch.load(p, map_location="cpu", weights_only=True)  # not a zip file: no mmap
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign bytes
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"{p} is not a readable bigsister-ray checkpoint (torch.load with weights_only=True failed: "
            f"{type(err).__name__}: {first}); expected a model.pt written by `bigsister train`"
        ) from err
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{p} is not a bigsister-ray checkpoint (expected format {CHECKPOINT_FORMAT!r}, found {found}). "
            "A foreign state dict can start training instead: set model.weights to it"
        )
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format_version {version!r}; this bigsister-ray reads up to {FORMAT_VERSION}: upgrade it"
        )
    if not isinstance(obj.get("meta"), dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{p} is damaged: expected 'meta' and 'state_dict' dicts")
    return obj, p


def _parse_meta(raw: dict[str, Any], p: Path) -> CheckpointMeta:
    try:
        return CheckpointMeta.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'meta'}: {e['msg']}" for e in err.errors())
        raise CheckpointError(f"{p} has invalid meta: {problems}") from err


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """The meta of a checkpoint, without building the model (tensors are memory-mapped, not read)."""
    obj, p = _read_payload(path, mmap=True)
    return _parse_meta(obj["meta"], p)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model named in the checkpoint, load its weights strictly, put it in eval mode."""
    from bigsister_ray.models.registry import build_model

    obj, p = _read_payload(path, mmap=False)
    meta = _parse_meta(obj["meta"], p)
    state_dict = obj["state_dict"]
    _check_fits(meta, state_dict, f"checkpoint {p}")
    try:
        model = build_model(meta.model_name, meta.num_classes, in_channels=input_channels(meta.clip.input))
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {p}: {err}") from err
    from bigsister_ray.models.weights import load_weights

    load_weights(model, state_dict, strict=True)
    model.to(map_location).eval()
    return LoadedCheckpoint(model=model, meta=meta, path=p)


def update_checkpoint_meta(path: str | Path, **fields: Any) -> CheckpointMeta:
    """Replace meta fields (e.g. ``thresholds=..., metrics=...``) in place, atomically; returns the new meta."""
    unknown = sorted(set(fields) - set(CheckpointMeta.model_fields))
    if unknown:
        raise CheckpointError(f"update_checkpoint_meta: unknown meta fields {unknown}; expected some of {sorted(CheckpointMeta.model_fields)}")
    obj, p = _read_payload(path, mmap=False)
    meta = _parse_meta(obj["meta"], p)
    merged = {**meta.model_dump(mode="python"), **fields}
    new = _parse_meta(json.loads(json.dumps(merged, default=_jsonable)), p)
    save_checkpoint(p, obj["state_dict"], new, validate=False)
    return new


def predict_proba(
    model: nn.Module,
    clips_uint8: np.ndarray | torch.Tensor,
    meta: CheckpointMeta,
    *,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class probabilities ``B x C`` (float32) for uint8 clips ``B x T x S x S x 3`` (or one ``T x S x S x 3``).

    The clips must match the checkpoint's ClipSpec (T = clip.frames, S = clip.size). Runs
    :func:`~bigsister_ray.clip.to_model_input` with ``meta.norm`` and ``meta.clip.input``, the forward pass under ``inference_mode``
    and ``softmax(logits / meta.temperature)``. The model is used in whatever mode it is in (load_checkpoint
    returns it in eval mode).
    """
    shape = tuple(clips_uint8.shape)
    if len(shape) == 4:
        shape = (1, *shape)
    expected = (meta.clip.frames, meta.clip.size, meta.clip.size, 3)
    if len(shape) != 5 or shape[1:] != expected:
        raise ValueError(
            f"expected uint8 clips B x {expected[0]} x {expected[1]} x {expected[2]} x 3 (the checkpoint's ClipSpec), "
            f"got {tuple(clips_uint8.shape)}"
        )
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32  # e.g. a model cast to bf16 for serving
    x = to_model_input(clips_uint8, meta.norm, meta.clip.input).to(device=device, dtype=dtype)
    with torch.inference_mode():
        logits = model(x).float()
        if logits.ndim != 2 or logits.shape[1] != meta.num_classes:
            raise CheckpointError(
                f"model output {tuple(logits.shape)} does not match the {meta.num_classes} labels of the checkpoint"
            )
        probs = torch.softmax(logits / meta.temperature, dim=1)
    return probs.cpu().numpy().astype(np.float32, copy=False)
