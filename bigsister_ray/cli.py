"""The ``bigsister`` command. Thin: parse options, load settings, call one package function.

Nothing runs at import time; each command imports what it needs when it runs.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from bigsister_ray.errors import BigSisterError

__all__ = ["app", "main"]

app = typer.Typer(
    name="bigsister",
    help="CCTV abnormal-behaviour detection on Ray: prepare data, train, evaluate, serve, alert.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML settings file (see docs/configuration.md).", exists=False),
]


VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Show everything on the terminal (Ray's, Train's and Serve's logs too) "
                                         "instead of one line per step and the log file's path."),
]


class Source(str, Enum):
    aihub = "aihub"
    folders = "folders"
    manifest = "manifest"


def _settings(config: Path | None, **overrides):
    from bigsister_ray.config import load_settings

    return load_settings(config, **overrides)


#: Exit codes: 0 done, 1 the command failed (bad data, unreachable database, a failed run), 2 usage (a bad flag,
#: option value or settings key: fix the command line or the config file).
EXIT_FAILURE, EXIT_USAGE = 1, 2


def _fail(err: Exception) -> None:
    from bigsister_ray.errors import ConfigError

    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=EXIT_USAGE if isinstance(err, ConfigError) else EXIT_FAILURE)


def _log_path(out: str | Path) -> Path:
    """The command's log file: ``OUT/bigsister.log`` for a local OUT, ``./bigsister.log`` for an object-store URI."""
    from bigsister_ray import storage
    from bigsister_ray.console import LOG_FILE

    if storage.is_remote(out):
        return Path.cwd() / LOG_FILE
    return Path(storage.resolve(out)[1]) / LOG_FILE


def _local_copy(location: str, folder: Path, what: str) -> Path:
    """``location`` as a local path: a local path as it is; an ``s3://``/``gs://`` object copied into ``folder``."""
    from bigsister_ray import storage

    if not storage.is_remote(location):
        return Path(storage.resolve(location)[1])
    target = folder / (storage.basename(location) or what)
    try:
        storage.copy(location, target)
    except OSError as err:  # missing object, access denied, unreachable endpoint (pyarrow raises OSError)
        from bigsister_ray.errors import DataError
        from bigsister_ray.redact import redact_text

        raise DataError(f"cannot fetch {what} {storage.redact_uri(location)}: {redact_text(str(err))}") from err
    return target


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"bigsister-ray {version('bigsister-ray')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("bigsister-ray (not installed: run pip install -e .)")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """CCTV abnormal-behaviour detection on Ray: prepare data, train, evaluate, serve, alert."""


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write the synthetic AI-Hub-format dataset into.")],
    videos: Annotated[int, typer.Option(min=1, help="Number of videos (spread over the task's classes).")] = 24,
    seconds: Annotated[float, typer.Option(min=2.0, help="Length of each video in seconds.")] = 12.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same dataset.")] = 0,
    config: ConfigOpt = None,
) -> None:
    """Write a synthetic dataset in the exact AI Hub layout (mp4 + XML), for tests and the demo."""
    try:
        settings = _settings(config)
        from bigsister_ray.data.synth import synthesize

        summary = synthesize(out, videos=videos, seconds=seconds, seed=seed, settings=settings)
    except BigSisterError as err:
        _fail(err)
    typer.echo(str(summary))


@app.command()
def prepare(
    source: Annotated[Source, typer.Option(help="aihub (mp4 + XML), folders (one folder per class) or manifest (JSONL/CSV).")],
    root: Annotated[str, typer.Option(help="Dataset root folder (or the manifest file for --source manifest): a local or "
                                           "mounted path, since the videos are opened as files.")],
    out: Annotated[str, typer.Option(help="Output folder: shards, index, manifest and errors report. A path or an "
                                          "s3:// or gs:// URI.")],
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Index, split by group, decode and preprocess clips with Ray Data into compressed shards (resumable)."""
    try:
        settings = _settings(config)
        from bigsister_ray.console import command_output
        from bigsister_ray.data.pipeline import prepare as run_prepare

        with command_output(_log_path(out), verbose=verbose) as console:
            with console.step(f"prepare {source.value} {root}") as step:
                summary = run_prepare(source.value, root, out, settings, progress=step.message)
                step.summary = f"{summary.clips_written} clips in {summary.shards_total} shards, {summary.clips_failed} failed"
            console.result(str(summary))
    except BigSisterError as err:
        _fail(err)


