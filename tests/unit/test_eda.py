"""EDA on a synthetic AI Hub dataset with planted problems: report, plots and warnings (no Ray needed)."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET

import pytest
from PIL import Image
from typer.testing import CliRunner

from bigsister_ray.cli import app
from bigsister_ray.config import Settings
from bigsister_ray.data.index import build_index
from bigsister_ray.data.readers import read_source
from bigsister_ray.data.eda import run_eda
from bigsister_ray.data.eda_plots import plot_class_counts, plot_durations
from bigsister_ray.data.synth import synthesize


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """6 good videos (fight x3 in 2-3 takes, drunken x3) plus: an event covering the whole video, a header
    frame count of 0, an XML without its video, an unreadable XML."""
    root = tmp_path_factory.mktemp("aihub")
    summary = synthesize(root, videos=6, seconds=3.0, seed=2, labels=["fight", "drunken"], size=(64, 48))
    wide = summary.videos[0].xml
    tree = ET.parse(wide)
    tree.find("event/starttime").text = "00:00:00.0"
    tree.find("event/duration").text = tree.find("header/duration").text
    tree.write(wide, encoding="utf-8", xml_declaration=True)
    zero = summary.videos[1].xml
    zero.write_text(zero.read_text(encoding="utf-8").replace("<frames>45</frames>", "<frames>0</frames>"), encoding="utf-8")
    orphan = summary.videos[2].xml.with_name("99-9_cam01_fight01_place01_day_spring.xml")
    orphan.write_text(summary.videos[2].xml.read_text(encoding="utf-8").replace(summary.videos[2].mp4.name, orphan.with_suffix(".mp4").name),
                      encoding="utf-8")
    broken = summary.videos[3].mp4.with_name("98-1_cam01_drunken01_place01_day_spring")
    shutil.copy(summary.videos[3].mp4, broken.with_suffix(".mp4"))
    broken.with_suffix(".xml").write_text("<annotation><folder>drunken</folder>", encoding="utf-8")
    return root, summary, {"wide": wide, "zero": zero, "orphan": orphan, "broken": broken.with_suffix(".xml")}


def test_report_has_every_plot_and_the_planted_warnings(planted, tmp_path):
    root, summary, files = planted
    result = run_eda("aihub", root, tmp_path / "eda", Settings())
    report = result.report.read_text(encoding="utf-8")
    assert result.videos == 6 and result.errors == 2
    # every plot exists, is a real PNG of a readable size, and is embedded in the report
    assert len(result.plots) == 7
    for plot in result.plots:
        with Image.open(plot) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 200
        assert f"](plots/{plot.name})" in report
    warnings = "\n".join(result.warnings)
    assert "cover more than 80%" in warnings and files["wide"].stem in warnings
    assert "no usable frame count" in warnings and files["zero"].stem in warnings
    assert "2 input(s) skipped (annotation: 1, video: 1)" in warnings
    # Group warnings follow the index: a class with fewer than 3 groups is named; with the split stratified by
    # class, a class with 3 or more groups reaches every split and gets no "no clips in" warning.
    videos, _ = read_source("aihub", root, Settings())
    groups: dict[str, set[str]] = {}
    for clip in build_index(videos, Settings()):
        if clip.kind != "negative":
            groups.setdefault(clip.label, set()).add(clip.group)
    for label, gs in groups.items():
        few = re.search(rf"\*\*{label}\*\* comes from only {len(gs)} group", warnings)
        assert bool(few) == (len(gs) < 3), (label, gs, warnings)
        if len(gs) >= 3:
            assert f"**{label}** has no clips in" not in warnings
    # the skipped inputs are listed with their reasons
    assert files["orphan"].name in report and "video missing" in report
    assert files["broken"].name in report
    # the numbers in the summary line are the index's
    assert f"**{result.clips} clips**" in report
    assert "| fight |" in report and "| drunken |" in report
    # 3 s videos leave no room for a 2 s normal clip beyond the 2 s margin: the report says so
    assert re.search(r"Task classes with no clips at all: .*normal", warnings)


def test_a_clean_dataset_says_so(tmp_path):
    root = tmp_path / "clean"
    synthesize(root, videos=6, seconds=3.0, seed=4, labels=["fight", "drunken"], size=(64, 48))
    settings = Settings(task={"labels": ["fight", "drunken", "normal"]}, data={"split": (0.34, 0.33, 0.33)})
    result = run_eda("aihub", root, tmp_path / "eda", settings)
    text = "\n".join(result.warnings)
    assert "skipped" not in text and "cover more than" not in text and "frame count" not in text


def test_plots_of_nothing_are_still_readable(tmp_path):
    for path in (plot_class_counts([], tmp_path / "a.png"), plot_durations([], tmp_path / "b.png")):
        with Image.open(path) as im:
            assert im.format == "PNG"


def test_cli_synth_then_eda(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--videos", "2", "--seconds", "2", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "2 videos" in res.output and "01.폭행(assult)" in res.output
    res = runner.invoke(app, ["eda", "--source", "aihub", "--root", str(tmp_path / "s"), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e" / "report.md").is_file() and "EDA report" in res.output
    res = runner.invoke(app, ["eda", "--source", "aihub", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e2")])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_short_videos_and_imbalance_are_flagged():
    from bigsister_ray.data.eda import find_warnings
    from bigsister_ray.data.index import build_index_report
    from bigsister_ray.data.records import VideoRecord

    def rec(i: int, label: str, seconds: float) -> VideoRecord:
        return VideoRecord(path=f"/data/{label}/{label}{i:03d}.mp4", label=label, group=f"{label}-{i}", source="folders",
                           width=320, height=240, fps=30.0, num_frames=int(seconds * 30), duration_s=seconds)

    videos = [rec(i, "fight", 1.0) for i in range(12)] + [rec(i, "normal", 4.0) for i in range(2)]
    settings = Settings(task={"labels": ["fight", "normal"]})
    warnings = "\n".join(find_warnings(videos, [], build_index_report(videos, settings), settings))
    assert "12 video(s) are shorter than one clip (2 s)" in warnings and "fight000.mp4" in warnings
    assert "Class imbalance: **fight** has 12 clips, **normal** only 2 (6x)" in warnings
    assert "**normal** comes from only 2 group(s)" in warnings
