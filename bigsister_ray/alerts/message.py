"""What an alert says: :class:`IncidentAlert` (one incident as notifiers show it), :class:`Delivery` (where a
message went) and the text helpers that keep user strings inert in Slack.

Every string a user or a config file controls (camera name, location, class label, stream id, URLs) reaches
Slack inert: it cannot mention (``<!channel>``, ``<@U..>``, ``@here``), link (``<https://x|text>``) or format
(``*bold*``, ``_italic_``, ``~strike~``, `` `code` ``). In mrkdwn text :func:`escape_mrkdwn` escapes ``&``, ``<``
and ``>`` as Slack asks and swaps the formatting characters for look-alikes that Slack does not parse (a
zero-width character next to them is no defence: Slack reads zero-width spaces as word boundaries, which is what
lets formatting start mid-word); headers and the context line are ``plain_text``, which Slack never parses; every
such string is one line (control characters and line separators become spaces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from bigsister_ray.alerts.links import incident_page_path

__all__ = ["IncidentAlert", "Delivery", "incident_link", "escape_mrkdwn", "one_line", "slack_url", "STATUS_TEXT"]

# ---- Slack-safe text ------------------------------------------------------------------------------
#: Control characters, line and paragraph separators (one line each) and bidi overrides (removed).
_CONTROL = {**{c: " " for c in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]},
            **{c: None for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}}
#: Slack's formatting characters and the look-alikes shown instead (Slack parses only the ASCII ones).
_FORMATTING = {ord("*"): "\u2217", ord("_"): "\u02cd", ord("~"): "\u223c", ord("`"): "\u02cb"}
_BROADCAST = re.compile(r"@(?=(?:channel|here|everyone|group)\b)", re.IGNORECASE)


def one_line(text: object) -> str:
    """``text`` on one line: control characters and line separators become spaces, bidi overrides go."""
    return str(text).translate(_CONTROL)


def escape_mrkdwn(text: object) -> str:
    """``text`` shown literally in Slack mrkdwn: no mention, link or formatting can come alive in it.

    ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;`` and ``&gt;`` (so ``<!channel>``, ``<@U123>``, ``<#C123>`` and
    ``<https://x|text>`` are text), the formatting characters (asterisk, underscore, tilde, backtick) become
    look-alikes Slack does not format, a word joiner follows ``@`` in ``@channel``/``@here``/``@everyone``, and
    the text is made one line.
    """
    s = one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").translate(_FORMATTING)
    return _BROADCAST.sub("@\u2060", s)


def slack_url(url: str) -> str:
    """A URL fit for Slack text and its ``<url|label>`` syntax: escaped, no ``|`` or whitespace to end it early."""
    url = re.sub(r"\s", lambda m: f"%{ord(m.group(0)):02X}", one_line(url)).replace("|", "%7C")
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E")


def incident_link(public_url: str, incident_id: int) -> str:
    """The incident's page in the console (``serve.public_url`` + ``/ui/incidents/{id}``), unsigned; notifiers
    sign it with :class:`~bigsister_ray.alerts.links.LinkSigner` when a link key is set."""
    return public_url.rstrip("/") + incident_page_path(incident_id)


#: How a review status reads in a message.
STATUS_TEXT = {"open": "Open", "acknowledged": "Acknowledged", "false_alarm": "False alarm", "resolved": "Resolved"}


@dataclass(frozen=True)
class IncidentAlert:
    """Everything a notifier shows about one incident."""

    incident_id: int
    label: str
    severity: str
    stream_id: str
    stream_name: str
    location: str | None
    started_at: datetime
    ended_at: datetime | None
    start_s: float
    end_s: float
    peak_score: float
    link: str
    status: str = "open"
    snapshot_jpeg: bytes | None = None
    acted_by: str | None = None
    acted_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any, public_url: str, last_action: Any = None) -> "IncidentAlert":
        """From an ``Incident`` row (or anything with its attributes); ``last_action`` (an audit row with ``actor``
        and ``at``) says who set the current status."""
        return cls(
            incident_id=int(row.id), label=row.label, severity=row.severity, stream_id=row.stream_id,
            stream_name=row.stream_name or row.stream_id, location=row.location, started_at=row.started_at,
            ended_at=row.ended_at, start_s=row.start_s, end_s=row.end_s, peak_score=row.peak_score,
            link=incident_link(public_url, int(row.id)), status=row.status, snapshot_jpeg=getattr(row, "snapshot", None),
            acted_by=getattr(last_action, "actor", None), acted_at=getattr(last_action, "at", None),
        )

    def __repr__(self) -> str:  # keep snapshot bytes out of logs
        return (f"IncidentAlert(id={self.incident_id}, label={self.label!r}, stream={self.stream_name!r}, "
                f"peak={self.peak_score:.3f}, snapshot={'yes' if self.snapshot_jpeg else 'no'})")

    def when(self) -> str:
        return self.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    def status_line(self) -> str | None:
        """``Acknowledged by slack:U1 (ana) at 09:31:02 UTC`` once someone acted (plain text, one line; an open
        incident someone acted on was reopened); else None."""
        if self.status == "open" and self.acted_by is None:
            return None
        line = "Reopened" if self.status == "open" else STATUS_TEXT.get(self.status, self.status)
        if self.acted_by:
            line += f" by {self.acted_by}"
        if self.acted_at is not None:
            line += " at " + self.acted_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return one_line(line)

    def camera(self) -> str:
        return f"{self.stream_name} ({self.location})" if self.location else self.stream_name

    def fallback_text(self) -> str:
        """The plain-text version (the console, logs); :meth:`slack_text` is the one for chat."""
        return self._alert_text(str, str)

    def close_text(self) -> str:
        """The plain-text closing note; :meth:`slack_close_text` is the one for chat."""
        return self._close_text(str, str)

    def slack_text(self) -> str:
        """The text of the alert for Slack (notifications, screen readers, clients without Block Kit), escaped."""
        return self._alert_text(escape_mrkdwn, slack_url)

    def slack_close_text(self) -> str:
        """The closing note for Slack, escaped."""
        return self._close_text(escape_mrkdwn, slack_url)

    def _alert_text(self, text: Callable[[Any], str], url: Callable[[str], str]) -> str:
        camera = f"{text(self.stream_name)} ({text(self.location)})" if self.location else text(self.stream_name)
        return (f"[{text(self.severity.upper())}] {text(self.label)} on {camera} at {self.when()}, "
                f"peak score {self.peak_score:.2f} - incident #{self.incident_id}: {url(self.link)}")

    def _close_text(self, text: Callable[[Any], str], url: Callable[[str], str]) -> str:
        dur = max(0.0, self.end_s - self.start_s)
        ended = self.ended_at.astimezone(timezone.utc).strftime("%H:%M:%S UTC") if self.ended_at else "now"
        return (f"Incident #{self.incident_id} closed at {ended}: {text(self.label)} lasted {dur:.0f} s, "
                f"peak score {self.peak_score:.2f}. Review status: {text(self.status)}. {url(self.link)}")


@dataclass(frozen=True)
class Delivery:
    """Where a message went: ``channel`` and ``ts`` identify a Slack message (the thread for replies)."""

    notifier: str
    channel: str | None = None
    ts: str | None = None
    note: str | None = None

