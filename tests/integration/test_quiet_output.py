"""Quiet commands: the terminal gets the steps, the epochs and the result; the log file gets everything else.

``bigsister demo`` runs in a subprocess (the standard streams' file descriptors are redirected, as in a real
run) with the demo's work replaced by a fake of the same shape: it logs through Ray's loggers, prints hundreds of
lines, writes to file descriptor 2 directly (as Ray's native code does), warns, reports shard progress and
appends training epochs to ``history.jsonl``. No Ray is started. ``--verbose`` is the positive control: the same
noise then reaches the terminal.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

NOISE_LINES = 500
EPOCHS = 5

FAKE_DEMO = textwrap.dedent(f"""
    import json, logging, os, sys, time, warnings
    from pathlib import Path

    import bigsister_ray.demo as demo

    def fake_run(out, base, workdir, **kwargs):
        out.line(f"bigsister demo: everything goes to {{workdir}}" + (f" (log: {{out.log_path}})" if out.log_path else ""))
        with out.step("prepare") as step:
            for i in range(1, 4):
                step.message(f"[prepare] shard {{i}}/3 s{{i}}.parquet: 8 clips written, 0 failed")
            logging.getLogger("ray.data").info("NOISE ray.data execution plan")
            step.summary = "24 clips in 3 shards"
        run = workdir / "run"
        run.mkdir(parents=True, exist_ok=True)
        with out.step("train") as step, out.epochs(run, {EPOCHS}):
            for i in range({NOISE_LINES}):
                print(f"NOISE (RayTrainWorker pid=1) TrainingReport(metrics={{{{'epoch': {{i}}}}}})")
            logging.getLogger("ray.train").warning("NOISE ray.train controller line")
            logging.getLogger("ray.serve").info("NOISE ray.serve controller line")
            logging.getLogger("ray").warning("NOISE raylet warning")
            os.write(2, b"NOISE native stderr line\\n")
            warnings.warn("NOISE a deprecation")
            with (run / "history.jsonl").open("a") as f:
                for e in range(1, {EPOCHS} + 1):
                    f.write(json.dumps({{"event": "epoch", "epoch": e, "train_loss": 0.5, "train_accuracy": 0.5,
                                         "train_macro_f1": 0.5, "clips_per_s": 10.0, "time": time.time()}}) + "\\n")
            time.sleep(1.5)
        out.log("NOISE a stage summary for the log")
        out.line("INCIDENT {{...}}")
        out.line("ALERT ...")
        return demo.DemoResult(workdir=str(workdir))

    demo._run = fake_run
    from bigsister_ray.cli import main
    sys.argv = ["bigsister", "demo", "--workdir", sys.argv[1], *sys.argv[2:]]
    main()
""")


def _run_demo(tmp_path: Path, *flags: str) -> tuple[list[str], Path]:
    script = tmp_path / "fake_demo.py"
    script.write_text(FAKE_DEMO)
    work = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(script), str(work), *flags], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return (proc.stdout + proc.stderr).splitlines(), work / "bigsister.log"


@pytest.mark.slow
def test_demo_terminal_is_short_and_the_log_holds_the_rest(tmp_path):
    lines, log = _run_demo(tmp_path)
    text = "\n".join(lines)
    assert len(lines) <= 80, text
    assert not [ln for ln in lines if "NOISE" in ln], text
    assert f"(log: {log})" in lines[0]
    epoch_lines = [ln for ln in lines if ln.startswith("epoch ")]
    assert [ln.split(" | ")[0] for ln in epoch_lines] == [f"epoch {e}/{EPOCHS}" for e in range(1, EPOCHS + 1)], text
    assert any(ln.startswith("done prepare") and "24 clips in 3 shards" in ln for ln in lines), text
    assert "INCIDENT {...}" in lines and "ALERT ..." in lines
    logged = log.read_text()
    assert logged.count("NOISE (RayTrainWorker") == NOISE_LINES
    for noise in ("ray.data execution plan", "ray.train controller line", "ray.serve controller line",
                  "raylet warning", "native stderr line", "a deprecation", "a stage summary for the log",
                  "shard 3/3"):
        assert f"NOISE {noise}" in logged or noise in logged, noise
    assert logged.count("epoch 3/5") == 1


@pytest.mark.slow
def test_verbose_shows_everything_on_the_terminal(tmp_path):
    lines, log = _run_demo(tmp_path, "--verbose")
    noise = [ln for ln in lines if "NOISE (RayTrainWorker" in ln]
    assert len(noise) == NOISE_LINES
    assert any("NOISE a stage summary for the log" in ln for ln in lines)
    assert not log.exists()


def test_the_terminal_and_loggers_are_restored_after_a_failure(tmp_path, capfd):
    import logging

    from bigsister_ray.console import RAY_LOGGERS, command_output

    before = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate) for name in RAY_LOGGERS}
    log = tmp_path / "out" / "bigsister.log"
    with pytest.raises(RuntimeError, match="boom"):
        with command_output(log, ray_logging=False) as out:
            print("hidden line")
            with out.step("work"):
                raise RuntimeError("boom")
    print("visible again")
    captured = capfd.readouterr()
    assert "visible again" in captured.out and "hidden line" not in captured.out + captured.err
    assert "failed work" in captured.err and str(log) in captured.err
    assert "hidden line" in log.read_text()
    after = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate) for name in RAY_LOGGERS}
    assert after == before
