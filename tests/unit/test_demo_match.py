"""Which incident the demo takes for its camera's fight (``bigsister_ray.demo._overlaps_fight``), and where its
settings put its files."""

from __future__ import annotations

from pathlib import Path

from bigsister_ray.demo import FIGHT_SPAN_S, _overlaps_fight

LO, HI = FIGHT_SPAN_S


def test_an_incident_opened_during_the_fight_is_the_fight():
    assert _overlaps_fight({"start_s": LO, "peak_start_s": LO + 3}, slack_s=2.0)
    assert _overlaps_fight({"start_s": LO - 2, "peak_start_s": None}, slack_s=2.0)  # within one clip of its start


def test_an_incident_opened_early_counts_only_when_it_peaks_in_the_fight():
    # opened 7 s early on a marginal score, then carried the fight (the fresh-clone demo of 2026-11-26, 17:35)
    assert _overlaps_fight({"start_s": LO - 7, "peak_start_s": LO + 5}, slack_s=2.0)
    assert not _overlaps_fight({"start_s": LO - 7, "peak_start_s": LO - 6}, slack_s=2.0)
    assert not _overlaps_fight({"start_s": LO - 7, "peak_start_s": None}, slack_s=2.0)


def test_an_incident_after_the_fight_is_a_false_alarm():
    assert not _overlaps_fight({"start_s": HI + 1, "peak_start_s": HI + 2}, slack_s=2.0)
    assert not _overlaps_fight({"start_s": None}, slack_s=2.0)


def _paths(value, where=""):
    """Every Path in a settings dump, with where it is."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, f"{where}.{k}" if where else k)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _paths(v, f"{where}[{i}]")
    elif isinstance(value, Path):
        yield where, value


def test_the_demo_writes_every_file_under_its_own_folder(tmp_path):
    from bigsister_ray.config import Settings
    from bigsister_ray.demo import demo_settings

    settings = demo_settings(Settings(), tmp_path / "demo")
    paths = dict(_paths(settings.model_dump(mode="python")))
    assert {"incidents.media_dir", "serve.shards.journal_dir", "serve.streams.media_root"} <= set(paths)
    outside = {k: str(p) for k, p in paths.items() if not Path(p).resolve().is_relative_to(tmp_path / "demo")}
    assert outside == {}, "the demo would write these outside its folder"
    assert settings.database.url.endswith(str(tmp_path / "demo" / "bigsister.db"))
    mine = Settings(serve={"shards": {"journal_dir": str(tmp_path / "j")}})
    assert demo_settings(mine, tmp_path / "demo").serve.shards.journal_dir == tmp_path / "j"  # a user's choice stays
