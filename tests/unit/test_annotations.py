"""AI Hub XML parsing: the real annotation, every trap of FORMAT.md, unsafe and broken files."""

from __future__ import annotations

import pytest

from bigsister_ray.data.annotations import merge_ranges, parse_aihub_bytes, parse_aihub_xml, parse_time
from bigsister_ray.errors import AnnotationError
from tests._media import aihub_xml
from tests.conftest import AIHUB_FIXTURE, need_shared


def test_real_annotation_parses_to_seconds_and_merged_actions():
    xml = need_shared(AIHUB_FIXTURE / "101-3_cam01_swoon01_place03_day_summer.xml")
    ann = parse_aihub_xml(xml)
    assert ann.folder == "swoon" and ann.filename == "101-3_cam01_swoon01_place03_day_summer.mp4"
    assert (ann.width, ann.height, ann.fps, ann.num_frames) == (3840, 2160, 30.0, 9337)
    assert ann.duration_s == pytest.approx(311.2)
    # starttime 00:01:50.9 plus a duration (a length) of 00:00:26.2
    assert ann.event.name == "swoon"
    assert ann.event.start_s == pytest.approx(110.9) and ann.event.end_s == pytest.approx(137.1)
    by_name = {a.name: a for a in ann.actions}
    assert by_name["totter"].frames == ((3330, 3735),)
    # two touching falldown ranges (3735-3809, 3809-4111) merge into one
    assert by_name["falldown"].frames == ((3735, 4111),)
    assert by_name["falldown"].seconds[0] == pytest.approx((3735 / 30, 4111 / 30))
    assert ann.header["location"] == "PLACE03"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:01:50.9", 110.9), ("00:05:11.2", 311.2), ("01:02:03.5", 3723.5), ("01:50.9", 110.9), ("2.25", 2.25),
     (" 00:00:00.2 ", 0.2), ("0:0:7", 7.0)],
)
def test_parse_time_keeps_fractions(text, seconds):
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "00:61:00.0", "-3", "1:2:3:4"])
def test_parse_time_rejects_garbage(text):
    with pytest.raises(ValueError, match="expected"):
        parse_time(text)


def test_merge_ranges_sorts_merges_clamps():
    assert merge_ranges([(50, 60), (10, 20), (20, 30), (25, 28), (90, 120)], num_frames=100) == [(10, 30), (50, 60), (90, 100)]
    assert merge_ranges([(30, 10)]) == [(10, 30)]  # reversed range
    assert merge_ranges([(150, 160), (-5, 3)], num_frames=100) == [(0, 3)]  # past the end: dropped
    assert merge_ranges([]) == []


def test_traps_zero_frames_odd_objectnames_and_spaced_action_names(tmp_path):
    xml = aihub_xml(tmp_path / "12-2_cam02_fight01_place09_day_summer.xml", frames="0", duration="00:00:06.0",
                    objectname="Person01", actions={"stop  and go": [(40, 60), (5, 15), (15, 20)], "kicking": [(55, 9999)], "falldown": [(61, 70)]})
    ann = parse_aihub_xml(xml)
    assert ann.num_frames is None  # 0 means unknown
    assert ann.duration_s == pytest.approx(6.0)
    by_name = {a.name: a for a in ann.actions}
    assert set(by_name) == {"stop and go", "kicking"}
    assert by_name["stop and go"].frames == ((5, 20), (40, 60))
    assert by_name["stop and go"].person == "Person01"
    assert by_name["kicking"].frames == ((55, 60),)  # clamped to 6 s x 10 fps = 60 frames
    # a range wholly past the end localises nothing: "falldown" is absent


def test_negative_frames_fall_back_to_duration_and_event_is_clamped(tmp_path):
    xml = aihub_xml(tmp_path / "a.xml", frames="-1", duration="00:00:04.0", start="00:00:03.0", length="00:00:05.0")
    ann = parse_aihub_xml(xml)
    assert ann.num_frames is None
    assert ann.event.start_s == pytest.approx(3.0) and ann.event.end_s == pytest.approx(4.0)


def test_action_past_the_end_is_clamped_to_frame_count(tmp_path):
    ann = parse_aihub_xml(aihub_xml(tmp_path / "a.xml", frames="60", actions={"punching": [(50, 60), (55, 70)]}))
    assert ann.actions[0].frames == ((50, 60),)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [("eventname", {"event": None}), ("starttime", {"start": None}), ("duration", {"length": None}),
     ("fps", {"fps": None})],
)
def test_missing_fields_name_the_field_and_file(tmp_path, field, kwargs):
    xml = aihub_xml(tmp_path / "broken.xml", **kwargs)
    with pytest.raises(AnnotationError, match=rf"broken\.xml: missing field .*{field}"):
        parse_aihub_xml(xml)


def test_missing_event_element(tmp_path):
    xml = aihub_xml(tmp_path / "noevent.xml", event=None, start=None, length=None)
    with pytest.raises(AnnotationError, match="missing field annotation/event"):
        parse_aihub_xml(xml)


def test_bad_fps_is_explained(tmp_path):
    with pytest.raises(AnnotationError, match="header/fps: expected a positive number, got '0'"):
        parse_aihub_xml(aihub_xml(tmp_path / "a.xml", fps="0"))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation><folder>&lol3;</folder></annotation>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><annotation><folder>&xxe;</folder></annotation>"""


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, EXTERNAL])
def test_entity_expansion_and_external_entities_are_refused(payload):
    with pytest.raises(AnnotationError, match="refused unsafe XML"):
        parse_aihub_bytes(payload, "evil.xml")


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "empty annotation"), (b"<annotation><header>", "not well-formed"), (b"<root/>", "expected a root element <annotation>"),
     (b"\xff\xfe garbage", "not well-formed")],
)
def test_unreadable_xml(payload, message):
    with pytest.raises(AnnotationError, match=message):
        parse_aihub_bytes(payload, "x.xml")


def test_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="cannot read annotation"):
        parse_aihub_xml(tmp_path / "nope.xml")
