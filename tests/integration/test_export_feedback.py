"""Operator verdicts back into training: reviewed incidents with real MP4 clips in a real SQLite database ->
``bigsister export-feedback`` -> ``prepare --source manifest`` -> ``train`` (tiny3d, one epoch) on the shared
local Ray."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from typer.testing import CliRunner

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import Settings
from bigsister_ray.incidents.models import IncidentCreate
from bigsister_ray.incidents.store import IncidentStore
from tests._media import make_mp4

SPEC = ClipSpec(frames=8, fps=8.0, size=32, stride=4)
T0 = datetime(2026, 6, 1, 20, 0, tzinfo=timezone.utc)


def _incident(store: IncidentStore, media: Path, n: int, *, clip: bool = True) -> int:
    iid = store.record_event(IncidentCreate(
        event_key=f"cam-{n % 3}:{n}", stream_id=f"cam-{n % 3}", stream_name=f"Camera {n % 3}", label="fight",
        severity="medium", started_at=T0 + timedelta(minutes=n), start_s=10.0 * n, end_s=10.0 * n + 4,
        peak_score=0.8, peak_start_s=10.0 * n + 1, peak_end_s=10.0 * n + 2, timeline=[[10.0 * n, 0.8]]),
        now=T0 + timedelta(minutes=n))
    if clip:
        rel = f"{T0:%Y-%m-%d}/{iid}.mp4"
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        make_mp4(media / rel, frames=24 + 2 * n, fps=8.0, size=(48, 40))
        store.set_clip(iid, rel)
    return iid


def test_verdicts_export_as_a_manifest_that_prepare_and_train_take(ray_session, tmp_path):
    from bigsister_ray.cli import app
    from bigsister_ray.data.pipeline import prepare
    from bigsister_ray.train.trainer import train

    media, db = tmp_path / "media", tmp_path / "incidents.db"
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(f"database:\n  url: sqlite:///{db}\nincidents:\n  media_dir: {media}\n")
    store = IncidentStore(f"sqlite:///{db}")
    store.upgrade()
    confirmed, false_alarms = [], []
    for n in range(12):
        iid = _incident(store, media, n)
        if n % 2:
            store.act(iid, "false_alarm", actor="console:night-desk", now=T0 + timedelta(hours=1))
            false_alarms.append(iid)
        else:
            store.act(iid, "ack", actor="slack:U1 (ann)", now=T0 + timedelta(hours=1))
            if n % 4 == 0:
                store.act(iid, "resolve", actor="api", now=T0 + timedelta(hours=2))
            confirmed.append(iid)
    still_open = _incident(store, media, 20)
    no_clip = _incident(store, media, 21, clip=False)
    store.act(no_clip, "false_alarm", actor="api", now=T0 + timedelta(hours=1))
    gone = _incident(store, media, 22)
    store.act(gone, "ack", actor="api", now=T0 + timedelta(hours=1))
    (media / store.get_clip_path(gone)).unlink()
    store.dispose()

    out = tmp_path / "feedback"
    res = CliRunner().invoke(app, ["export-feedback", "--out", str(out), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "12 clips (fight 6, normal 6)" in res.stdout
    assert "2 reviewed incidents skipped" in res.stdout
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    by_id = {r["incident_id"]: r for r in rows}
    assert set(by_id) == set(confirmed) | set(false_alarms)  # not the open one, the one without a clip, the gone one
    assert still_open not in by_id and no_clip not in by_id and gone not in by_id
    assert {by_id[i]["label"] for i in confirmed} == {"fight"} and {by_id[i]["label"] for i in false_alarms} == {"normal"}
    for r in rows:
        assert (out / r["path"]).read_bytes()[4:8] == b"ftyp" and r["group"] == f"incident-{r['incident_id']}"
    later = CliRunner().invoke(app, ["export-feedback", "--out", str(tmp_path / "later"), "--config", str(cfg),
                                     "--since", (T0 + timedelta(hours=1, minutes=30)).isoformat()])
    assert later.exit_code == 0 and "3 clips (fight 3)" in later.stdout  # only the verdicts given since (resolves)
    bad = CliRunner().invoke(app, ["export-feedback", "--out", str(out), "--config", str(cfg), "--since", "yesterday"])
    assert bad.exit_code == 2 and "expected an ISO 8601 time" in bad.output

    settings = Settings.model_validate({
        "clip": SPEC.model_dump(), "task": {"labels": ["fight", "normal"]},
        "data": {"split": (0.6, 0.2, 0.2), "negatives_per_video": 0},
        "model": {"name": "tiny3d", "dropout": 0.0},
        "train": {"workers": 1, "batch_size": 4, "epochs": 1, "lr": 1e-2},
        "ray": {"num_cpus": 2}})
    summary = prepare("manifest", out / "manifest.jsonl", tmp_path / "prepared", settings, progress=None)
    assert summary.clips_failed == 0 and summary.clips_written >= 12, summary
    result = train(tmp_path / "prepared", tmp_path / "run", settings)
    assert result.last_epoch == 1
