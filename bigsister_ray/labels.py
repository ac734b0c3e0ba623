"""The class taxonomy: AI Hub's 12 abnormal-behaviour events and ``normal``.

AI Hub dataset 171 ("이상행동 CCTV 영상") ships one folder per event, named ``NN.한글(english)`` with
its own spellings (``01.폭행(assult)``: sic). File stems carry the event as ``<event>NN`` and XML files
carry ``<eventname>``. :func:`canonical_label` turns any of these spellings into one canonical name;
:class:`Task` picks the subset a model is trained on and decides what happens to the rest.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "AIHUB_EVENTS",
    "NORMAL",
    "ALL_LABELS",
    "DEFAULT_TASK_LABELS",
    "EventClass",
    "UnknownLabelError",
    "canonical_label",
    "aihub_folder_name",
    "korean_name",
    "Task",
]

NORMAL = "normal"


@dataclass(frozen=True)
class EventClass:
    """One AI Hub event class: its number, canonical English name, Korean name and known spellings."""

    number: int
    name: str
    korean: str
    folder_english: str
    aliases: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        """The folder name as the AI Hub download spells it, e.g. ``01.폭행(assult)``."""
        return f"{self.number:02d}.{self.korean}({self.folder_english})"


AIHUB_EVENTS: tuple[EventClass, ...] = (
    EventClass(1, "assault", "폭행", "assult", ("assult", "assalut", "폭행")),
    EventClass(2, "fight", "싸움", "fight", ("fighting", "싸움", "violence", "violent")),
    EventClass(3, "burglary", "절도", "burglary", ("theft", "절도", "steal", "stealing")),
    EventClass(4, "vandalism", "기물파손", "vandalism", ("기물파손", "vandal")),
    EventClass(5, "swoon", "실신", "swoon", ("실신", "faint", "fainting")),
    EventClass(6, "wander", "배회", "wander", ("배회", "wandering", "loitering")),
    EventClass(7, "trespass", "침입", "trespass", ("침입", "intrusion", "trespassing")),
    EventClass(8, "dump", "투기", "dump", ("투기", "dumping", "littering")),
    EventClass(9, "robbery", "강도", "robbery", ("강도", "rob")),
    EventClass(10, "datefight", "데이트폭력및추행", "datefight", ("데이트폭력및추행", "date_fight", "datingviolence", "dating_violence")),
    EventClass(11, "kidnap", "납치", "kidnap", ("납치", "kidnapping")),
    EventClass(12, "drunken", "주취행동", "drunken", ("주취행동", "drunk", "drunkenness")),
)

_NORMAL_ALIASES = ("normal", "nofight", "no_fight", "no-fight", "nonfight", "non_fight", "non-fight",
                   "nonviolence", "non_violence", "nonviolent", "negative", "정상", "일반")

ALL_LABELS: tuple[str, ...] = tuple(e.name for e in AIHUB_EVENTS) + (NORMAL,)

#: The original project's five classes, plus ``normal``.
DEFAULT_TASK_LABELS: tuple[str, ...] = ("assault", "fight", "datefight", "drunken", "trespass", NORMAL)


class UnknownLabelError(ValueError):
    """A label spelling that matches no known class."""


def _key(text: str) -> str:
    text = unicodedata.normalize("NFC", text).strip().lower()
    return re.sub(r"[\s\-]+", "_", text)


_LOOKUP: dict[str, str] = {}
for _e in AIHUB_EVENTS:
    for _spelling in (_e.name, _e.korean, _e.folder_english, _e.folder, *_e.aliases):
        _LOOKUP[_key(_spelling)] = _e.name
for _spelling in _NORMAL_ALIASES:
    _LOOKUP[_key(_spelling)] = NORMAL

_FOLDER_RE = re.compile(r"^\s*\d{1,2}\s*\.\s*(?P<ko>[^()]*)\((?P<en>[^()]*)\)\s*$")
_STEM_EVENT_RE = re.compile(r"^(?P<name>[a-z_]+?)\d*$")


def canonical_label(text: str) -> str:
    """Return the canonical class name for any known spelling.

    Accepts canonical names, Korean names, AI Hub folder names (``01.폭행(assult)``), event tokens from file
    stems (``assault01``) and the usual spellings of ``normal`` (``noFight``). Raises
    :class:`UnknownLabelError` naming the spelling and the known classes otherwise.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnknownLabelError(f"expected a class name, got {text!r}")
    key = _key(text)
    if key in _LOOKUP:
        return _LOOKUP[key]
    match = _FOLDER_RE.match(unicodedata.normalize("NFC", text))
    if match:
        for part in (match["en"], match["ko"]):
            if _key(part) in _LOOKUP:
                return _LOOKUP[_key(part)]
    match = _STEM_EVENT_RE.match(key)
    if match and match["name"] in _LOOKUP:
        return _LOOKUP[match["name"]]
    raise UnknownLabelError(
        f"unknown class {text!r}: expected one of {', '.join(ALL_LABELS)} "
        "(or an AI Hub folder/Korean spelling of one)"
    )


def aihub_folder_name(label: str) -> str:
    """The AI Hub download folder for a class, e.g. ``assault`` -> ``01.폭행(assult)``."""
    name = canonical_label(label)
    for e in AIHUB_EVENTS:
        if e.name == name:
            return e.folder
    raise UnknownLabelError(f"{label!r} has no AI Hub folder (normal clips are mined, not downloaded)")


def korean_name(label: str) -> str:
    """The Korean name of a class (``정상`` for normal)."""
    name = canonical_label(label)
    for e in AIHUB_EVENTS:
        if e.name == name:
            return e.korean
    return "정상"


@dataclass(frozen=True)
class Task:
    """The classes one model is trained on, and what happens to labels outside them.

    ``labels`` is the ordered class list (index = model output). ``mapping`` sends an outside label to one
    inside (e.g. ``{"robbery": "assault"}``); any other outside label is dropped when ``unknown="drop"``, or
    an error when ``unknown="error"``.
    """

    labels: tuple[str, ...] = DEFAULT_TASK_LABELS
    mapping: tuple[tuple[str, str], ...] = ()
    unknown: str = "drop"

    def __post_init__(self) -> None:
        canon = tuple(canonical_label(x) for x in self.labels)
        if len(set(canon)) != len(canon):
            raise ValueError(f"task labels repeat a class: {list(self.labels)}")
        if len(canon) < 2:
            raise ValueError(f"a task needs at least two classes, got {list(self.labels)}")
        object.__setattr__(self, "labels", canon)
        mapping = tuple((canonical_label(a), canonical_label(b)) for a, b in self.mapping)
        for src, dst in mapping:
            if dst not in canon:
                raise ValueError(f"task mapping {src!r} -> {dst!r}: {dst!r} is not one of the task labels {list(canon)}")
        object.__setattr__(self, "mapping", mapping)
        if self.unknown not in ("drop", "error"):
            raise ValueError(f"task unknown must be 'drop' or 'error', got {self.unknown!r}")

    def resolve(self, text: str) -> str | None:
        """The task label for any spelling, or ``None`` when the class is dropped from this task."""
        name = canonical_label(text)
        if name in self.labels:
            return name
        for src, dst in self.mapping:
            if src == name:
                return dst
        if self.unknown == "error":
            raise UnknownLabelError(f"class {name!r} is not in the task {list(self.labels)} and has no mapping")
        return None

    def index(self, label: str) -> int:
        return self.labels.index(canonical_label(label))

    @property
    def abnormal(self) -> tuple[str, ...]:
        return tuple(x for x in self.labels if x != NORMAL)