@app.command()
def eda(
    source: Annotated[Source, typer.Option(help="aihub, folders or manifest.")],
    root: Annotated[Path, typer.Option(help="Dataset root folder.")],
    out: Annotated[Path, typer.Option(help="Output folder for report.md and PNG plots.")],
    config: ConfigOpt = None,
) -> None:
    """Look at the data before training: class counts per split, durations, resolutions, fps, groups."""
    try:
        settings = _settings(config)
        from bigsister_ray.data.eda import run_eda

        report = run_eda(source.value, root, out, settings)
    except BigSisterError as err:
        _fail(err)
    typer.echo(str(report))


@app.command()
def train(
    data: Annotated[str, typer.Option(help="A prepared dataset (output of `bigsister prepare`): a path or an s3:// "
                                           "or gs:// URI.")],
    out: Annotated[str, typer.Option(help="Run folder (checkpoints, logs): a path or an s3:// or gs:// URI. A run with "
                                          "the same name resumes.")],
    model: Annotated[Optional[str], typer.Option(help="Model from the registry (default: model.name).")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Ray Train workers (default: train.workers).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs (default: train.epochs).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name (default: train.name or the folder name).")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--no-gpu", help="One GPU per Ray Train worker "
                                                "(default: train.use_gpu).")] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train on Ray Train (TorchTrainer) over the prepared shards; keeps the best checkpoint by validation macro-F1."""
    try:
        settings = _settings(config, **{"model.name": model, "train.workers": workers, "train.epochs": epochs,
                                        "train.name": name, "train.use_gpu": gpu})
        from bigsister_ray import storage
        from bigsister_ray.console import command_output
        from bigsister_ray.train.trainer import train as run_train

        _check_gpu(settings)
        with command_output(_log_path(out), verbose=verbose) as console:
            local_out = None if storage.is_remote(out) else Path(storage.resolve(out)[1])
            with console.step(f"train {settings.model.name} on {storage.redact_uri(data)}") as step, \
                    console.epochs(local_out, settings.train.epochs):
                result = run_train(data, out, settings)
                step.summary = f"best epoch {result.best_epoch}, {result.epochs_this_call} epochs"
            console.result(str(result))
    except BigSisterError as err:
        _fail(err)


def _check_gpu(settings) -> None:
    """``train.use_gpu`` on a local Ray needs a CUDA device here (else Ray would wait for one for ever)."""
    if not settings.train.use_gpu or settings.ray.address:
        return
    import torch

    if not torch.cuda.is_available():
        from bigsister_ray.errors import ConfigError

        raise ConfigError("train.use_gpu (--gpu): no CUDA device on this machine; train with --no-gpu, or set "
                          "ray.address to a cluster with GPU nodes")


@app.command()
def evaluate(
    checkpoint: Annotated[str, typer.Option(help="A checkpoint written by `bigsister train`: a path or an s3:// or "
                                                 "gs:// URI (the calibration is stored back into it).")],
    data: Annotated[str, typer.Option(help="A prepared dataset (a path or an s3:// or gs:// URI), or a raw dataset root "
                                           "(a path) with --source.")],
    out: Annotated[str, typer.Option(help="Output folder: report.md, metrics.json, plots. A path or an s3:// or gs:// URI.")],
    split: Annotated[str, typer.Option(help="Split of a prepared dataset to evaluate.")] = "test",
    source: Annotated[Optional[Source], typer.Option(help="Evaluate a raw aihub/folders/manifest dataset directly.")] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Accuracy, macro-F1, per-class metrics, confusion matrix, baselines, calibration and alert thresholds."""
    try:
        settings = _settings(config)
        from bigsister_ray.console import command_output
        from bigsister_ray.train.evaluate import evaluate as run_evaluate

        with command_output(_log_path(out), verbose=verbose) as console:
            with console.step(f"evaluate the {split if source is None else source.value} clips") as step:
                result = run_evaluate(checkpoint, data, out, settings, split=split,
                                      source=source.value if source else None)
                step.summary = (f"accuracy {result.accuracy:.3f} (macro-F1 {result.macro_f1:.3f}) vs majority-class "
                                f"baseline {result.majority_accuracy:.3f} (macro-F1 {result.majority_macro_f1:.3f}) "
                                f"on {result.n} clips")
            console.result(str(result))
    except BigSisterError as err:
        _fail(err)


