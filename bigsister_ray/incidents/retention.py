"""Media retention: evidence clips and snapshots of old incidents are deleted; the incident rows stay.

An incident that started more than ``incidents.media_retention_days`` ago loses its snapshot (the bytes become
NULL) and its clip (the file under ``incidents.media_dir`` is unlinked, then ``clip_path`` cleared). The file
goes first: a sweep interrupted between the two leaves a path to a missing file, which the next sweep clears,
never an orphan file nobody points at. Several processes may sweep at once (unlinking a missing file and
clearing a cleared column are no-ops). :class:`~bigsister_ray.incidents.service.IncidentService` runs
:func:`sweep_media` from its sweeper every ``incidents.retention_sweep_interval_s``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bigsister_ray.incidents.models import utcnow
from bigsister_ray.incidents.store import IncidentStore, check_media_path

__all__ = ["RetentionReport", "media_file", "sweep_media"]

log = logging.getLogger(__name__)

#: Incidents handled per database round trip.
BATCH = 200


@dataclass
class RetentionReport:
    """What one sweep did: the incidents whose media went, the clip files unlinked, and files it could not remove."""

    cutoff: datetime | None = None
    incidents: list[int] = field(default_factory=list)
    files_removed: int = 0
    errors: list[str] = field(default_factory=list)


def media_file(media_dir: Path, relative: str) -> Path:
    """The file ``relative`` (a stored clip path) names under ``media_dir``; ValueError when it would leave it."""
    root = Path(media_dir).resolve()
    path = (root / check_media_path(relative)).resolve()
    if root != path and root not in path.parents:
        raise ValueError(f"clip path {relative!r} leaves incidents.media_dir {root} (through a link?)")
    return path


def _unlink(media_dir: Path, relative: str, report: RetentionReport) -> bool:
    try:
        path = media_file(media_dir, relative)
        path.unlink(missing_ok=True)
    except (OSError, ValueError) as err:
        report.errors.append(f"clip {relative!r}: {err}")
        log.error("retention: cannot remove clip %r of an expired incident: %s (the path stays; fix the file's "
                  "permissions or remove it by hand)", relative, err)
        return False
    report.files_removed += 1
    root = Path(media_dir).resolve()
    parent = path.parent
    while parent != root and root in parent.parents:  # folders left empty (one per incident or per day)
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return True


def sweep_media(store: IncidentStore, media_dir: Path, retention_days: float | None, *,
                now: datetime | None = None) -> RetentionReport:
    """Delete the clips and snapshots of incidents that started before ``now - retention_days``.

    ``retention_days`` 0 or None keeps everything (returns an empty report). ``now`` defaults to the current time.
    """
    report = RetentionReport()
    if not retention_days:
        return report
    now = now or utcnow()
    report.cutoff = cutoff = now - timedelta(days=float(retention_days))
    seen: set[int] = set()
    while True:
        batch = [(i, clip) for i, clip in store.media_before(cutoff, limit=BATCH) if i not in seen]
        if not batch:
            break
        for incident_id, clip in batch:
            seen.add(incident_id)
            if clip is not None and not _unlink(media_dir, clip, report):
                store.drop_media(incident_id, None)  # the snapshot goes anyway; the clip is tried again next sweep
                continue
            store.drop_media(incident_id, clip)
            report.incidents.append(incident_id)
    if report.incidents:
        log.info("retention: removed the media of %d incident(s) that started before %s", len(report.incidents),
                 cutoff.isoformat())
    return report
