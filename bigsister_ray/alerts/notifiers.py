"""Notifiers: where an incident's alert goes. Slack (Web API, :mod:`bigsister_ray.alerts.slack`), an incoming
webhook (text only), the console.

Every notifier raises :class:`~bigsister_ray.errors.AlertDeliveryError` on failure, with ``retryable`` saying
whether trying again can help (a rate limit, a 5xx, a dropped connection) or not (``invalid_auth``,
``channel_not_found``, ``not_in_channel``: an operator must fix the config) and ``reason`` a short code.

Secrets (the bot token, the webhook URL) never appear in reprs, exception messages or logs: the slack-sdk
clients log through a logger that masks them. What an alert says and how user strings are kept inert is in
:mod:`bigsister_ray.alerts.message`; the names defined there and in :mod:`bigsister_ray.alerts.slack` are
importable from here too.

An incoming webhook has no history to ask: a response lost on the way back can repeat a webhook message.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

from pydantic import SecretStr

from bigsister_ray.alerts.links import LinkSigner
from bigsister_ray.alerts.message import Delivery, IncidentAlert, escape_mrkdwn, incident_link, one_line, slack_url
from bigsister_ray.alerts.slack import (
    METADATA_EVENT,
    NON_RETRYABLE_SLACK_ERRORS,
    AmbiguousDeliveryError,
    SlackNotifier,
    _masked_logger,
    _retry_handlers,
    _slack_error,
)
from bigsister_ray.config import Settings
from bigsister_ray.errors import AlertDeliveryError, ConfigError

__all__ = [
    "IncidentAlert",
    "Delivery",
    "Notifier",
    "SlackNotifier",
    "WebhookNotifier",
    "ConsoleNotifier",
    "make_notifier",
    "NON_RETRYABLE_SLACK_ERRORS",
    "incident_link",
    "METADATA_EVENT",
    "AmbiguousDeliveryError",
    "escape_mrkdwn",
    "one_line",
    "slack_url",
]


@runtime_checkable
class Notifier(Protocol):
    """Sends alerts. ``channel`` keys the per-channel message cap (None: no cap key)."""

    name: str
    channel: str | None

    def send_incident(self, alert: IncidentAlert) -> Delivery:
        """Send the alert for a new incident; raise AlertDeliveryError on failure."""
        ...

    def send_close(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        """Say that the incident closed (Slack: a reply in the alert's thread)."""
        ...

    def send_clip(self, alert: IncidentAlert, ref: Delivery, clip: Path) -> Delivery:
        """Deliver the evidence clip ``clip`` (Slack: uploaded into the alert's thread)."""
        ...

    def update_message(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        """Show the incident's new review status (``alert.status``, ``alert.acted_by``): Slack edits the alert."""
        ...


class WebhookNotifier:
    """A Slack incoming webhook: text only, no threads, no pictures."""

    name = "webhook"

    def __init__(self, url: SecretStr | str, *, timeout_s: float = 10.0, max_retries: int = 3,
                 links: LinkSigner | None = None) -> None:
        from slack_sdk.webhook import WebhookClient

        secret = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
        if not secret.startswith(("http://", "https://")):
            raise ConfigError("alerts.webhook.url: expected an http(s) incoming-webhook URL")
        self.channel = "webhook"
        self.links = links
        self._secrets = [secret]
        self._client = WebhookClient(secret, timeout=int(max(1, round(timeout_s))), retry_handlers=_retry_handlers(max_retries),
                                     logger=_masked_logger("bigsister_ray.alerts.webhook_sdk", self._secrets))

    @classmethod
    def from_settings(cls, settings: Settings) -> "WebhookNotifier":
        cfg = settings.alerts.webhook
        if cfg.url is None:
            raise ConfigError("alerts.webhook.url: set the incoming-webhook URL for the webhook notifier")
        return cls(cfg.url, timeout_s=cfg.timeout_s, max_retries=settings.alerts.slack.max_retries,
                   links=LinkSigner.from_settings(settings))

    def __repr__(self) -> str:
        return "WebhookNotifier(url='***')"

    __str__ = __repr__

    def __reduce__(self):  # noqa: D105
        raise TypeError("WebhookNotifier is not picklable (its URL is a secret); build it with from_settings")

    def _send(self, text: str, what: str) -> None:
        try:
            resp = self._client.send(text=text)
        except Exception as err:  # network errors, classified
            raise _slack_error(err, what, self._secrets) from None
        if resp.status_code == 200:
            return
        body = (resp.body or "").strip()
        if resp.status_code == 429 or resp.status_code >= 500:
            retry_after = None
            if resp.status_code == 429:
                try:
                    retry_after = float((resp.headers or {}).get("Retry-After", ["1"])[0])
                except (TypeError, ValueError, IndexError, KeyError):
                    retry_after = 1.0
            raise AlertDeliveryError(f"{what}: webhook answered HTTP {resp.status_code}", retryable=True,
                                     reason=body or f"http_{resp.status_code}", retry_after_s=retry_after)
        raise AlertDeliveryError(f"{what}: webhook refused with HTTP {resp.status_code} {body!r} (check alerts.webhook.url)",
                                 retryable=False, reason=body or f"http_{resp.status_code}")

    def _linked(self, alert: IncidentAlert) -> IncidentAlert:
        return alert if self.links is None else replace(alert, link=self.links.incident_url(alert.incident_id))

    def send_incident(self, alert: IncidentAlert) -> Delivery:
        self._send(self._linked(alert).slack_text(), f"webhook alert for incident {alert.incident_id}")
        return Delivery(self.name, channel=self.channel)

    def send_close(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        self._send(self._linked(alert).slack_close_text(), f"webhook close for incident {alert.incident_id}")
        return Delivery(self.name, channel=self.channel)

    def send_clip(self, alert: IncidentAlert, ref: Delivery, clip: Path) -> Delivery:
        """An incoming webhook cannot carry files: nothing is sent (the clip is on the incident's page)."""
        return Delivery(self.name, channel=self.channel, note="skipped: an incoming webhook cannot carry files")

    def update_message(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        """A webhook cannot edit what it sent: the new status goes out as one more line."""
        alert = self._linked(alert)
        line = escape_mrkdwn(alert.status_line() or alert.status)
        self._send(f"Incident #{alert.incident_id}: {line}. {slack_url(alert.link)}", f"webhook update for incident {alert.incident_id}")
        return Delivery(self.name, channel=self.channel)


class ConsoleNotifier:
    """Prints one JSON line per alert and appends it to ``alert_file`` (JSONL) when set. For local use."""

    name = "console"

    def __init__(self, alert_file: Path | None = None, stream: TextIO | None = None) -> None:
        self.alert_file = Path(alert_file) if alert_file is not None else None
        self.channel = "console"
        self._stream = stream
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConsoleNotifier":
        return cls(settings.alerts.alert_file)

    def __repr__(self) -> str:
        return f"ConsoleNotifier(alert_file={str(self.alert_file) if self.alert_file else None!r})"

    def _emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            print(line, file=self._stream or sys.stdout, flush=True)
            if self.alert_file is not None:
                try:
                    self.alert_file.parent.mkdir(parents=True, exist_ok=True)
                    with self.alert_file.open("a", encoding="utf-8") as fh:
                        fh.write(line + "\n")
                except OSError as err:
                    raise AlertDeliveryError(f"console alert: cannot append to {self.alert_file}: {err.strerror or err}",
                                             retryable=True, reason="alert_file_unwritable") from err

    def _record(self, event: str, alert: IncidentAlert) -> dict[str, Any]:
        return {"event": event, "incident_id": alert.incident_id, "label": alert.label, "severity": alert.severity,
                "stream_id": alert.stream_id, "camera": alert.stream_name, "location": alert.location,
                "started_at": alert.started_at.isoformat(), "ended_at": alert.ended_at.isoformat() if alert.ended_at else None,
                "peak_score": round(alert.peak_score, 4), "link": alert.link, "status": alert.status,
                "has_snapshot": alert.snapshot_jpeg is not None, "text": alert.fallback_text() if event == "incident" else alert.close_text()}

    def send_incident(self, alert: IncidentAlert) -> Delivery:
        self._emit(self._record("incident", alert))
        return Delivery(self.name, channel=self.channel, ts=f"console-{alert.incident_id}")

    def send_close(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        self._emit(self._record("incident_closed", alert))
        return Delivery(self.name, channel=self.channel, ts=ref.ts)

    def send_clip(self, alert: IncidentAlert, ref: Delivery, clip: Path) -> Delivery:
        self._emit({"event": "incident_clip", "incident_id": alert.incident_id, "clip": str(clip)})
        return Delivery(self.name, channel=self.channel, ts=ref.ts)

    def update_message(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        self._emit({"event": "incident_status", "incident_id": alert.incident_id, "status": alert.status,
                    "acted_by": alert.acted_by, "text": alert.status_line()})
        return Delivery(self.name, channel=self.channel, ts=ref.ts)


def make_notifier(settings: Settings) -> Notifier:
    """The notifier ``settings.alerts.notifier`` names (``auto``: Slack with a token and channel, else console)."""
    alerts = settings.alerts
    kind = alerts.notifier
    if kind == "auto":
        has_token = alerts.slack.token is not None or alerts.slack.token_file is not None
        kind = "slack" if has_token and alerts.slack.channel else ("webhook" if alerts.webhook.url is not None else "console")
    if kind == "slack":
        return SlackNotifier.from_settings(settings)
    if kind == "webhook":
        return WebhookNotifier.from_settings(settings)
    return ConsoleNotifier.from_settings(settings)
