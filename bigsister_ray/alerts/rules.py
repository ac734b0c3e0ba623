"""Alert rules: turn per-window class probabilities into incidents. Pure: no I/O, no clocks unless given.

One state machine per (stream, class), fed one window at a time in time order::

    idle ──k of the last n windows >= threshold, not cooling down──▶ open   (event "opened")
    open ──a window with a higher score──────────────────────────────▶ open   (event "updated": new peak)
    open ──close_after consecutive windows < threshold x ratio───────▶ idle   (event "closed"; cooldown starts)

* The threshold of a class is, first found: the rule's ``threshold``, the checkpoint's calibrated threshold
  (``thresholds``), ``alerts.default_threshold``.
* The rule of a class is, first found: the stream's override for the class, the stream's ``"*"`` override,
  ``alerts.per_class[class]``, ``alerts.default``.
* Cooldown runs in stream time (window seconds): after an incident closes at ``end_s``, no incident of the same
  class opens on that stream for a window starting before ``end_s + cooldown_s``.
* Severity: the rule's ``severity``, else ``alerts.severity[class]``, else ``"low"``.
* A window counts as a hit only while its class is watched (the rule's ``enabled``) and, when the rule has
  ``active_hours``, only when the window's time (``at``, else the clock) falls in one of them in the rule's
  ``timezone``. Outside them (or once its class is not watched) an open incident closes after ``close_after``
  windows, as if its scores had dropped.

The same engine serves live streams (:class:`RuleEngine`) and whole files (:func:`detect_events`), so
``POST /detect`` and an incident on a live camera agree.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Literal, Mapping, Sequence
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from bigsister_ray.config import AlertRule, AlertsConfig, format_validation_error, parse_hours
from bigsister_ray.errors import ConfigError
from bigsister_ray.labels import ALL_LABELS, NORMAL

__all__ = [
    "WindowScore",
    "IncidentEvent",
    "DetectedEvent",
    "ResolvedRule",
    "RuleEngine",
    "detect_events",
    "overrides_from_options",
    "MAX_TIMELINE_POINTS",
]

#: An incident keeps at most this many (time, score) points; older ones are thinned by half when exceeded.
MAX_TIMELINE_POINTS = 2000


@dataclass(frozen=True)
class WindowScore:
    """One classified window: ``scores`` maps class -> probability; times in stream seconds.

    ``at`` is the wall-clock (UTC) time of the window's end, when known (live streams); files leave it None.
    """

    start_s: float
    end_s: float
    scores: dict[str, float]
    at: datetime | None = None


@dataclass(frozen=True)
class IncidentEvent:
    """What the engine tells the incident service.

    ``key`` identifies one incident across its opened/updated/closed events (unique per engine).
    ``timeline`` holds ``(window start_s, score)`` for the windows that belong to the incident so far.
    ``started_at`` is the wall-clock time of the incident's first window (None when windows carry no ``at``
    and no clock was given).
    """

    kind: Literal["opened", "updated", "closed"]
    stream_id: str
    label: str
    severity: str
    start_s: float
    end_s: float
    peak_score: float
    peak_start_s: float
    peak_end_s: float
    timeline: list[tuple[float, float]]
    at: datetime
    key: str = ""
    started_at: datetime | None = None


@dataclass(frozen=True)
class DetectedEvent:
    """An incident found in a whole file (``POST /detect``, ``bigsister detect``)."""

    label: str
    start_s: float
    end_s: float
    peak_score: float

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


@dataclass(frozen=True)
class ResolvedRule:
    """The rule that applies to one stream and class, with its thresholds worked out."""

    label: str
    threshold: float
    close_threshold: float
    k: int
    n: int
    close_after: int
    cooldown_s: float
    severity: str
    enabled: bool = True
    active_hours: tuple[tuple[int, int], ...] = ()
    timezone: str = "UTC"

    def active_at(self, at: datetime) -> bool:
        """Whether windows at ``at`` may count as hits (watched, and within the active hours if any)."""
        if not self.enabled:
            return False
        if not self.active_hours:
            return True
        local = at.astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end if start < end else (minute >= start or minute < end)
                   for start, end in self.active_hours)


@dataclass
class _Open:
    key: str
    start_s: float
    started_at: datetime | None
    end_s: float
    peak_score: float
    peak_start_s: float
    peak_end_s: float
    timeline: list[tuple[float, float]]
    severity: str
    below: int = 0


@dataclass
class _ClassState:
    history: deque = field(default_factory=deque)  # (start_s, end_s, at, score, hit) of the last n windows
    open: _Open | None = None
    cooldown_until_s: float = -math.inf


def _score(scores: Mapping[str, float], label: str) -> float:
    value = scores.get(label, 0.0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _check_classes(keys, where: str) -> None:
    """A rule for a class that does not exist is a typo: say so instead of silently never applying it."""
    for key in keys:
        if key != "*" and key not in ALL_LABELS:
            raise ConfigError(f"{where}.{key}: unknown class {key!r}, expected one of {', '.join(ALL_LABELS)} (or '*')")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_iso(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value is not None else None


def _thin(timeline: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(timeline) <= MAX_TIMELINE_POINTS:
        return timeline
    return timeline[::2]


class RuleEngine:
    """Stateful k-of-n / hysteresis / cooldown rules over windows of many streams.

    ``labels`` is the model's class list (``normal`` is never alerted on). ``thresholds`` are the checkpoint's
    calibrated per-class thresholds. ``clock`` gives the time of events whose window has no ``at`` (default:
    ``datetime.now(timezone.utc)``). Not thread-safe: feed one stream from one thread, or lock around it.
    """

    def __init__(
        self,
        labels: Sequence[str],
        alerts: AlertsConfig,
        thresholds: Mapping[str, float] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.labels = tuple(x for x in labels if x != NORMAL)
        if not self.labels:
            raise ValueError(f"alert rules need at least one abnormal class, got labels {list(labels)}")
        self.alerts = alerts
        _check_classes(alerts.per_class, "alerts.per_class")
        _check_classes(alerts.severity, "alerts.severity")
        self.thresholds = dict(thresholds or {})
        for label, value in self.thresholds.items():
            if not (0.0 < float(value) <= 1.0):
                raise ValueError(f"checkpoint threshold for {label!r} must be in (0, 1], got {value!r}")
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._state: dict[str, dict[str, _ClassState]] = {}

    # ---- rules ---------------------------------------------------------------------------------
    def rule_for(self, label: str, overrides: Mapping[str, AlertRule] | None = None) -> ResolvedRule:
        """The rule for ``label`` on a stream with ``overrides`` (see the module docstring for the order)."""
        rule: AlertRule | None = None
        if overrides:
            rule = overrides.get(label) or overrides.get("*")
        if rule is None:
            rule = self.alerts.per_class.get(label, self.alerts.default)
        if rule.threshold is not None:
            threshold = rule.threshold
        elif label in self.thresholds:
            threshold = float(self.thresholds[label])
        else:
            threshold = self.alerts.default_threshold
        severity = rule.severity or self.alerts.severity.get(label, "low")
        return ResolvedRule(
            label=label,
            threshold=threshold,
            close_threshold=threshold * rule.close_threshold_ratio,
            k=rule.k,
            n=rule.n,
            close_after=rule.close_after,
            cooldown_s=rule.cooldown_s,
            severity=severity,
            enabled=rule.enabled,
            active_hours=tuple(h for h in (parse_hours(x) for x in rule.active_hours) if h is not None),
            timezone=rule.timezone,
        )

    # ---- feeding -------------------------------------------------------------------------------
    def update(
        self, stream_id: str, window: WindowScore, overrides: Mapping[str, AlertRule] | None = None
    ) -> list[IncidentEvent]:
        """Feed one window of ``stream_id``; return the events it causes (usually none)."""
        if not (window.end_s >= window.start_s):
            raise ValueError(f"window end_s ({window.end_s}) must be >= start_s ({window.start_s})")
        states = self._state.setdefault(stream_id, {})
        events: list[IncidentEvent] = []
        for label in self.labels:
            rule = self.rule_for(label, overrides)
            st = states.setdefault(label, _ClassState())
            score = _score(window.scores, label)
            hit = score >= rule.threshold and rule.active_at(window.at or self._clock())
            st.history.append((window.start_s, window.end_s, window.at, score, hit))
            while len(st.history) > rule.n:
                st.history.popleft()
            if st.open is None:
                ev = self._maybe_open(stream_id, label, rule, st, window)
            else:
                ev = self._continue(stream_id, label, rule, st, window, score)
            if ev is not None:
                events.append(ev)
        return events

    def flush(self, stream_id: str) -> list[IncidentEvent]:
        """Close every open incident of ``stream_id`` (end of a file, stream removed). History is kept."""
        events = []
        for label, st in self._state.get(stream_id, {}).items():
            if st.open is not None:
                events.append(self._close(stream_id, label, st.open.severity, st, self._clock(), cooldown_s=0.0))
        return events

    def reset(self, stream_id: str) -> None:
        """Forget everything about ``stream_id`` (open incidents are dropped without events)."""
        self._state.pop(stream_id, None)

    def export_state(self, stream_id: str) -> dict[str, object]:
        """``stream_id``'s rule state (k-of-n history, open incident, cooldown) as JSON-ready data.

        :meth:`import_state` on another engine (another process, after the stream moved) continues exactly
        where this one stopped: the open incident keeps its key, and the cooldown still holds.
        """
        out: dict[str, object] = {}
        for label, st in self._state.get(stream_id, {}).items():
            op = None
            if st.open is not None:
                op = asdict(st.open)
                op["started_at"] = _iso(st.open.started_at)
                op["timeline"] = [list(p) for p in st.open.timeline]
            out[label] = {
                "history": [[h[0], h[1], _iso(h[2]), h[3], h[4]] for h in st.history],
                "open": op,
                "cooldown_until_s": None if math.isinf(st.cooldown_until_s) else st.cooldown_until_s,
            }
        return out

    def import_state(self, stream_id: str, state: Mapping[str, object] | None) -> None:
        """Replace ``stream_id``'s rule state with one from :meth:`export_state` (None or {}: a fresh start).

        Raises ValueError naming the class when the state is malformed (the caller starts the stream fresh).
        """
        states: dict[str, _ClassState] = {}
        for label, raw in (state or {}).items():
            try:
                st = _ClassState()
                for h in raw["history"]:  # type: ignore[index]
                    st.history.append((float(h[0]), float(h[1]), _parse_iso(h[2]), float(h[3]), bool(h[4])))
                cooldown = raw.get("cooldown_until_s")  # type: ignore[union-attr]
                st.cooldown_until_s = -math.inf if cooldown is None else float(cooldown)
                op = raw.get("open")  # type: ignore[union-attr]
                if op is not None:
                    fields = dict(op)
                    fields["started_at"] = _parse_iso(fields.get("started_at"))
                    fields["timeline"] = [(float(t), float(v)) for t, v in fields["timeline"]]
                    st.open = _Open(**fields)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"rule state of stream {stream_id!r}, class {label!r}: {err!r}") from err
            states[str(label)] = st
        if states:
            self._state[stream_id] = states
        else:
            self._state.pop(stream_id, None)

    def open_keys(self, stream_id: str) -> list[str]:
        """Event keys of ``stream_id``'s open incidents."""
        return [st.open.key for st in self._state.get(stream_id, {}).values() if st.open is not None]

    def open_incidents(self, stream_id: str) -> list[str]:
        """Classes with an open incident on ``stream_id``."""
        return [label for label, st in self._state.get(stream_id, {}).items() if st.open is not None]

    # ---- internals -----------------------------------------------------------------------------
    def _event(self, kind, stream_id, label, severity, op: _Open, at: datetime) -> IncidentEvent:
        return IncidentEvent(
            kind=kind,
            stream_id=stream_id,
            label=label,
            severity=severity,
            start_s=op.start_s,
            end_s=op.end_s,
            peak_score=op.peak_score,
            peak_start_s=op.peak_start_s,
            peak_end_s=op.peak_end_s,
            timeline=list(op.timeline),
            at=at,
            key=op.key,
            started_at=op.started_at,
        )

    def _maybe_open(self, stream_id, label, rule: ResolvedRule, st: _ClassState, window: WindowScore):
        hits = [h for h in st.history if h[4]]
        if len(hits) < rule.k or window.start_s < st.cooldown_until_s:
            return None
        # The incident starts at its first hit among the last n windows, and its timeline holds those windows.
        first = hits[0]
        members = [h for h in st.history if h[0] >= first[0]]
        peak = max(members, key=lambda h: h[3])
        at = window.at or self._clock()
        started_at = None  # wall-clock start: the first hit's end time minus its length
        if first[2] is not None:
            started_at = first[2] - timedelta(seconds=max(0.0, first[1] - first[0]))
        elif window.at is not None:
            started_at = window.at - timedelta(seconds=max(0.0, window.end_s - first[0]))
        op = _Open(
            key=f"{stream_id}:{label}:{uuid.uuid4().hex}",
            start_s=first[0],
            started_at=started_at,
            end_s=window.end_s,
            peak_score=peak[3],
            peak_start_s=peak[0],
            peak_end_s=peak[1],
            timeline=[(h[0], h[3]) for h in members],
            severity=rule.severity,
        )
        st.open = op
        return self._event("opened", stream_id, label, rule.severity, op, at)

    def _continue(self, stream_id, label, rule: ResolvedRule, st: _ClassState, window: WindowScore, score: float):
        op = st.open
        assert op is not None
        op.timeline.append((window.start_s, score))
        op.timeline = _thin(op.timeline)
        at = window.at or self._clock()
        if score >= rule.close_threshold and rule.active_at(at):
            op.below = 0
            op.end_s = max(op.end_s, window.end_s)
        else:
            op.below += 1
            if op.below >= rule.close_after:
                return self._close(stream_id, label, rule.severity, st, at, cooldown_s=rule.cooldown_s)
        if score > op.peak_score:
            op.peak_score, op.peak_start_s, op.peak_end_s = score, window.start_s, window.end_s
            return self._event("updated", stream_id, label, rule.severity, op, at)
        return None

    def _close(self, stream_id, label, severity, st: _ClassState, at: datetime, *, cooldown_s: float):
        op = st.open
        assert op is not None
        st.open = None
        st.cooldown_until_s = op.end_s + cooldown_s
        # A closed incident's windows never count towards the next one.
        st.history.clear()
        return self._event("closed", stream_id, label, severity, op, at)


