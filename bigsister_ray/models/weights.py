"""Audited loading of foreign weights (a state dict at a path or URL) into one of our models.

Every key is accounted for, in the manner of mmaction2's ``_inflate_weights``: a :class:`LoadReport` lists the
keys loaded, the keys the model has but the file lacks (missing), the keys the file has but the model lacks
(unexpected) and the keys whose shapes differ. The classifier ("head", a key prefix) may differ in shape:
it is then left freshly initialised and reported, and the rest of the network is kept. With ``inflate`` a 2D
conv kernel ``out x in x kh x kw`` loads into a 3D kernel ``out x in x kt x kh x kw`` of the same name by
repeating it ``kt`` times and dividing by ``kt`` (I3D's ImageNet inflation; each inflated key is reported).
Checkpoints saved by
old PyTorch lack the BatchNorm ``num_batches_tracked`` counters; those are filled with zeros, never an error.

Accepted files: a plain state dict, a dict wrapping one under ``state_dict`` / ``model`` / ``model_state``
(or our own checkpoint format, see :mod:`bigsister_ray.models.checkpoint`), with or without a ``module.``
prefix (DataParallel / DDP). Files are read with ``torch.load(weights_only=True)``: no code runs from them.
"""

from __future__ import annotations

import base64
import io
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigsister_ray.errors import CheckpointError
from bigsister_ray.redact import redact_url

__all__ = ["LoadReport", "load_weights", "read_state_dict", "redact_source", "extract_state_dict"]

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net")
_BN_COUNTER = "num_batches_tracked"


