"""Hostile camera names, locations and labels posted through a real local Slack server (tests/_slack_server.py)
arrive inert: no mention, link or formatting syntax comes alive, and log lines about them stay one line."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from bigsister_ray.alerts.notifiers import ConsoleNotifier, IncidentAlert, SlackNotifier, WebhookNotifier, escape_mrkdwn
from tests._slack_server import FakeSlack

HOSTILE_NAME = "<!channel> *bold* <https://evil.example|slack.com>"
HOSTILE_LOCATION = "<@U0ADMIN> <#C0GENERAL> _it_ ~gone~ `code` @here & <!subteam^S1|ops>"
HOSTILE_LABEL = "fight <!everyone>"
LINK = "https://cctv.example.org/incidents/7"

#: The syntax this service writes itself: the field labels, the date token and the incident link.
_OURS = [
    re.compile(r"^\*(Class|Severity|Camera|Location|Time|Peak score):\*\n"),
    re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time_secs\}\|[0-9: -]+UTC>"),
    re.compile(r"<https://cctv\.example\.org/incidents/7(\|Incident #7)?>"),
]
_MENTION_WORD = re.compile(r"(?<![\w\u2060])@(channel|here|everyone)\b", re.IGNORECASE)


def live_syntax(text: str) -> list[str]:
    """What Slack would parse in a mrkdwn ``text`` besides our own syntax: control sequences (mentions, links),
    broadcast words and formatting characters."""
    for pattern in _OURS:
        text = pattern.sub("", text)
    found = re.findall(r"[<>*_~`]", text)
    found += [m.group(0) for m in _MENTION_WORD.finditer(text)]
    return found


def text_objects(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                out.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(blocks)
    return out


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def hostile_alert(**kw: Any) -> IncidentAlert:
    fields = dict(incident_id=7, label=HOSTILE_LABEL, severity="high", stream_id="cam_1`<!here>`", stream_name=HOSTILE_NAME,
                  location=HOSTILE_LOCATION, started_at=datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc),
                  ended_at=datetime(2026, 3, 1, 9, 31, tzinfo=timezone.utc), start_s=0.0, end_s=60.0, peak_score=0.91,
                  link=LINK)
    fields.update(kw)
    return IncidentAlert(**fields)


def test_the_checker_sees_live_syntax():
    assert live_syntax(HOSTILE_NAME) == ["<", ">", "*", "*", "<", ">"]
    assert live_syntax("ping @here") == ["@here"] and live_syntax("*Camera:*\nLobby") == []


def test_hostile_strings_arrive_inert_in_the_alert_and_the_close_reply(slack):
    notifier = SlackNotifier(slack.token, "C0INCIDENT", base_url=slack.base_url, max_retries=0, timeout_s=5)
    alert = hostile_alert()
    ref = notifier.send_incident(alert)
    notifier.send_close(alert, ref)

    [msg] = slack.top_level_messages()
    [reply] = slack.replies(msg["ts"])
    for text in (msg["text"], reply["text"]):  # top-level text is mrkdwn
        assert live_syntax(text) == [], text
    assert "&lt;!channel&gt; \u2217bold\u2217 &lt;https://evil.example|slack.com&gt;" in msg["text"]
    assert msg["text"].endswith(f": {LINK}") and reply["text"].endswith(f". {LINK}")

    objects = text_objects(msg["blocks"])
    mrkdwn = [o for o in objects if o["type"] == "mrkdwn"]
    plain = [o for o in objects if o["type"] == "plain_text"]
    for obj in mrkdwn:
        assert live_syntax(obj["text"]) == [], obj
        assert obj.get("verbatim") is True, obj  # no auto-linking or auto-mentions either
    shown = {o["text"].split("\n", 1)[0]: o["text"] for o in mrkdwn}
    assert shown["*Camera:*"] == "*Camera:*\n" + escape_mrkdwn(HOSTILE_NAME)
    assert "&lt;@U0ADMIN&gt; &lt;#C0GENERAL&gt; \u02cdit\u02cd \u223cgone\u223c \u02cbcode\u02cb @\u2060here &amp;" in shown["*Location:*"]
    assert "&lt;!everyone&gt;" in shown["*Class:*"]
    assert f"<{LINK}|Incident #7>" in [o["text"] for o in mrkdwn]
    # the header and the context line are plain_text, which Slack never parses: the name shows as typed
    assert any(HOSTILE_NAME in o["text"] for o in plain)
    assert any("cam_1`<!here>`" in o["text"] for o in plain)
    assert all(o.get("emoji") is not True for o in plain if o["text"] != "Open incident")


def test_webhook_text_is_escaped_like_chat(slack):
    notifier = WebhookNotifier(slack.webhook_url, max_retries=0, timeout_s=5)
    alert = hostile_alert()
    notifier.send_incident(alert)
    notifier.send_close(alert, None)
    assert len(slack.webhook_posts) == 2
    for post in slack.webhook_posts:
        assert set(post) == {"text"}
        assert live_syntax(post["text"]) == [], post
    assert "&lt;https://evil.example|slack.com&gt;" in slack.webhook_posts[0]["text"]


def test_names_are_one_line_in_slack_and_the_console_keeps_them_as_typed(slack, capsys):
    alert = hostile_alert(stream_name="gate\n*[CRITICAL]* all cameras offline\u2028x", location=None)
    assert "\n" not in alert.slack_text() and "\u2028" not in alert.slack_text()
    header = SlackNotifier.blocks(alert)[0]["text"]["text"]
    assert "\n" not in header and "\u2028" not in header
    ConsoleNotifier().send_incident(alert)
    assert "gate\\n*[CRITICAL]*" in capsys.readouterr().out  # JSON keeps the name exact, escaped by json.dumps


def test_a_link_with_a_pipe_or_brackets_cannot_retitle_itself():
    alert = hostile_alert(link="https://cctv.example.org/incidents/7?x=<a>|Click me&y=1 z")
    [_, _, section, _] = SlackNotifier.blocks(alert)
    assert section["text"]["text"] == "<https://cctv.example.org/incidents/7?x=%3Ca%3E%7CClick%20me&amp;y=1%20z|Incident #7>"


def test_camera_names_are_logged_escaped(slack, caplog):
    notifier = SlackNotifier(slack.token, "C0INCIDENT", base_url=slack.base_url, max_retries=0, timeout_s=5)
    slack.fail_next(1, error="internal_error", methods=("files.getUploadURLExternal",))
    alert = hostile_alert(stream_name="gate\n2026-03-01 INFO forged line \x1b[31mred", snapshot_jpeg=b"\xff\xd8jpeg")
    with caplog.at_level(logging.WARNING, logger="bigsister_ray.alerts.slack"):
        delivery = notifier.send_incident(alert)
    assert "snapshot upload failed" in (delivery.note or "")
    [record] = [r for r in caplog.records if r.name == "bigsister_ray.alerts.slack"]
    line = record.getMessage()
    assert "camera gate\\n2026-03-01 INFO forged line \\x1b[31mred" in line
    assert "\n" not in line and "\x1b" not in line
