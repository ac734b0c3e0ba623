"""Options of the commands: train --gpu/--no-gpu, serve --host/--port, detect with object-store URIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bigsister_ray.cli import app


def test_train_gpu_without_a_cuda_device_is_a_usage_error(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--gpu"])
    assert res.exit_code == 2, res.output
    assert "no CUDA device" in res.output and "--no-gpu" in res.output


def test_train_no_gpu_overrides_the_settings_file(tmp_path, monkeypatch):
    import bigsister_ray.train.trainer as trainer
    from bigsister_ray.errors import DataError

    seen = {}

    def fake_train(data, out, settings):
        seen["use_gpu"] = settings.train.use_gpu
        raise DataError("stop here")

    monkeypatch.setattr(trainer, "train", fake_train)
    config = tmp_path / "cfg.yaml"
    config.write_text("train: {use_gpu: true}\n")
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--no-gpu",
                                   "--config", str(config), "--verbose"])
    assert res.exit_code == 1 and "stop here" in res.output, res.output
    assert seen == {"use_gpu": False}


def test_serve_host_and_port_reach_the_settings(monkeypatch):
    import bigsister_ray.serve.app as serve_app

    seen = {}
    monkeypatch.setattr(serve_app, "run_serve", lambda settings: seen.update(host=settings.serve.host,
                                                                            port=settings.serve.port))
    res = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "8123"])
    assert res.exit_code == 0, res.output
    assert seen == {"host": "0.0.0.0", "port": 8123}
    bad = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert bad.exit_code == 2


def test_detect_fetches_object_store_uris_to_local_files(tmp_path, monkeypatch):
    import bigsister_ray.serve.detect as detect
    import bigsister_ray.storage as storage

    copied, seen = [], {}

    def fake_copy(src, dst):
        copied.append(src)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        Path(dst).write_bytes(b"x")

    def fake_detect(path, checkpoint, settings):
        seen.update(video=Path(path), checkpoint=Path(checkpoint), exists=Path(path).is_file() and Path(checkpoint).is_file())
        return {"windows": [{"start_s": 0.0, "end_s": 1.0, "scores": {"fight": 0.1}}], "events": []}

    monkeypatch.setattr(storage, "copy", fake_copy)
    monkeypatch.setattr(detect, "detect_file", fake_detect)
    res = CliRunner().invoke(app, ["detect", "s3://bucket/cams/lobby.mp4", "--checkpoint", "gs://models/run/best/model.pt"])
    assert res.exit_code == 0, res.output
    assert copied == ["s3://bucket/cams/lobby.mp4", "gs://models/run/best/model.pt"]
    assert seen["exists"] and seen["video"].name == "lobby.mp4" and seen["checkpoint"].name == "model.pt"
    assert not seen["video"].exists()  # the temporary copies are gone afterwards
    assert json.loads(res.stdout[res.stdout.index("{"):])["windows"]


def test_detect_names_an_object_it_cannot_fetch(monkeypatch):
    import bigsister_ray.storage as storage

    def missing(src, dst):
        raise FileNotFoundError(f"{src}: no such file")

    monkeypatch.setattr(storage, "copy", missing)
    res = CliRunner().invoke(app, ["detect", "s3://bucket/none.mp4", "--checkpoint", "s3://bucket/model.pt"])
    assert res.exit_code == 1
    assert "cannot fetch the video s3://bucket/none.mp4" in res.output