@app.command()
def detect(
    file: Annotated[str, typer.Argument(help="A video file: a path or an s3:// or gs:// URI.")],
    checkpoint: Annotated[str, typer.Option(help="A checkpoint written by `bigsister train`: a path or an s3:// or "
                                                 "gs:// URI.")],
    config: ConfigOpt = None,
) -> None:
    """Classify a video offline: JSON with per-window probabilities and detected events (progress on stderr)."""
    import tempfile

    try:
        settings = _settings(config)
        from bigsister_ray import storage
        from bigsister_ray.console import command_output
        from bigsister_ray.serve.detect import detect_file

        with command_output(None) as console, tempfile.TemporaryDirectory(prefix="bigsister-detect-") as tmp:
            if storage.is_remote(file) or storage.is_remote(checkpoint):
                with console.step("fetch the video and the checkpoint"):
                    video = _local_copy(file, Path(tmp) / "video", "the video")
                    model = _local_copy(checkpoint, Path(tmp) / "checkpoint", "the checkpoint")
            else:
                video, model = _local_copy(file, Path(tmp), "the video"), _local_copy(checkpoint, Path(tmp), "the checkpoint")
            with console.step(f"detect {storage.redact_uri(file)}") as step:
                result = detect_file(video, model, settings)
                step.summary = f"{len(result.get('windows', []))} windows, {len(result.get('events', []))} event(s)"
    except BigSisterError as err:
        _fail(err)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


