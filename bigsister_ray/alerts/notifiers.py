"""Notifiers: where an incident's alert goes. Slack (Web API), an incoming webhook (text only), the console.

Every notifier raises :class:`~bigsister_ray.errors.AlertDeliveryError` on failure, with ``retryable`` saying
whether trying again can help (a rate limit, a 5xx, a dropped connection) or not (``invalid_auth``,
``channel_not_found``, ``not_in_channel``: an operator must fix the config) and ``reason`` a short code.

Secrets (the bot token, the webhook URL) never appear in reprs, exception messages or logs: the slack-sdk
clients log through a logger that masks them.

Every string a user or a config file controls (camera name, location, class label, stream id, URLs) reaches
Slack inert: it cannot mention (``<!channel>``, ``<@U..>``, ``@here``), link (``<https://x|text>``) or format
(``*bold*``, ``_italic_``, ``~strike~``, `` `code` ``). In mrkdwn text :func:`escape_mrkdwn` escapes ``&``, ``<``
and ``>`` as Slack asks and swaps the formatting characters for look-alikes that Slack does not parse (a
zero-width character next to them is no defence: Slack reads zero-width spaces as word boundaries, which is what
lets formatting start mid-word); headers and the context line are ``plain_text``, which Slack never parses; every
such string is one line (control characters and line separators become spaces).

Exactly once: Slack messages carry metadata (``bigsister_incident``, incident id, alert|close), a post whose
connection broke after the request left raises :class:`AmbiguousDeliveryError`, and ``find_sent`` looks the
message up before anything is posted again. An incoming webhook has no history to ask: a response lost on
the way back can repeat a webhook message.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import sys
import threading
import urllib.error
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, TextIO, runtime_checkable

from pydantic import SecretStr

from bigsister_ray.errors import AlertDeliveryError, ConfigError
from bigsister_ray.security.redact import safe_log

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
]

log = logging.getLogger(__name__)

#: Slack errors that no retry can fix: the alert is marked failed with the reason.
NON_RETRYABLE_SLACK_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission",
    "missing_scope", "channel_not_found", "not_in_channel", "is_archived", "restricted_action",
    "invalid_blocks", "invalid_blocks_format", "invalid_arguments", "msg_too_long", "no_text",
    "org_login_required", "ekm_access_denied", "team_access_not_granted", "invalid_token", "no_service",
    "no_service_id", "no_team", "channel_is_archived", "action_prohibited", "posting_to_general_channel_denied",
})

_CONNECTION_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException, OSError)


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


def _slack_url(url: str) -> str:
    """A URL fit for Slack text and its ``<url|label>`` syntax: escaped, no ``|`` or whitespace to end it early."""
    url = re.sub(r"\s", lambda m: f"%{ord(m.group(0)):02X}", one_line(url)).replace("|", "%7C")
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E")


def incident_link(public_url: str, incident_id: int) -> str:
    """The incident's URL in the API (``serve.public_url`` + ``/incidents/{id}``)."""
    return f"{public_url.rstrip('/')}/incidents/{incident_id}"


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

    @classmethod
    def from_row(cls, row: Any, public_url: str) -> "IncidentAlert":
        """From an ``Incident`` row (or anything with its attributes)."""
        return cls(
            incident_id=int(row.id), label=row.label, severity=row.severity, stream_id=row.stream_id,
            stream_name=row.stream_name or row.stream_id, location=row.location, started_at=row.started_at,
            ended_at=row.ended_at, start_s=row.start_s, end_s=row.end_s, peak_score=row.peak_score,
            link=incident_link(public_url, int(row.id)), status=row.status, snapshot_jpeg=row.snapshot,
        )

    def __repr__(self) -> str:  # keep snapshot bytes out of logs
        return (f"IncidentAlert(id={self.incident_id}, label={self.label!r}, stream={self.stream_name!r}, "
                f"peak={self.peak_score:.3f}, snapshot={'yes' if self.snapshot_jpeg else 'no'})")

    def when(self) -> str:
        return self.started_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

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
        return self._alert_text(escape_mrkdwn, _slack_url)

    def slack_close_text(self) -> str:
        """The closing note for Slack, escaped."""
        return self._close_text(escape_mrkdwn, _slack_url)

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


