"""Readers: AI Hub layout (pairs, orphans, bad XML, unknown classes), class folders with group files, manifests."""

from __future__ import annotations

import json
import shutil

import pytest

from bigsister_ray.config import Settings
from bigsister_ray.data.readers import UNLISTED_GROUP, aihub_take, read_groups_file, read_source
from bigsister_ray.errors import DataError
from tests._media import aihub_pair, aihub_xml, make_mp4
from tests.conftest import FIGHT_SURV, need_shared


def _by_stage(errors):
    out = {}
    for e in errors:
        out.setdefault(e.stage, []).append(e)
    return out


def test_aihub_take():
    assert aihub_take("12-2_cam02_assault01_place09_day_summer") == "12-2"
    assert aihub_take("101-3_cam01_swoon01_place03_day_summer") == "101-3"
    assert aihub_take("cam02_assault01") is None


def test_aihub_layout_pairs_orphans_and_bad_inputs(tmp_path):
    fight = tmp_path / "02.싸움(fight)" / "inside_croki_01" / "session1"
    assault = tmp_path / "01.폭행(assult)" / "insidedoor_02" / "s"
    aihub_pair(fight, "12-2_cam01_fight01_place09_day_summer", actions={"kicking": [(20, 25), (10, 20)], "stop and go": [(30, 35)]})
    aihub_pair(fight, "12-2_cam02_fight01_place09_day_winter")
    aihub_pair(assault, "7-1_cam01_assault01_place01_night_summer", event="assult")  # the folder's spelling
    # an XML whose video is missing, a video without XML, broken XML, an unknown class
    aihub_xml(fight / "13-1_cam01_fight01_place02_day_summer.xml")
    make_mp4(fight / "14-1_cam01_fight01_place02_day_summer.mp4", frames=10)
    make_mp4(fight / "15-1_cam01_fight01_place02_day_summer.mp4", frames=10)
    aihub_xml(fight / "15-1_cam01_fight01_place02_day_summer.xml", fps=None)
    aihub_pair(fight, "16-1_cam01_dance01_place02_day_summer", event="dancing")

    videos, errors = read_source("aihub", tmp_path, Settings())
    assert sorted((v.label, v.group) for v in videos) == [("assault", "7-1"), ("fight", "12-2"), ("fight", "12-2")]
    stages = _by_stage(errors)
    assert [e.path.endswith("13-1_cam01_fight01_place02_day_summer.xml") for e in stages["video"]] == [True]
    assert "video missing" in stages["video"][0].reason
    annotation = {e.path.rsplit("/", 1)[-1]: e.reason for e in stages["annotation"]}
    assert "no annotation" in annotation["14-1_cam01_fight01_place02_day_summer.mp4"]
    assert "missing field header/fps" in annotation["15-1_cam01_fight01_place02_day_summer.xml"]
    assert "unknown class 'dancing'" in stages["label"][0].reason
    assert len(errors) == 4

    first = next(v for v in videos if v.path.endswith("day_summer.mp4") and v.label == "fight")
    assert first.fps == 10.0 and first.num_frames == 40 and first.duration_s == pytest.approx(4.0)
    assert first.meta["size_bytes"] == str((fight / "12-2_cam01_fight01_place09_day_summer.mp4").stat().st_size)
    events = [s for s in first.spans if s.kind == "event"]
    actions = sorted((s.name, s.start_s, s.end_s) for s in first.spans if s.kind == "action")
    assert [(e.name, e.start_s, e.end_s) for e in events] == [("fight", 1.0, 3.0)]
    assert actions == [("kicking", 1.0, 2.5), ("stop and go", 3.0, 3.5)]


def test_aihub_root_must_be_a_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_source("aihub", tmp_path / "nope", Settings())


SOURCES = """https://www.youtube.com/watch?v=AAA
fi001: 0.14.50 - 0.17.50
nofi001: 0.20.10 - 0.22.50
https://www.youtube.com/watch?v=BBB
fi002: 1.00.80 - 1.04.20
nofi003 - nofi004 : Some Other Dataset
"""


def test_groups_file_formats(tmp_path):
    src = tmp_path / "sources.txt"
    src.write_text(SOURCES)
    assert read_groups_file(src) == {
        "fi001": "https://www.youtube.com/watch?v=AAA",
        "nofi001": "https://www.youtube.com/watch?v=AAA",
        "fi002": "https://www.youtube.com/watch?v=BBB",
    }
    tab = tmp_path / "groups.tsv"
    tab.write_text("a.mp4\tcam1\nb\tcam2\n# comment\n")
    assert read_groups_file(tab) == {"a": "cam1", "b": "cam2"}
    bad = tmp_path / "bad.txt"
    bad.write_text("fi001: 0.1 - 0.2\n")
    with pytest.raises(DataError, match="before any source line"):
        read_groups_file(bad)