@app.command("evaluate-alerts")
def evaluate_alerts(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by `bigsister train`.")],
    out: Annotated[Path, typer.Option(help="Output folder: report.md, metrics.json, tradeoff.png.")],
    data: Annotated[Optional[Path], typer.Option(help="Long annotated videos in the AI Hub layout (default: synthesize them into OUT/videos).")] = None,
    videos: Annotated[int, typer.Option(min=1, help="Synthetic videos to write when --data is not given.")] = 4,
    seconds: Annotated[float, typer.Option(min=10.0, help="Length of each synthetic video in seconds.")] = 180.0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic videos.")] = 0,
    thresholds: Annotated[Optional[str], typer.Option(help="Comma-separated thresholds to sweep (default 0.3,...,0.9 and the calibrated ones).")] = None,
    kn: Annotated[Optional[str], typer.Option(help="Comma-separated k/n pairs to sweep, e.g. 1/1,2/3,3/5 (default 1/1,2/3,3/5,4/6).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Replay long annotated videos through a checkpoint and the alert rules: event precision/recall, false alarms per camera-hour, time to alert, and a threshold x k-of-n trade-off plot."""
    try:
        settings = _settings(config)
        from bigsister_ray.serve.evaluate_alerts import DEFAULT_KN, DEFAULT_THRESHOLDS, evaluate_alerts as run_eval

        try:
            thr = [float(x) for x in thresholds.split(",")] if thresholds else [*DEFAULT_THRESHOLDS, None]
            pairs = [tuple(int(v) for v in x.split("/")) for x in kn.split(",")] if kn else list(DEFAULT_KN)
        except ValueError as err:
            raise typer.BadParameter(f"expected --thresholds like 0.5,0.7 and --kn like 2/3,3/5: {err}") from err
        if any(len(p) != 2 or not (1 <= p[0] <= p[1]) for p in pairs) or any(t is not None and not 0 < t <= 1 for t in thr):
            raise typer.BadParameter(f"expected k/n pairs with 1 <= k <= n and thresholds in (0, 1], got --kn {kn!r} --thresholds {thresholds!r}")
        summary = run_eval(checkpoint, out, settings, data=data, videos=videos, seconds=seconds, seed=seed,
                           thresholds=thr, kn=pairs)
    except BigSisterError as err:
        _fail(err)
    typer.echo(str(summary))


@app.command()
def serve(
    config: ConfigOpt = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint to serve (default: serve.checkpoint).")] = None,
    host: Annotated[Optional[str], typer.Option(help="HTTP bind address (default: serve.host, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="HTTP port (default: serve.port, 8000).")] = None,
) -> None:
    """Start the Serve app (ingress, stream shards, classifier) on embedded defaults."""
    try:
        settings = _settings(config, **{"serve.checkpoint": str(checkpoint) if checkpoint else None,
                                        "serve.host": host, "serve.port": port})
        from bigsister_ray.serve.app import run_serve

        run_serve(settings)
    except BigSisterError as err:
        _fail(err)


@app.command()
def demo(
    config: ConfigOpt = None,
    workdir: Annotated[Path, typer.Option(help="Folder for the demo's data, run, database, alerts and log.")] = Path("bigsister-demo"),
    verbose: VerboseOpt = False,
) -> None:
    """The whole loop on synthetic data: synth, prepare, train, evaluate, serve, a stream, an incident, an alert."""
    try:
        settings = _settings(config)
        from bigsister_ray.demo import run_demo

        run_demo(settings, workdir, verbose=verbose)
    except BigSisterError as err:
        _fail(err)


@app.command("config")
def show_config(
    config: ConfigOpt = None,
    reference: Annotated[bool, typer.Option("--reference", help="Print the reference of every key (Markdown) instead.")] = False,
) -> None:
    """Print the effective settings (file + env + defaults; secrets masked), or the reference of every key."""
    try:
        if reference:
            from bigsister_ray.reference import config_reference

            typer.echo(config_reference(), nl=False)
            return
        import yaml

        settings = _settings(config)
        typer.echo(yaml.safe_dump(json.loads(settings.model_dump_json()), sort_keys=False, allow_unicode=True), nl=False)
    except BigSisterError as err:
        _fail(err)


@app.command("export-feedback")
def export_feedback(
    out: Annotated[Path, typer.Option(help="Output folder: manifest.jsonl and clips/ (give it to `bigsister prepare "
                                           "--source manifest --root OUT/manifest.jsonl`).")],
    since: Annotated[Optional[str], typer.Option(help="Only verdicts given at or after this time (ISO 8601, UTC when "
                                                      "no offset), e.g. 2026-05-01 or 2026-05-01T08:00:00+09:00.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Operator verdicts as a manifest dataset: false alarms as "normal", acknowledged and resolved incidents as
    their class, each with its evidence clip (from database.url and incidents.media_dir)."""
    try:
        from datetime import datetime, timezone

        from bigsister_ray.errors import ConfigError
        from bigsister_ray.incidents.feedback import export_feedback as run_export
        from bigsister_ray.incidents.migrate import current_revision, head_revision
        from bigsister_ray.incidents.store import IncidentStore, MigrationError

        after = None
        if since is not None:
            try:
                after = datetime.fromisoformat(since)
            except ValueError as err:
                raise ConfigError(f"--since: expected an ISO 8601 time such as 2026-05-01T08:00:00, got {since!r}") from err
            after = after if after.tzinfo is not None else after.replace(tzinfo=timezone.utc)
        settings = _settings(config)
        store = IncidentStore.from_settings(settings)
        try:
            revision = current_revision(store)
            if revision != head_revision():
                raise MigrationError(f"database {store.safe_url} is at schema revision {revision or 'none'}, this code "
                                     f"reads {head_revision()}: run `bigsister db upgrade` first")
            result = run_export(store, settings.incidents.media_dir, out, since=after)
        finally:
            store.dispose()
        typer.echo(str(result))
    except BigSisterError as err:
        _fail(err)


db_app = typer.Typer(help="The incidents database (database.url): schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Upgrade database.url to the newest schema revision and print it (safe while other processes run)."""
    try:
        from bigsister_ray.incidents.store import IncidentStore

        store = IncidentStore.from_settings(_settings(config))
        try:
            typer.echo(store.upgrade())
        finally:
            store.dispose()
    except BigSisterError as err:
        _fail(err)


@db_app.command("current")
def db_current(config: ConfigOpt = None) -> None:
    """Print the schema revision of database.url ("none" before the first upgrade)."""
    try:
        from bigsister_ray.incidents.migrate import current_revision, head_revision
        from bigsister_ray.incidents.store import IncidentStore

        store = IncidentStore.from_settings(_settings(config))
        try:
            revision = current_revision(store)
        finally:
            store.dispose()
        typer.echo(revision or "none")
        if revision != head_revision():
            typer.secho(f"the newest revision is {head_revision()}: run `bigsister db upgrade`", err=True)
    except BigSisterError as err:
        _fail(err)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