class _MaskSecrets(logging.Filter):
    """Replace secret strings in a record's message before any handler sees it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = msg
        for s in self._secrets:
            masked = masked.replace(s, "***")
        if masked != msg:
            record.msg, record.args = masked, ()
        return True


def _masked_logger(name: str, secrets: list[str]) -> logging.Logger:
    logger = logging.getLogger(name)
    for f in list(logger.filters):
        if isinstance(f, _MaskSecrets):
            logger.removeFilter(f)
    logger.addFilter(_MaskSecrets(secrets))
    return logger


class AmbiguousDeliveryError(AlertDeliveryError):
    """The request may have reached Slack (the connection broke after it was sent): before sending again,
    check whether the message is out (``SlackNotifier.find_sent``)."""


def _not_sent(error: BaseException | None) -> bool:
    """True when a connection error proves the request never left (refused, unresolvable host)."""
    reason = getattr(error, "reason", None)
    return isinstance(error, urllib.error.URLError) and isinstance(reason, (ConnectionRefusedError, socket.gaierror))


def _retry_handlers(max_retries: int, *, posting: bool = False) -> list[Any]:
    """slack-sdk's retry handlers: rate limits (honouring Retry-After), connection errors, server errors.

    ``posting``: for chat.postMessage, connection errors are retried only when the request never left
    (refused, DNS); a connection that broke after the request was sent may have posted the message, and
    retrying blindly would post it twice, so the incident service checks the channel first instead.
    """
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    class _NotSentConnectionErrorRetryHandler(ConnectionErrorRetryHandler):
        def _can_retry(self, *, state, request, response=None, error=None) -> bool:  # noqa: ANN001
            return response is None and _not_sent(error) and super()._can_retry(state=state, request=request, response=response, error=error)

    connection = (_NotSentConnectionErrorRetryHandler if posting else ConnectionErrorRetryHandler)(max_retry_count=max_retries)
    return [
        RateLimitErrorRetryHandler(max_retry_count=max_retries),  # honours Retry-After
        connection,
        ServerErrorRetryHandler(max_retry_count=max_retries),
    ]


def _slack_error(err: BaseException, what: str, secrets: list[str], *, ambiguous: bool = False) -> AlertDeliveryError:
    """Classify a slack-sdk or network error (``ambiguous``: it happened while posting a message)."""
    from slack_sdk.errors import SlackApiError, SlackRequestError

    def clean(text: str) -> str:
        for s in secrets:
            if s:
                text = text.replace(s, "***")
        return text

    if isinstance(err, SlackApiError):
        resp = err.response
        status = getattr(resp, "status_code", None)
        code = None
        try:
            code = resp.get("error") if resp is not None else None
        except (AttributeError, TypeError, ValueError):
            code = None
        retry_after = None
        if status == 429:
            try:
                retry_after = float(resp.headers.get("Retry-After", resp.headers.get("retry-after", 1)))
            except (TypeError, ValueError, AttributeError):
                retry_after = 1.0
            return AlertDeliveryError(f"{what}: rate limited by Slack (429), retry after {retry_after:.0f} s",
                                      retryable=True, reason="ratelimited", retry_after_s=retry_after)
        if status is not None and status >= 500:
            return AlertDeliveryError(f"{what}: Slack answered HTTP {status}", retryable=True, reason=f"http_{status}")
        if code in NON_RETRYABLE_SLACK_ERRORS:
            hint = {
                "invalid_auth": "check alerts.slack.token / token_file",
                "not_authed": "set alerts.slack.token or token_file",
                "channel_not_found": "check alerts.slack.channel",
                "not_in_channel": "invite the bot to the channel (/invite @bot)",
            }.get(code, "fix the Slack configuration")
            return AlertDeliveryError(f"{what}: Slack refused with {code!r} ({hint})", retryable=False, reason=code)
        reason = code or (f"http_{status}" if status else "slack_error")
        return AlertDeliveryError(f"{what}: Slack error {reason!r}", retryable=True, reason=reason)
    if isinstance(err, SlackRequestError):
        return AlertDeliveryError(f"{what}: {clean(str(err))}", retryable=True, reason="request_error")
    if isinstance(err, _CONNECTION_ERRORS) and ambiguous and not _not_sent(err):
        return AmbiguousDeliveryError(f"{what}: the connection to Slack broke after the request was sent: "
                                      f"{clean(type(err).__name__ + ': ' + str(err))}", retryable=True, reason="connection_lost")
    if isinstance(err, _CONNECTION_ERRORS):
        return AlertDeliveryError(f"{what}: cannot reach Slack: {clean(type(err).__name__ + ': ' + str(err))}",
                                  retryable=True, reason="connection_error")
    return AlertDeliveryError(f"{what}: {type(err).__name__}: {clean(str(err))}", retryable=True, reason=type(err).__name__)


#: Slack message metadata event type marking our messages (lets a restarted sender find what it already sent).
METADATA_EVENT = "bigsister_incident"


def _metadata(alert: IncidentAlert, kind: str) -> dict[str, Any]:
    return {"event_type": METADATA_EVENT, "event_payload": {"incident_id": alert.incident_id, "kind": kind}}


def _looks_like_channel_id(channel: str) -> bool:
    return len(channel) >= 9 and channel[0] in "CGD" and channel.isalnum() and channel.isupper()


class SlackNotifier:
    """Posts a Block Kit message per incident, uploads the snapshot into its thread, replies when it closes."""

    name = "slack"

    def __init__(
        self,
        token: SecretStr | str,
        channel: str,
        *,
        base_url: str = "https://slack.com/api/",
        timeout_s: float = 10.0,
        max_retries: int = 3,
    ) -> None:
        from slack_sdk import WebClient

        secret = token.get_secret_value() if isinstance(token, SecretStr) else str(token)
        if not secret:
            raise ConfigError("alerts.slack.token: the Slack notifier needs a bot token (token or token_file)")
        if not channel:
            raise ConfigError("alerts.slack.channel: the Slack notifier needs a channel id or name")
        self.channel = channel
        self.channel_id: str | None = channel if _looks_like_channel_id(channel) else None
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._secrets = [secret]
        common = dict(token=secret, base_url=self.base_url, timeout=int(max(1, round(timeout_s))),
                      logger=_masked_logger("bigsister_ray.alerts.slack_sdk", self._secrets))
        self._post_client = WebClient(retry_handlers=_retry_handlers(max_retries, posting=True), **common)  # chat.postMessage
        self._client = WebClient(retry_handlers=_retry_handlers(max_retries), **common)  # everything else
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> "SlackNotifier":
        cfg = settings.alerts.slack
        token = cfg.resolved_token()
        if token is None:
            raise ConfigError("alerts.slack: set token, token_file or BIGSISTER_ALERTS__SLACK__TOKEN for the Slack notifier")
        return cls(token, cfg.channel or "", base_url=cfg.base_url, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries)

    def __repr__(self) -> str:
        return f"SlackNotifier(channel={self.channel!r}, base_url={self.base_url!r})"

    __str__ = __repr__

    def __reduce__(self):  # noqa: D105 - pickling would copy the token somewhere we cannot see
        raise TypeError("SlackNotifier is not picklable (it holds a token); build it where it is used with from_settings")

    # ---- messages ------------------------------------------------------------------------------
    @staticmethod
    def blocks(alert: IncidentAlert) -> list[dict[str, Any]]:
        """The Block Kit layout of an incident alert. User strings are escaped mrkdwn or plain_text."""
        ts = int(alert.started_at.timestamp())

        def field(name: str, value: str) -> dict[str, Any]:
            return {"type": "mrkdwn", "text": f"*{name}:*\n{value}", "verbatim": True}

        fields = [
            field("Class", escape_mrkdwn(alert.label)),
            field("Severity", escape_mrkdwn(alert.severity)),
            field("Camera", escape_mrkdwn(alert.stream_name)),
            field("Location", escape_mrkdwn(alert.location or "-")),
            field("Time", f"<!date^{ts}^{{date_short_pretty}} {{time_secs}}|{alert.when()}>"),
            field("Peak score", f"{alert.peak_score:.2f}"),
        ]
        header = one_line(f"{alert.label.capitalize()} on {alert.stream_name}")[:150]
        return [
            {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": False}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{_slack_url(alert.link)}|Incident #{alert.incident_id}>",
                                         "verbatim": True},
             "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Open incident"}, "url": alert.link,
                           "action_id": "open_incident"}},
            {"type": "context", "elements": [{"type": "plain_text", "text": one_line(f"bigsister-ray · stream {alert.stream_id}"),
                                              "emoji": False}]},
        ]

    def send_incident(self, alert: IncidentAlert) -> Delivery:
        with self._lock:
            try:
                resp = self._post_client.chat_postMessage(channel=self.channel, text=alert.slack_text(), blocks=self.blocks(alert),
                                                          unfurl_links=False, unfurl_media=False, metadata=_metadata(alert, "alert"))
            except Exception as err:  # classified: slack-sdk, urllib and socket errors all land here
                raise _slack_error(err, f"Slack chat.postMessage for incident {alert.incident_id}", self._secrets, ambiguous=True) from None
            channel, ts = resp.get("channel") or self.channel, resp.get("ts")
            self.channel_id = channel
            return self._attach(alert, Delivery(self.name, channel=channel, ts=ts))

    def attach_snapshot(self, alert: IncidentAlert, delivery: Delivery) -> Delivery:
        """Upload the snapshot into the thread of an alert already posted (e.g. found after an interrupted send)."""
        with self._lock:
            return self._attach(alert, delivery)

    def _attach(self, alert: IncidentAlert, delivery: Delivery) -> Delivery:
        if not alert.snapshot_jpeg or not delivery.ts:
            return delivery
        try:
            self._client.files_upload_v2(
                channel=delivery.channel, thread_ts=delivery.ts, file=alert.snapshot_jpeg,
                filename=f"incident-{alert.incident_id}.jpg",
                title=one_line(f"{alert.label} {alert.peak_score:.2f} - {alert.stream_name}"),
            )
        except Exception as err:  # the message is out: never resend it for a failed picture
            e = _slack_error(err, f"Slack snapshot upload for incident {alert.incident_id}", self._secrets)
            log.warning("%s, camera %s (the alert itself was delivered)", e, safe_log(alert.stream_name))
            note = f"snapshot upload failed: {e.reason}"
            return Delivery(delivery.notifier, delivery.channel, delivery.ts, note=f"{delivery.note}; {note}" if delivery.note else note)
        return delivery

    def send_close(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        with self._lock:
            try:
                resp = self._post_client.chat_postMessage(channel=ref.channel or self.channel, thread_ts=ref.ts, text=alert.slack_close_text(),
                                                          metadata=_metadata(alert, "close"))
            except Exception as err:  # classified like send_incident
                raise _slack_error(err, f"Slack close reply for incident {alert.incident_id}", self._secrets, ambiguous=True) from None
            return Delivery(self.name, channel=resp.get("channel") or ref.channel, ts=resp.get("ts"))

    def find_sent(self, alert: IncidentAlert, kind: str, ref: Delivery | None) -> Delivery | None:
        """Look for a message this notifier already posted for ``alert`` (``kind`` alert or close).

        Used after a sender died between Slack accepting a message and the ``ts`` being recorded: the
        message carries metadata ``bigsister_incident`` with the incident id, so it is found instead of
        sent again. Returns None when there is none (or the channel id is unknown); raises
        AlertDeliveryError when Slack cannot be asked (``missing_scope``: the bot lacks channels:history).
        """
        try:
            with self._lock:
                channel = (ref.channel if ref is not None and ref.channel else None) or self._channel_id_locked()
                if channel is None:
                    raise AlertDeliveryError(f"Slack history lookup for incident {alert.incident_id}: channel {self.channel!r} "
                                             "not found by name (set alerts.slack.channel to the channel id, C...)",
                                             retryable=False, reason="channel_id_unknown")
                if kind == "close":
                    if ref is None or not ref.ts:
                        return None
                    pages = [self._client.conversations_replies(channel=channel, ts=ref.ts, include_all_metadata=True, limit=200)]
                else:
                    oldest = f"{alert.started_at.timestamp() - 600:.6f}"
                    pages, cursor = [], None
                    for _ in range(5):
                        resp = self._client.conversations_history(channel=channel, oldest=oldest, include_all_metadata=True,
                                                                  limit=200, cursor=cursor)
                        pages.append(resp)
                        cursor = (resp.get("response_metadata") or {}).get("next_cursor")
                        if not cursor:
                            break
        except AlertDeliveryError:
            raise
        except Exception as err:  # classified like a send
            raise _slack_error(err, f"Slack history lookup for incident {alert.incident_id}", self._secrets) from None
        for page in pages:
            for msg in page.get("messages") or []:
                meta = msg.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if (meta.get("event_type") == METADATA_EVENT and str(payload.get("incident_id")) == str(alert.incident_id)
                        and payload.get("kind") == kind):
                    return Delivery(self.name, channel=channel, ts=msg.get("ts"), note="found in channel history after an interrupted send")
        return None

    def _channel_id_locked(self) -> str | None:
        """The configured channel's id: known, or looked up by name with conversations.list (channels:read)."""
        if self.channel_id is None:
            name, cursor = self.channel.lstrip("#"), None
            for _ in range(20):
                resp = self._client.conversations_list(types="public_channel,private_channel", exclude_archived=True,
                                                       limit=1000, cursor=cursor)
                for ch in resp.get("channels") or []:
                    if ch.get("name") == name:
                        self.channel_id = ch.get("id")
                        return self.channel_id
                cursor = (resp.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        return self.channel_id

    def check(self) -> None:
        """Call auth.test; raise AlertDeliveryError (non-retryable for a bad token) when Slack refuses."""
        try:
            self._client.auth_test()
        except Exception as err:  # classified
            raise _slack_error(err, "Slack auth.test", self._secrets) from None


class WebhookNotifier:
    """A Slack incoming webhook: text only, no threads, no pictures."""

    name = "webhook"

    def __init__(self, url: SecretStr | str, *, timeout_s: float = 10.0, max_retries: int = 3) -> None:
        from slack_sdk.webhook import WebhookClient

        secret = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
        if not secret.startswith(("http://", "https://")):
            raise ConfigError("alerts.webhook.url: expected an http(s) incoming-webhook URL")
        self.channel = "webhook"
        self._secrets = [secret]
        self._client = WebhookClient(secret, timeout=int(max(1, round(timeout_s))), retry_handlers=_retry_handlers(max_retries),
                                     logger=_masked_logger("bigsister_ray.alerts.webhook_sdk", self._secrets))

    @classmethod
    def from_settings(cls, settings: Any) -> "WebhookNotifier":
        cfg = settings.alerts.webhook
        if cfg.url is None:
            raise ConfigError("alerts.webhook.url: set the incoming-webhook URL for the webhook notifier")
        return cls(cfg.url, timeout_s=cfg.timeout_s, max_retries=settings.alerts.slack.max_retries)

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

    def send_incident(self, alert: IncidentAlert) -> Delivery:
        self._send(alert.slack_text(), f"webhook alert for incident {alert.incident_id}")
        return Delivery(self.name, channel=self.channel)

    def send_close(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        self._send(alert.slack_close_text(), f"webhook close for incident {alert.incident_id}")
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
    def from_settings(cls, settings: Any) -> "ConsoleNotifier":
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


def make_notifier(settings: Any) -> Notifier:
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
