"""``POST /slack/actions``: Slack's interactivity requests, i.e. the Ack and False alarm buttons of an alert.

The route needs no API key (Slack cannot send one); the Ingress guard still limits its body like any JSON route
(:data:`~bigsister_ray.serve.guard.JSON_MAX_BYTES`). Every request is verified with the Slack app's signing
secret (``alerts.slack.signing_secret``) by slack-sdk's ``SignatureVerifier``, which also refuses a timestamp
more than 5 minutes from now: an unsigned, wrongly signed or replayed request is a 401 and changes nothing.

A verified button press calls :meth:`IncidentStore.act` with actor ``slack:<user id> (<user name>)`` (written
to the audit trail), answers 200 at once (Slack wants an answer within 3 s), then rewrites the alert message in
place (``chat.update``) to show the new status and who set it: the action made the outbox's ``update`` delivery
due, and :func:`deliver_now` sends it (a failure stays due for the shards' sweepers). A press that is no longer
allowed (someone acted first) changes nothing; the message shows the status that holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Request, Response

from bigsister_ray.alerts.message import one_line
from bigsister_ray.alerts.slack import ACTION_IDS
from bigsister_ray.serve.context import ServeContext, get_ctx

__all__ = ["router", "SLACK_ACTIONS_PATH", "slack_actor", "incident_service", "deliver_now"]

log = logging.getLogger("ray.serve")

#: The Request URL to set under Interactivity & Shortcuts in the Slack app's settings (after serve.public_url).
SLACK_ACTIONS_PATH = "/slack/actions"

router = APIRouter(tags=["slack"])


def slack_actor(user: dict[str, Any]) -> str:
    """``slack:<user id> (<user name>)``, the audit trail's name for a Slack user (one line, at most 200 chars)."""
    uid = one_line(user.get("id") or "unknown")[:40]
    name = one_line(user.get("username") or user.get("name") or "")[:100]
    return f"slack:{uid} ({name})" if name else f"slack:{uid}"


def _verify(ctx: ServeContext, body: bytes, headers: Any) -> None:
    from slack_sdk.signature import SignatureVerifier

    secret = ctx.settings.alerts.slack.signing_secret
    if secret is None:
        raise HTTPException(status_code=404, detail="Slack interactivity is off: set alerts.slack.signing_secret to the Slack "
                                                    "app's signing secret (Basic Information > App Credentials)")
    try:
        ok = SignatureVerifier(secret.get_secret_value()).is_valid_request(body, dict(headers))
    except (ValueError, UnicodeDecodeError):  # a timestamp that is not a number, a body that is not UTF-8
        ok = False
    if not ok:
        raise HTTPException(status_code=401, detail="Slack request refused: missing or wrong X-Slack-Signature, or "
                                                    "X-Slack-Request-Timestamp more than 5 minutes from now")


def _parse(body: bytes) -> dict[str, Any]:
    try:
        raw = parse_qs(body.decode("utf-8"), strict_parsing=False).get("payload", [None])[0]
        payload = json.loads(raw) if raw is not None else None
    except (UnicodeDecodeError, ValueError) as err:
        raise HTTPException(status_code=400, detail=f"Slack request: the payload is not JSON ({err})") from None
    if not isinstance(payload, dict):
        raise HTTPException(status_code=400, detail="Slack request: expected a form field 'payload' holding a JSON object")
    return payload


def _button(payload: dict[str, Any]) -> tuple[str, int] | None:
    """(store action, incident id) of the first of our buttons in a ``block_actions`` payload; None otherwise."""
    if payload.get("type") != "block_actions":
        return None
    for action in payload.get("actions") or []:
        if not isinstance(action, dict) or action.get("action_id") not in ACTION_IDS:
            continue
        try:
            incident_id = int(str(action.get("value")))
        except ValueError:
            return None
        return (ACTION_IDS[action["action_id"]], incident_id) if incident_id >= 1 else None
    return None


def incident_service(app: Any, ctx: ServeContext) -> Any:
    """The Ingress's own :class:`IncidentService` (no sweeper; the shards sweep), made once: it delivers what an
    action made due at once (the alert edited to the new status) through the same outbox, so a failure is retried
    by the shards and nothing is sent twice."""
    service = getattr(app.state, "incident_service", None)
    if service is None:
        from bigsister_ray.alerts.notifiers import make_notifier
        from bigsister_ray.incidents.service import IncidentService

        service = app.state.incident_service = IncidentService(ctx.store, make_notifier(ctx.settings), ctx.settings)
    return service


def deliver_now(app: Any, ctx: ServeContext, incident_id: int) -> None:
    """Deliver the incident's due deliveries now (best effort: what fails stays due for the shards' sweepers)."""
    from bigsister_ray.errors import ConfigError
    from bigsister_ray.incidents.store import IncidentStoreError

    try:
        incident_service(app, ctx).deliver(incident_id)
    except (ConfigError, IncidentStoreError) as err:
        log.warning("incident %d: its Slack message was not updated now (the outbox retries it): %s", incident_id, err)


@router.post(SLACK_ACTIONS_PATH, status_code=200, response_class=Response,
             responses={401: {"description": "Not signed by Slack, or older than 5 minutes."},
                        404: {"description": "Interactivity is off: alerts.slack.signing_secret is not set."}})
async def slack_actions(request: Request, background: BackgroundTasks, ctx: ServeContext = Depends(get_ctx)) -> Response:
    """Slack interactivity (set the app's Request URL to ``serve.public_url`` + ``/slack/actions``)."""
    from bigsister_ray.incidents.store import IncidentNotFoundError, InvalidTransitionError

    body = await request.body()
    _verify(ctx, body, request.headers)
    payload = _parse(body)
    pressed = _button(payload)
    if pressed is None:
        return Response(status_code=200)  # another interaction (or a button of another app): nothing to do
    action, incident_id = pressed
    actor = slack_actor(payload.get("user") or {})
    try:
        await asyncio.to_thread(ctx.store.act, incident_id, action, actor=actor)
        log.info("Slack: %s on incident %d by %s", action, incident_id, actor)
    except IncidentNotFoundError:
        log.warning("Slack: %s on unknown incident %d by %s (deleted?)", action, incident_id, actor)
        return Response(status_code=200)
    except InvalidTransitionError as err:
        log.info("Slack: %s on incident %d by %s not applied: %s", action, incident_id, actor, err)
    background.add_task(deliver_now, request.app, ctx, incident_id)  # after the answer: Slack wants it within 3 s
    return Response(status_code=200)
