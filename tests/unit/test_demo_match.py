"""Which incident the demo takes for its camera's fight (``bigsister_ray.demo._overlaps_fight``)."""

from __future__ import annotations

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
