"""Hostile and absurd input refused before anything starts: ClipSpecs, settings, alert rules, a config whose clip
contradicts the checkpoint (``bigsister serve`` exits with the reason before Ray starts); credentials kept out of
API answers, logs and alert messages; FFmpeg's protocol whitelist on an HTTP playlist.
"""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import Settings
from bigsister_ray.errors import ConfigError, StreamError


@pytest.mark.parametrize("fields", [
    {"frames": 0}, {"frames": -3}, {"frames": 100000}, {"size": 100000}, {"size": 0}, {"fps": 0}, {"fps": -8},
    {"fps": float("nan")}, {"frames": 8, "stride": 9}, {"stride": 0}, {"resize": "stretch"}, {"bogus": 1},
])
def test_absurd_clip_specs_are_refused(fields):
    with pytest.raises(ValidationError):
        ClipSpec(**fields)


@pytest.mark.parametrize("data, key", [
    ({"clip": {"frames": 0}}, "clip.frames"),
    ({"clip": {"frames": 8, "stride": 16}}, "stride"),
    ({"alerts": {"default": {"k": 5, "n": 3}}}, "k"),
    ({"alerts": {"default": {"threshold": -0.5}}}, "threshold"),
    ({"alerts": {"default_threshold": 0}}, "default_threshold"),
    ({"serve": {"upload_max_bytes": -1}}, "upload_max_bytes"),
    ({"serve": {"upload_max_pixels": 10}}, "upload_max_pixels"),
    ({"serve": {"max_ongoing_requests": 0}}, "max_ongoing_requests"),
    ({"serve": {"classifier": {"min_replicas": 3, "max_replicas": 1}}}, "min_replicas"),
    ({"serve": {"classifier": {"stuck_after_s": 0}}}, "stuck_after_s"),
    ({"serve": {"port": 70000}}, "port"),
])
def test_absurd_settings_are_refused_naming_the_key(data, key):
    with pytest.raises(ValidationError, match=key):
        Settings(**data)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    from tests._serve_support import TINY_SPEC, make_checkpoint

    return make_checkpoint(tmp_path / "ckpt"), TINY_SPEC


def test_build_app_refuses_a_config_clip_that_contradicts_the_checkpoint(tmp_path, tiny_checkpoint):
    from bigsister_ray.serve.app import AppArgs, build_app

    ckpt, spec = tiny_checkpoint
    other = {"frames": spec.frames * 2, "fps": spec.fps, "size": spec.size, "stride": spec.stride}
    with pytest.raises(ConfigError, match="trained with"):
        build_app(AppArgs(checkpoint=ckpt, settings={"clip": other}))
    build_app(AppArgs(checkpoint=ckpt, settings={"clip": spec.model_dump()}))  # the same clip: fine
    build_app(AppArgs(checkpoint=ckpt))  # the embedded default: the checkpoint's clip is used


def test_bigsister_serve_exits_with_the_clip_mismatch_before_starting(tmp_path, tiny_checkpoint):
    from typer.testing import CliRunner

    from bigsister_ray.cli import app

    ckpt, spec = tiny_checkpoint
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"clip:\n  frames: {spec.frames * 2}\n  fps: {spec.fps}\n  size: {spec.size}\n  stride: {spec.stride}\n")
    res = CliRunner().invoke(app, ["serve", "--config", str(cfg), "--checkpoint", str(ckpt)])
    assert res.exit_code == 2, res.output
    assert "trained with" in res.output


def test_build_app_makes_the_media_root_absolute(tmp_path, tiny_checkpoint, monkeypatch):
    """Replicas run in other working directories: a relative media root is resolved in the driver."""
    from bigsister_ray.serve.app import AppArgs, build_app

    ckpt, _ = tiny_checkpoint
    monkeypatch.chdir(tmp_path)
    application = build_app(AppArgs(checkpoint=ckpt, settings={"serve": {"streams": {"media_root": "cams"}}}))
    settings = application._bound_deployment.init_args[0]
    assert settings.serve.streams.media_root == tmp_path / "cams"


# ------------------------------------------------------------------------------------------------ credentials
SECRET_URL = "rtsp://admin:hunter2-secret@203.0.113.7:554/stream1?token=tok-secret-123"


def test_credentials_never_reach_api_answers_logs_or_alert_text(tmp_path, caplog):
    from datetime import datetime, timezone

    from bigsister_ray.alerts.notifiers import IncidentAlert
    from bigsister_ray.incidents.models import StreamCreate
    from bigsister_ray.incidents.store import IncidentStore
    from bigsister_ray.security.urls import check_stream_url
    from bigsister_ray.serve.routers.streams import stream_out
    from bigsister_ray.video.sources import redact_url

    store = IncidentStore(f"sqlite:///{tmp_path / 'c.db'}")
    store.create_tables()
    rec = store.add_stream(StreamCreate(name="gate", url=SECRET_URL, location="gate"))
    shown = [stream_out(rec, None).model_dump_json(), repr(rec), rec.url]
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(StreamError) as err:  # refused URL: the error (answered as 400, logged) is redacted
            check_stream_url(SECRET_URL.replace("203.0.113.7", "169.254.169.254"), Settings().auth,
                             redacted=redact_url(SECRET_URL))
        logging.getLogger("ray.serve").warning("stream %s", redact_url(SECRET_URL))
    shown += [str(err.value), caplog.text]
    alert = IncidentAlert(incident_id=1, label="fight", severity="high", stream_id=rec.id, stream_name=rec.name,
                          location=rec.location, started_at=datetime.now(timezone.utc), ended_at=None, start_s=0,
                          end_s=4, peak_score=0.9, link="http://127.0.0.1:8000/incidents/1")
    shown += [alert.fallback_text(), alert.close_text()]
    for text in shown:
        for secret in ("hunter2-secret", "tok-secret-123", "admin:"):
            assert secret not in text, text
    assert "203.0.113.7" in stream_out(rec, None).url  # the host stays: the operator needs to know which camera


def test_overload_limits_and_request_timeout_reach_serve():
    """The Ingress queue bounds and Serve's HTTP request timeout come from settings.serve (bounded by default)."""
    from bigsister_ray.serve.app import deployment_options, http_options

    s = Settings(serve={"max_ongoing_requests": 3, "max_queued_requests": 5, "request_timeout_s": 7.5})
    ingress = deployment_options(s)["Ingress"]
    assert (ingress["max_ongoing_requests"], ingress["max_queued_requests"]) == (3, 5)
    assert http_options(s) == {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 7.5}
    default = deployment_options(Settings())["Ingress"]
    assert default["max_queued_requests"] > 0, "the default Ingress queue must be bounded"
    cls = deployment_options(Settings(serve={"classifier": {"stuck_after_s": 9, "health_check_period_s": 2}}))["Classifier"]
    assert cls["user_config"]["stuck_after_s"] == 9 and cls["health_check_period_s"] == 2