def detect_events(
    windows: Sequence[WindowScore],
    labels: Sequence[str],
    alerts: AlertsConfig,
    thresholds: Mapping[str, float] | None = None,
) -> list[DetectedEvent]:
    """Apply the live rules to a whole file's windows (sorted by start) and return its incidents in order."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    engine = RuleEngine(labels, alerts, thresholds, clock=lambda: epoch)
    closed: list[IncidentEvent] = []
    stream = "detect"
    for window in sorted(windows, key=lambda w: (w.start_s, w.end_s)):
        closed.extend(e for e in engine.update(stream, window) if e.kind == "closed")
    closed.extend(engine.flush(stream))
    closed.sort(key=lambda e: (e.start_s, e.label))
    return [DetectedEvent(e.label, e.start_s, e.end_s, e.peak_score) for e in closed]


def overrides_from_options(options: Mapping[str, object] | None, where: str = "stream options") -> dict[str, AlertRule]:
    """Per-stream rule overrides from a stream's ``options``: ``{"alerts": {"fight": {"k": 2, "n": 3}, "*": {...}}}``.

    Each entry is a full :class:`AlertRule` (unset fields take AlertRule's defaults). Raises ConfigError naming
    the class and key when an entry is invalid.
    """
    if not options:
        return {}
    raw = options.get("alerts")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: alerts must map a class (or '*') to a rule, got {type(raw).__name__}")
    _check_classes(raw, f"{where}: alerts")
    out: dict[str, AlertRule] = {}
    for label, rule in raw.items():
        try:
            out[str(label)] = rule if isinstance(rule, AlertRule) else AlertRule.model_validate(rule)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, f"{where}: alerts.{label}")) from err
    return out