@dataclass
class LoadReport:
    """What happened to every key when weights were loaded into a model."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    head_reinitialised: list[str] = field(default_factory=list)
    filled_counters: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing outside the head is missing, unexpected or mis-shaped."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        """A readable account of the load, each list truncated to ``limit`` keys."""

        def _fmt(items: list[Any]) -> str:
            shown = ", ".join(str(i) for i in items[:limit])
            return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")

        lines = [f"weights from {self.source}: {len(self.loaded)} tensors loaded"]
        if self.head_reinitialised:
            lines.append(f"  head replaced (shape differs, freshly initialised): {_fmt(self.head_reinitialised)}")
        if self.inflated:
            lines.append(f"  2D kernels inflated to 3D ({len(self.inflated)}): {_fmt(self.inflated)}")
        if self.filled_counters:
            lines.append(f"  {len(self.filled_counters)} BatchNorm num_batches_tracked counters absent (old file), set to 0")
        if self.missing:
            lines.append(f"  missing from the file ({len(self.missing)}): {_fmt(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected in the file ({len(self.unexpected)}): {_fmt(self.unexpected)}")
        if self.mismatched:
            mm = [f"{k} file{tuple(a)} vs model{tuple(b)}" for k, a, b in self.mismatched]
            lines.append(f"  shape mismatches ({len(mm)}): {_fmt(mm)}")
        return "\n".join(lines)


def redact_source(source: str | Path) -> str:
    """A path as is; a URL without credentials (the rules of :func:`bigsister_ray.redact.redact_url`)."""
    return redact_url(source)


def _read_bytes(source: str | Path, timeout_s: float) -> tuple[Any, str]:
    """Open ``source`` (path, file:// or http(s):// URL) for torch.load; returns (file-like or path, shown name)."""
    text = str(source)
    scheme = urllib.parse.urlsplit(text).scheme if isinstance(source, str) else ""
    if scheme in ("http", "https"):
        shown = redact_source(text)
        parts = urllib.parse.urlsplit(text)
        headers = {}
        if parts.username is not None:  # user:password@host -> HTTP basic auth (urllib cannot parse it in the host)
            token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
            host = parts.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            netloc += f":{parts.port}" if parts.port else ""
            text = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        try:
            request = urllib.request.Request(text, headers=headers)
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 (scheme checked)
                return io.BytesIO(resp.read()), shown
        except urllib.error.HTTPError as err:
            raise CheckpointError(f"could not download weights from {shown}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise CheckpointError(f"could not download weights from {shown}: {reason}") from err
    if scheme == "file":
        text = urllib.request.url2pathname(urllib.parse.urlsplit(text).path)
    elif scheme and len(scheme) > 1:  # "C:" drive letters are paths
        raise CheckpointError(f"weights source {redact_source(text)!r}: expected a file path or an http(s):// URL, got scheme {scheme!r}")
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(f"weights file {path} does not exist: expected a state dict saved with torch.save (a .pt/.pth file)")
    if path.is_dir():
        inner = path / "model.pt"
        if inner.is_file():
            return inner, str(inner)
        raise CheckpointError(f"weights path {path} is a directory without model.pt: expected a .pt/.pth file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file {path} is empty (0 bytes)")
    return path, str(path)


def extract_state_dict(obj: Any, shown: str) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded file: unwraps ``state_dict``/``model`` wrappers and ``module.`` prefixes."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{shown}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{shown}: no tensors found; expected a state dict or a dict with one of {list(_WRAPPER_KEYS)}, "
            f"found keys {sorted(map(str, obj))[:10]}"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(source: str | Path | Mapping[str, Any], *, timeout_s: float = 60.0) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state dict from a path, a URL or an in-memory mapping. Returns ``(tensors, shown source)``."""
    if isinstance(source, Mapping):
        return extract_state_dict(source, "<state dict>"), "<state dict>"
    handle, shown = _read_bytes(source, timeout_s)
    try:
        obj = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign bytes
        raise CheckpointError(
            f"could not read weights from {shown}: expected a file saved with torch.save holding tensors "
            f"(loaded with weights_only=True), got {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    return extract_state_dict(obj, shown), shown


def load_weights(
    model: nn.Module,
    source: str | Path | Mapping[str, Any],
    *,
    head: str | None = None,
    strict: bool = True,
    inflate: bool = True,
    timeout_s: float = 60.0,
) -> LoadReport:
    """Load ``source`` into ``model`` in place and report every key.

    ``head``: key prefix of the classifier (e.g. ``"logits."``, ``"fc."``); keys under it whose shape differs
    are left freshly initialised (the new head for our classes) and reported, not an error. With ``strict``
    any other missing, unexpected or mis-shaped key raises :class:`CheckpointError` listing them all (the model
    is left untouched); without it they are logged as a warning and everything that fits is loaded.
    """
    tensors, shown = read_state_dict(source, timeout_s=timeout_s)
    own = model.state_dict()
    report = LoadReport(source=shown)
    to_load: dict[str, torch.Tensor] = {}
    for name, target in own.items():
        if name not in tensors:
            if name.endswith(_BN_COUNTER):
                report.filled_counters.append(name)
                to_load[name] = torch.zeros_like(target)
            else:
                report.missing.append(name)
            continue
        value = tensors[name]
        if inflate and value.ndim == 4 and target.ndim == 5 and tuple(value.shape) == tuple(target.shape[:2] + target.shape[3:]):
            kt = target.shape[2]
            value = value.unsqueeze(2).expand(-1, -1, kt, -1, -1) / kt
            report.inflated.append(name)
        if tuple(value.shape) != tuple(target.shape):
            if head and name.startswith(head):
                report.head_reinitialised.append(name)
            else:
                report.mismatched.append((name, tuple(value.shape), tuple(target.shape)))
            continue
        to_load[name] = value
        report.loaded.append(name)
    report.unexpected = [k for k in tensors if k not in own]
    # A missing head key is the same situation as a replaced head (e.g. a backbone-only file).
    if head:
        head_missing = [k for k in report.missing if k.startswith(head)]
        report.missing = [k for k in report.missing if not k.startswith(head)]
        report.head_reinitialised += head_missing
    if not report.ok:
        if strict:
            raise CheckpointError(
                f"weights do not fit {type(model).__name__} (strict):\n{report.summary()}\n"
                "Use weights saved from the same architecture as model.name, or call "
                "load_weights(..., strict=False) to load what fits."
            )
        log.warning("%s", report.summary())
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(to_load, strict=False)
    # load_state_dict's own view must agree with the audit (everything not loaded is accounted for).
    unaccounted = set(missing) - set(report.missing) - set(report.head_reinitialised) - {m for m, _, _ in report.mismatched}
    if unaccounted or unexpected:
        raise CheckpointError(f"internal: keys neither loaded nor reported: {sorted(unaccounted | set(unexpected))[:10]}")
    log.info("%s", report.summary())
    return report
