"""The Slack notifier (Web API): a Block Kit message per incident with Ack and False alarm buttons, the snapshot
and the evidence clip in its thread, a reply when it closes, and the message updated in place when someone acts.

Errors are :class:`~bigsister_ray.errors.AlertDeliveryError`, with ``retryable`` saying whether trying again can
help (a rate limit, a 5xx, a dropped connection) or not (``invalid_auth``, ``channel_not_found``,
``not_in_channel``: an operator must fix the config) and ``reason`` a short code. The bot token never appears in
reprs, exception messages or logs: the slack-sdk clients log through a logger that masks it.

Exactly once: messages carry metadata (``bigsister_incident``, incident id, alert|close), a post whose connection
broke after the request left raises :class:`AmbiguousDeliveryError`, and :meth:`SlackNotifier.find_sent` looks
the message up before anything is posted again. Updates (``chat.update``) and uploads may repeat harmlessly:
an update sets the same content, and a clip is uploaded by one outbox delivery at a time.

The buttons carry ``action_id`` :data:`ACK_ACTION` or :data:`FALSE_ALARM_ACTION` and the incident id as
``value``; Slack posts them to ``POST /slack/actions`` (``bigsister_ray.serve.routers.slack``).
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import urllib.error
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bigsister_ray.alerts.links import LinkSigner
from bigsister_ray.alerts.message import Delivery, IncidentAlert, escape_mrkdwn, one_line, slack_url
from bigsister_ray.config import Settings
from bigsister_ray.errors import AlertDeliveryError, ConfigError
from bigsister_ray.redact import safe_log

__all__ = [
    "SlackNotifier",
    "AmbiguousDeliveryError",
    "NON_RETRYABLE_SLACK_ERRORS",
    "METADATA_EVENT",
    "ACK_ACTION",
    "FALSE_ALARM_ACTION",
    "ACTION_IDS",
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


#: ``action_id`` of the alert's buttons (their ``value`` is the incident id).
ACK_ACTION = "incident_ack"
FALSE_ALARM_ACTION = "incident_false_alarm"
#: Button ``action_id`` -> the store's action name.
ACTION_IDS = {ACK_ACTION: "ack", FALSE_ALARM_ACTION: "false_alarm"}
#: The buttons each review status still offers: (action_id, text, style).
_BUTTONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "open": ((ACK_ACTION, "Ack", "primary"), (FALSE_ALARM_ACTION, "False alarm", "danger")),
    "acknowledged": ((FALSE_ALARM_ACTION, "False alarm", "danger"),),
}


def _looks_like_channel_id(channel: str) -> bool:
    return len(channel) >= 9 and channel[0] in "CGD" and channel.isalnum() and channel.isupper()


class SlackNotifier:
    """Posts a Block Kit message per incident, uploads the snapshot and the clip into its thread, replies when it
    closes, and updates the message when its status changes."""

    name = "slack"

    def __init__(
        self,
        token: SecretStr | str,
        channel: str,
        *,
        base_url: str = "https://slack.com/api/",
        timeout_s: float = 10.0,
        max_retries: int = 3,
        links: LinkSigner | None = None,
        buttons: bool = False,
    ) -> None:
        """``links`` signs the incident links (None: the alert's own link); ``buttons`` adds Ack and False alarm
        (only when ``POST /slack/actions`` can verify Slack's requests, i.e. a signing secret is set)."""
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
        self.links = links
        self.buttons = buttons
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "SlackNotifier":
        cfg = settings.alerts.slack
        token = cfg.resolved_token()
        if token is None:
            raise ConfigError("alerts.slack: set token, token_file or BIGSISTER_ALERTS__SLACK__TOKEN for the Slack notifier")
        return cls(token, cfg.channel or "", base_url=cfg.base_url, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                   links=LinkSigner.from_settings(settings), buttons=getattr(cfg, "signing_secret", None) is not None)

    def __repr__(self) -> str:
        return f"SlackNotifier(channel={self.channel!r}, base_url={self.base_url!r})"

    __str__ = __repr__

    def __reduce__(self):  # noqa: D105 - pickling would copy the token somewhere we cannot see
        raise TypeError("SlackNotifier is not picklable (it holds a token); build it where it is used with from_settings")

    # ---- messages ------------------------------------------------------------------------------
    @staticmethod
    def blocks(alert: IncidentAlert, *, buttons: bool = False) -> list[dict[str, Any]]:
        """The Block Kit layout of an incident alert. User strings are escaped mrkdwn or plain_text.

        ``buttons``: an actions block with the moves the incident's status still allows (Ack and False alarm
        while open, False alarm once acknowledged, none after). Once someone acted, a context line says who.
        """
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
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": False}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{slack_url(alert.link)}|Incident #{alert.incident_id}>",
                                         "verbatim": True},
             "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Open incident"}, "url": alert.link,
                           "action_id": "open_incident"}},
            {"type": "context", "elements": [{"type": "plain_text", "text": one_line(f"bigsister-ray · stream {alert.stream_id}"),
                                              "emoji": False}]},
        ]
        status = alert.status_line()
        if status is not None:
            blocks.insert(3, {"type": "context", "block_id": "incident_status",
                              "elements": [{"type": "plain_text", "text": status[:2000], "emoji": False}]})
        moves = _BUTTONS.get(alert.status, ()) if buttons else ()
        if moves:
            blocks.insert(3, {"type": "actions", "block_id": "incident_actions", "elements": [
                {"type": "button", "action_id": action_id, "value": str(alert.incident_id),
                 "text": {"type": "plain_text", "text": text, "emoji": False}, "style": style}
                for action_id, text, style in moves]})
        return blocks

    def _linked(self, alert: IncidentAlert) -> IncidentAlert:
        """``alert`` with its link signed (a fresh expiry each time a message is posted or updated)."""
        return alert if self.links is None else replace(alert, link=self.links.incident_url(alert.incident_id))

    def send_incident(self, alert: IncidentAlert) -> Delivery:
        alert = self._linked(alert)
        with self._lock:
            try:
                resp = self._post_client.chat_postMessage(channel=self.channel, text=alert.slack_text(),
                                                          blocks=self.blocks(alert, buttons=self.buttons),
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
        alert = self._linked(alert)
        with self._lock:
            try:
                resp = self._post_client.chat_postMessage(channel=ref.channel or self.channel, thread_ts=ref.ts, text=alert.slack_close_text(),
                                                          metadata=_metadata(alert, "close"))
            except Exception as err:  # classified like send_incident
                raise _slack_error(err, f"Slack close reply for incident {alert.incident_id}", self._secrets, ambiguous=True) from None
            return Delivery(self.name, channel=resp.get("channel") or ref.channel, ts=resp.get("ts"))

    def update_message(self, alert: IncidentAlert, ref: Delivery) -> Delivery:
        """Rewrite the alert message ``ref`` (its channel and ts) in place to show ``alert``'s status and who acted.

        Raises AlertDeliveryError (``message_not_found``, ``cant_update_message``: not retryable). Safe to repeat:
        the message gets the same content."""
        if not ref.ts:
            raise AlertDeliveryError(f"Slack chat.update for incident {alert.incident_id}: the alert has no message to update",
                                     retryable=False, reason="no_message")
        alert = self._linked(alert)
        with self._lock:
            try:
                resp = self._client.chat_update(channel=ref.channel or self.channel_id or self.channel, ts=ref.ts,
                                                text=alert.slack_text(), blocks=self.blocks(alert, buttons=self.buttons),
                                                metadata=_metadata(alert, "alert"))
            except Exception as err:  # classified like a send
                raise _slack_error(err, f"Slack chat.update for incident {alert.incident_id}", self._secrets) from None
            return Delivery(self.name, channel=resp.get("channel") or ref.channel, ts=resp.get("ts") or ref.ts)

    def send_clip(self, alert: IncidentAlert, ref: Delivery, clip: Path) -> Delivery:
        """Upload the evidence clip ``clip`` (an MP4) into the alert's thread (``ref``: the alert message).

        Raises AlertDeliveryError: retryable for an outage, not for a missing file or a refused upload."""
        if not ref.ts:
            raise AlertDeliveryError(f"Slack clip upload for incident {alert.incident_id}: the alert has no message to reply to",
                                     retryable=False, reason="no_message")
        try:
            data = Path(clip).read_bytes()
        except OSError as err:
            raise AlertDeliveryError(f"Slack clip upload for incident {alert.incident_id}: cannot read the clip {clip}: "
                                     f"{err.strerror or err} (was it deleted by the media retention sweep?)",
                                     retryable=False, reason="clip_unreadable") from None
        with self._lock:
            try:
                resp = self._client.files_upload_v2(
                    channel=ref.channel or self.channel_id or self.channel, thread_ts=ref.ts, file=data,
                    filename=f"incident-{alert.incident_id}.mp4",
                    title=one_line(f"Evidence clip: {alert.label} on {alert.stream_name}, incident #{alert.incident_id}"),
                )
            except Exception as err:  # classified like a send
                raise _slack_error(err, f"Slack clip upload for incident {alert.incident_id}", self._secrets) from None
        files = resp.get("files") or []
        return Delivery(self.name, channel=ref.channel, ts=ref.ts, note=f"file {files[0].get('id')}" if files else None)

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