def test_folders_with_sources_txt_unlisted_group_unknown_class_and_empty_video(tmp_path):
    for name in ("fi001", "fi002"):
        make_mp4(tmp_path / "fight" / f"{name}.mp4", frames=12, fps=10)
    for name in ("nofi001", "nofi003", "nofi004"):
        make_mp4(tmp_path / "noFight" / f"{name}.mp4", frames=12, fps=10)
    make_mp4(tmp_path / "juggling" / "j1.mp4", frames=12, fps=10)
    (tmp_path / "fight" / "fi009.mp4").write_bytes(b"")
    (tmp_path / "sources.txt").write_text(SOURCES)

    videos, errors = read_source("folders", tmp_path, Settings())
    groups = {v.path.rsplit("/", 1)[-1]: (v.label, v.group) for v in videos}
    assert groups == {
        "fi001.mp4": ("fight", "https://www.youtube.com/watch?v=AAA"),
        "fi002.mp4": ("fight", "https://www.youtube.com/watch?v=BBB"),
        "nofi001.mp4": ("normal", "https://www.youtube.com/watch?v=AAA"),
        "nofi003.mp4": ("normal", UNLISTED_GROUP),
        "nofi004.mp4": ("normal", UNLISTED_GROUP),
    }
    assert all(v.num_frames == 12 and v.fps == 10.0 and (v.width, v.height) == (64, 48) for v in videos)
    stages = _by_stage(errors)
    assert [e.path.endswith("fi009.mp4") and "empty (0 bytes)" in e.reason for e in stages["probe"]] == [True]
    assert [e.path.endswith("j1.mp4") and "juggling" in e.reason for e in stages["label"]] == [True]


def test_folders_without_group_file_make_one_group_per_video(tmp_path):
    make_mp4(tmp_path / "fight" / "a.mp4", frames=8)
    make_mp4(tmp_path / "normal" / "a.mp4", frames=8)
    videos, errors = read_source("folders", tmp_path, Settings())
    assert not errors and sorted(v.group for v in videos) == ["fight/a", "normal/a"]


def test_folders_explicit_groups_file_from_settings(tmp_path):
    make_mp4(tmp_path / "data" / "fight" / "a.mp4", frames=8)
    groups = tmp_path / "g.tsv"
    groups.write_text("a\tcamera-7\n")
    settings = Settings(data={"groups_file": str(groups)})
    videos, _ = read_source("folders", tmp_path / "data", settings)
    assert [v.group for v in videos] == ["camera-7"]


def test_real_fight_surv_groups():
    src = need_shared(FIGHT_SURV / "sources.txt")
    groups = read_groups_file(src)
    assert len(groups) == 170
    assert not any(f"nofi{i:03d}" in groups for i in range(62, 92))  # the unlisted block: one group of its own


def test_manifest_jsonl_and_csv(tmp_path):
    make_mp4(tmp_path / "v" / "a.mp4", frames=30, fps=10)
    make_mp4(tmp_path / "v" / "b.mp4", frames=30, fps=10)
    lines = [
        {"path": "v/a.mp4", "label": "fight", "start": 0.5, "end": 1.5, "group": "g1"},
        {"path": "v/a.mp4", "label": "fight", "start": 2.0, "end": 2.5, "group": "g1"},
        {"path": "v/b.mp4", "label": "noFight"},
        {"path": "v/c.mp4", "label": "fight"},
        {"path": "v/b.mp4", "label": "weird"},
        {"label": "fight"},
        {"path": "v/a.mp4", "label": "fight", "start": 3},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    videos, errors = read_source("manifest", manifest, Settings())
    by_name = {v.path.rsplit("/", 1)[-1]: v for v in videos}
    assert set(by_name) == {"a.mp4", "b.mp4"}
    assert [(s.start_s, s.end_s) for s in by_name["a.mp4"].spans] == [(0.5, 1.5), (2.0, 2.5)]
    assert by_name["a.mp4"].group == "g1" and by_name["b.mp4"].group == "b" and by_name["b.mp4"].label == "normal"
    stages = sorted((e.stage, e.path.rsplit(":", 1)[-1] if e.stage != "probe" else "c") for e in errors)
    assert stages == [("label", "5"), ("manifest", "6"), ("manifest", "7"), ("manifest", "8"), ("probe", "c")]

    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,label,start,end,group\nv/a.mp4,assault,1,2,cam\nv/b.mp4,normal,,,\n")
    videos, errors = read_source("manifest", csv_path, Settings())
    assert not errors and sorted(v.label for v in videos) == ["assault", "normal"]
    with pytest.raises(DataError, match="expected a .jsonl or .csv"):
        read_source("manifest", tmp_path / "v" / "a.mp4", Settings())
    shutil.rmtree(tmp_path / "v")
