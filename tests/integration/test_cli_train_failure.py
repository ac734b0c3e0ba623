"""A training run that fails: bigsister train exits 1 and says what to do (its progress watcher runs on a thread)."""

from __future__ import annotations

from typer.testing import CliRunner

from bigsister_ray.cli import app


def test_a_failing_train_exits_1_with_what_to_do(tmp_path):
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 1, res.output
    assert "run `bigsister prepare` first" in res.output
