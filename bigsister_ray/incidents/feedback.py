"""Operator verdicts as a training dataset: ``bigsister export-feedback --out DIR``.

Every reviewed incident with an evidence clip becomes one row of ``DIR/manifest.jsonl``, the ``manifest`` source
of ``bigsister prepare`` (:func:`bigsister_ray.data.readers.read_manifest`), with its clip copied to
``DIR/clips/<incident id>.mp4``::

    false_alarm                 label "normal": what the site's cameras show when nothing is wrong
    acknowledged, resolved      label = the incident's class: a confirmed detection

Each incident is its own group (``incident-<id>``), so the split never puts one clip on both sides. Rows carry
the incident id, camera, verdict and time as extra fields (the reader ignores them). Incidents without a clip,
or whose clip file is gone (retention), are skipped and counted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bigsister_ray.errors import BigSisterError
from bigsister_ray.incidents.models import IncidentStatus
from bigsister_ray.incidents.retention import media_file
from bigsister_ray.incidents.store import IncidentStore
from bigsister_ray.labels import NORMAL

__all__ = ["FeedbackExport", "FeedbackExportError", "export_feedback", "MANIFEST"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


class FeedbackExportError(BigSisterError):
    """The output folder cannot be written."""


@dataclass
class FeedbackExport:
    """What an export wrote: its manifest, clips per label, and the incidents skipped with why."""

    manifest: Path
    per_label: dict[str, int] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def clips(self) -> int:
        return sum(self.per_label.values())

    def __str__(self) -> str:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.per_label.items())) or "none"
        return f"{self.clips} clips ({labels}) in {self.manifest}; {len(self.skipped)} reviewed incidents skipped"


def _verdict_label(status: str, label: str) -> str | None:
    if status == IncidentStatus.false_alarm.value:
        return NORMAL
    if status in (IncidentStatus.acknowledged.value, IncidentStatus.resolved.value):
        return label
    return None


def export_feedback(store: IncidentStore, media_dir: Path, out: Path, *, since: datetime | None = None) -> FeedbackExport:
    """Write the verdicts reviewed at or after ``since`` (all when None) with their clips under ``out``.

    The manifest is written last, through a temporary file, so a folder with a manifest holds all its clips.
    """
    out = Path(out)
    clips = out / "clips"
    try:
        clips.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FeedbackExportError(f"export-feedback --out {out}: cannot create the folder: {err.strerror or err}") from err
    result = FeedbackExport(manifest=out / MANIFEST)
    rows = []
    for incident, clip in store.verdicts(since=since):
        label = _verdict_label(incident.status, incident.label)
        if label is None:
            continue
        if clip is None:
            result.skipped[incident.id] = "no evidence clip"
            continue
        try:
            source = media_file(media_dir, clip)
        except ValueError as err:
            result.skipped[incident.id] = str(err)
            continue
        if not source.is_file():
            result.skipped[incident.id] = f"clip {source} is missing (removed by retention?)"
            continue
        target = clips / f"{incident.id}{source.suffix or '.mp4'}"
        try:
            shutil.copyfile(source, target)
        except OSError as err:
            raise FeedbackExportError(f"export-feedback: cannot copy {source} to {target}: {err.strerror or err}") from err
        rows.append({"path": f"clips/{target.name}", "label": label, "group": f"incident-{incident.id}",
                     "incident_id": incident.id, "stream_id": incident.stream_id, "detected": incident.label,
                     "verdict": incident.status, "started_at": incident.started_at.isoformat()})
        result.per_label[label] = result.per_label.get(label, 0) + 1
    tmp = out / f".{MANIFEST}.tmp"
    try:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, result.manifest)
    except OSError as err:
        raise FeedbackExportError(f"export-feedback: cannot write {result.manifest}: {err.strerror or err}") from err
    for incident_id, why in result.skipped.items():
        log.info("export-feedback: incident %d skipped: %s", incident_id, why)
    return result
