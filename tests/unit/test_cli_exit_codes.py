"""The command line's contract: --version, exit 0 done, 1 failed, 2 usage (a bad flag, value or settings key)."""

from __future__ import annotations

from typer.testing import CliRunner

from bigsister_ray.cli import app


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"bigsister-ray {version('bigsister-ray')}"


def test_a_bad_flag_is_a_usage_error():
    res = CliRunner().invoke(app, ["train", "--no-such-flag"])
    assert res.exit_code == 2, res.output


def test_an_unknown_settings_key_is_a_usage_error_naming_the_reference(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("serve:\n  shards:\n    max_shard: 3\n")
    res = CliRunner().invoke(app, ["config", "--config", str(config)])
    assert res.exit_code == 2, res.output
    assert "serve.shards.max_shard" in res.output and "bigsister config --reference" in res.output
