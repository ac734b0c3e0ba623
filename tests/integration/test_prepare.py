"""``prepare`` end to end on a real local Ray: bad inputs reported and skipped, good clips written, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bigsister_ray.config import Settings
from bigsister_ray.data.pipeline import prepare
from bigsister_ray.data.prepared import frames_from_bytes, read_manifest
from bigsister_ray.data.records import ClipRecord, InputError
from tests._media import aihub_pair, aihub_xml, frame_level, make_mp4, truncate
from tests.conftest import FIGHT_SURV, need_shared


def _settings(**data) -> Settings:
    base = {"clips_per_event": 2, "negatives_per_video": 1, "negative_margin_s": 0.5, "shard_clips": 4,
            "split": (0.5, 0.5, 0.0)}
    base.update(data)
    return Settings(clip={"frames": 8, "fps": 4.0, "size": 32, "stride": 4}, data=base)


def _read_clips(out: Path):
    manifest = read_manifest(out)
    rows = []
    for shard in manifest.shards:
        table = pq.read_table(out / shard.path)
        assert table.num_rows == shard.clips
        rows.extend(table.to_pylist())
    return manifest, rows


@pytest.fixture()
def messy_aihub(tmp_path: Path) -> Path:
    root = tmp_path / "aihub"
    fight = root / "02.싸움(fight)" / "inside_croki_01" / "s1"
    assault = root / "01.폭행(assult)" / "outsidedoor_01" / "s2"
    # good: three takes, long enough for negatives; one 1.2 s video shorter than a 2 s clip (must loop, not drop)
    aihub_pair(fight, "1-1_cam01_fight01_place01_day_summer", seconds=8, start=3.0, length=2.0,
               actions={"kicking": [(30, 40)], "punching": [(38, 45)]})
    aihub_pair(fight, "2-1_cam01_fight02_place01_day_summer", seconds=8, fps=15, start=4.0, length=3.0)
    aihub_pair(assault, "3-1_cam01_assault01_place02_night_winter", event="assult", seconds=1.2, start=0.2, length=0.8)
    # the same session byte-identical in a second zip group: removed as a duplicate
    dup = root / "02.싸움(fight)" / "insidedoor_02" / "s1"
    dup.mkdir(parents=True)
    for suffix in (".mp4", ".xml"):
        (dup / f"1-1_cam01_fight01_place01_day_summer{suffix}").write_bytes(
            (fight / f"1-1_cam01_fight01_place01_day_summer{suffix}").read_bytes())
    # bad: truncated mp4, zero-byte mp4, XML with missing fields, XML whose video is missing, unknown class
    truncate(aihub_pair(fight, "4-1_cam01_fight01_place03_day_summer", seconds=6)[0], keep=0.5)
    aihub_pair(fight, "5-1_cam01_fight01_place03_day_summer", seconds=6)[0].write_bytes(b"")
    make_mp4(fight / "6-1_cam01_fight01_place03_day_summer.mp4", frames=20)
    aihub_xml(fight / "6-1_cam01_fight01_place03_day_summer.xml", event=None, duration=None)
    aihub_xml(fight / "7-1_cam01_fight01_place03_day_summer.xml")
    aihub_pair(fight, "8-1_cam01_ballet01_place03_day_summer", event="ballet", seconds=4)
    return root


def test_prepare_reports_every_bad_input_writes_every_good_clip_and_resumes(ray_session, messy_aihub, tmp_path):
    out = tmp_path / "prepared"
    settings = _settings()
    summary = prepare("aihub", messy_aihub, out, settings, progress=None)

    errors = [InputError.model_validate_json(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    by_file = {Path(e.path).name: e for e in errors}
    expect = {
        "4-1_cam01_fight01_place03_day_summer.mp4": ("decode", "truncated or corrupt"),
        "5-1_cam01_fight01_place03_day_summer.mp4": ("decode", "empty (0 bytes)"),
        "6-1_cam01_fight01_place03_day_summer.xml": ("annotation", "missing field event/eventname"),
        "7-1_cam01_fight01_place03_day_summer.xml": ("video", "video missing"),
        "8-1_cam01_ballet01_place03_day_summer.xml": ("label", "unknown class 'ballet'"),
    }
    for name, (stage, reason) in expect.items():
        assert name in by_file, f"{name} not reported; errors: {errors}"
        assert by_file[name].stage == stage and reason in by_file[name].reason
    assert set(by_file) == set(expect)
    md = (out / "errors.md").read_text()
    assert all(name in md for name in expect)

    index = [ClipRecord.model_validate_json(line) for line in (out / "index.jsonl").read_text().splitlines()]
    good = [c for c in index if not Path(c.video).name.startswith(("4-1", "5-1"))]
    bad = [c for c in index if Path(c.video).name.startswith(("4-1", "5-1"))]
    assert not any("insidedoor_02" in c.video for c in index)  # duplicate removed
    assert summary.duplicates == 1
    manifest, rows = _read_clips(out)
    assert sorted(r["clip_id"] for r in rows) == sorted(c.clip_id for c in good)
    assert summary.clips_written == manifest.clips_written == len(good)
    assert summary.clips_failed == manifest.clips_failed == len(bad) > 0
    assert {c.kind for c in good} == {"positive", "negative"}

    by_id = {c.clip_id: c for c in index}
    for row in rows:
        clip = frames_from_bytes(row["frames"], settings.clip)
        assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
        assert row["split"] == by_id[row["clip_id"]].split and row["label"] == by_id[row["clip_id"]].label
    # the 1.2 s take is shorter than a 2 s clip: looped, not dropped
    short = [r for r in rows if Path(r["video"]).name.startswith("3-1")]
    assert short and all(r["label"] == "assault" for r in short)
    levels = frames_from_bytes(short[0]["frames"], settings.clip)[:, 0, 0, 0].astype(int)
    expected = [frame_level(i) for i in (0, 2, 5, 7, 0, 2, 5, 7)]  # 1.2 s at 10 fps walked at 4 fps, then looped
    assert np.all(np.abs(levels - np.array(expected)) <= 3), levels
    # a group never spans two splits
    splits = {}
    for c in index:
        assert splits.setdefault(c.group, c.split) == c.split

    # Re-run: nothing redone, same result.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*.parquet")}
    again = prepare("aihub", messy_aihub, out, settings, progress=None)
    assert again.shards_written == 0 and again.shards_resumed == summary.shards_total
    assert (again.clips_written, again.clips_failed) == (summary.clips_written, summary.clips_failed)
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*.parquet")} == stamps
    assert len((out / "errors.jsonl").read_text().splitlines()) == len(errors)

    # Losing one shard redoes only that shard.
    victim = out / manifest.shards[0].path
    victim.unlink()
    third = prepare("aihub", messy_aihub, out, settings, progress=None)
    assert third.shards_written == 1 and victim.exists()
    assert third.clips_written == summary.clips_written
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == manifest.fingerprint


@pytest.mark.slow
def test_prepare_fight_surv_writes_all_200_clips(ray_session, tmp_path):
    root = need_shared(FIGHT_SURV)
    summary = prepare("folders", root, tmp_path / "F", Settings(), progress=None)
    assert summary.clips_written == 200 and summary.clips_failed == 0 and summary.inputs_failed == 0
    manifest = read_manifest(tmp_path / "F")
    assert sum(s.clips for s in manifest.shards) == 200
    assert sum(n for split in manifest.counts.values() for n in split.values()) == 200
    assert (tmp_path / "F" / "errors.jsonl").read_text() == ""


def test_cli_prepare_folders_and_clear_error_for_a_missing_root(ray_session, tmp_path):
    from typer.testing import CliRunner

    from bigsister_ray.cli import app

    make_mp4(tmp_path / "data" / "fight" / "a.mp4", frames=15, fps=10)
    make_mp4(tmp_path / "data" / "noFight" / "b.mp4", frames=25, fps=12)
    config = tmp_path / "cfg.yaml"
    config.write_text("clip: {frames: 8, fps: 4.0, size: 32, stride: 4}\ndata: {split: [1.0, 0.0, 0.0]}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "--source", "folders", "--root", str(tmp_path / "data"),
                                 "--out", str(tmp_path / "out"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "clips written 2, clips failed 0" in result.output
    manifest = read_manifest(tmp_path / "out")
    assert manifest.counts == {"train": {"fight": 1, "normal": 1}}

    missing = runner.invoke(app, ["prepare", "--source", "folders", "--root", str(tmp_path / "nope"),
                                  "--out", str(tmp_path / "out2")])
    assert missing.exit_code == 1
    assert "nope does not exist" in missing.output


def test_warm_up_imports_the_decode_stack_on_one_worker_per_decode_slot(ray_session):
    """The import tasks `prepare` starts before indexing: one per decode slot of the cluster; each imports and runs
    the decode stack (a worker without decord or torch fails it)."""
    import ray

    from bigsister_ray.data.pipeline import _warm_decoders

    settings = Settings(data={"decode_cpus": 1.0})
    slots = int(ray.cluster_resources().get("CPU", 0) // 1.0)
    refs = _warm_decoders(settings)
    assert len(refs) == slots >= 1
    pids = ray.get(refs, timeout=120)
    assert all(isinstance(pid, int) and pid > 0 for pid in pids)
    half = _warm_decoders(Settings(data={"decode_cpus": 2.0}))
    assert len(half) == slots // 2
    ray.get(half, timeout=120)
