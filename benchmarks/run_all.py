"""Run every benchmark and rewrite the generated block of benchmarks/RESULTS.md with its figures, the machine
they were measured on and plots.

Each selected benchmark runs in its own subprocess (``sys.executable benchmarks/<name>.py ARGS``); its stdout
and stderr go to ``benchmarks/out/<name>.log`` and the last JSON object it printed (or, for the scripts that
print none, its headline lines) becomes its record in ``benchmarks/out/<name>.json``. A failing benchmark is
recorded with its error and the others still run. Benchmarks not selected this time keep their record from an
earlier run (stated as such, with its date). Plots go to ``benchmarks/plots/`` as PNG: throughput vs batch size
(bench_models), streams vs latency (bench_serve), memory vs dataset size (bench_prepare 1x and Nx).

Only the text between ``<!-- run_all:begin -->`` and ``<!-- run_all:end -->`` in RESULTS.md is rewritten; the
hand-written sections around it are kept byte for byte. The markers are inserted at the top, after a
``# Benchmark results`` title, when missing.

    python benchmarks/run_all.py                       # everything, full arguments (long)
    python benchmarks/run_all.py --quick               # small arguments: minutes
    python benchmarks/run_all.py --quick --only bench_models,bench_train
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BEGIN",
    "END",
    "Benchmark",
    "BENCHMARKS",
    "extract_json_objects",
    "extract_last_json",
    "replace_block",
    "machine_info",
    "run_benchmark",
    "render_block",
    "make_plots",
    "run_all",
    "main",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BEGIN = "<!-- run_all:begin -->"
END = "<!-- run_all:end -->"
TITLE = "# Benchmark results"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script: how to run it fully and quickly, and which of its figures are headlines.

    ``headline_keys`` pick top-level keys of its last JSON object; ``headline_pattern`` (a regex) picks printed
    lines instead, for scripts that print no JSON.
    """

    name: str
    script: Path
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    headline_keys: tuple[str, ...] = ()
    headline_pattern: str | None = None
    result_key: str | None = None  # the result is the last JSON object with this key; objects after it are extras

    def command(self, quick: bool) -> list[str]:
        """The exact argv run (the interpreter is this one)."""
        return [sys.executable, str(self.script), *(self.quick_args if quick else self.full_args)]


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("bench_models", HERE / "bench_models.py",
              full_args=("--batches", "1,2,4,8,16"),
              quick_args=("--models", "tiny3d", "--train-models", "tiny3d", "--batches", "1,2,4", "--calls", "2")),
    Benchmark("bench_prepare", HERE / "bench_prepare.py",
              quick_args=("--scale", "2"),
              headline_keys=("clips", "frames", "bare_decord_fps", "bare_decord_parallel_fps", "pipeline_stage_fps",
                             "stage_fps_4x", "ratio_stage_vs_parallel", "ratio_stage_4x_vs_parallel", "ratio_stage",
                             "ratio_prepare", "peak_ray_mib_1x", "peak_ray_mib_4x", "memory_ratio_4x_over_1x")),
    Benchmark("bench_train", HERE / "bench_train.py",
              full_args=("--two-workers",), result_key="ratio_ray_over_plain",
              quick_args=("--clips", "16", "--epochs", "2", "--threads", "1"),
              headline_keys=("clip", "threads", "batch", "plain_median", "ray_median", "ratio_ray_over_plain",
                             "ray_2_workers_median")),
    Benchmark("bench_serve", HERE / "bench_serve.py",
              full_args=("--hold", "30", "--max-streams", "24"),
              quick_args=("--seconds", "3", "--rounds", "1", "--hold", "5", "--max-streams", "2"),
              headline_keys=("direct_windows_per_s", "graph_windows_per_s", "graph_mean_batch", "ratio",
                             "ratio_paired_median", "ratio_at_graph_batch", "streams_sustained")),
    Benchmark("bench_overload", HERE / "bench_overload.py",
              quick_args=("--seconds", "5", "--calibrate-s", "3"),
              headline_keys=("sustainable_rps", "offered_rps", "offered", "answered", "codes", "latency_s_p50_p95_max",
                             "ingress_rss_mb_first_last_max")),
    Benchmark("alert_eval", HERE / "alert_eval.py",
              quick_args=("--train-videos", "4", "--train-seconds", "6", "--epochs", "1", "--eval-videos", "1",
                          "--eval-seconds", "30", "--threads", "1"),
              headline_pattern=r"^\s*(alert evaluation:|configured rules:).*$"),
    Benchmark("synth_learnability", HERE / "synth_learnability.py",
              quick_args=("--videos", "6", "--seconds", "6", "--epochs", "1", "--threads", "1"),
              headline_pattern=r"^held-out accuracy .* vs majority-class baseline .*$"),
)


# --- parsing ---------------------------------------------------------------------------------------------------


def extract_json_objects(text: str) -> list[dict]:
    """Every top-level JSON object in ``text``, in order (single- or multi-line, possibly after a prefix such as
    ``RESULT ``). Objects nested in a larger one are not counted separately; text that is not JSON is skipped."""
    decoder = json.JSONDecoder()
    found: list[dict] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def extract_last_json(text: str, key: str | None = None) -> dict | None:
    """The last top-level JSON object in ``text`` (with ``key`` among its keys, when given), or None."""
    objs = [o for o in extract_json_objects(text) if key is None or key in o]
    return objs[-1] if objs else None


def headline_lines(text: str, pattern: str) -> list[str]:
    """Lines of ``text`` matching ``pattern`` (stripped), the last 4 at most."""
    rx = re.compile(pattern)
    return [line.strip() for line in text.splitlines() if rx.match(line)][-4:]


# --- the generated block in RESULTS.md --------------------------------------------------------------------------


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the markers replaced by ``block``; everything outside them unchanged.

    Without markers, they are inserted after a leading ``# Benchmark results`` title (added when missing).
    Raises ValueError when the markers are unbalanced or out of order (fix RESULTS.md by hand: nothing is guessed).
    """
    inner = "\n" + block.strip("\n") + "\n"
    nb, ne = text.count(BEGIN), text.count(END)
    if nb == 0 and ne == 0:
        body = text
        stripped = text.lstrip("\n")
        if stripped.startswith(TITLE + "\n") or stripped == TITLE:
            head_len = len(text) - len(stripped) + len(TITLE) + 1
            head, body = text[:head_len], text[head_len:]
            if not head.endswith("\n"):
                head += "\n"
        else:
            head = TITLE + "\n"
        return f"{head}\n{BEGIN}{inner}{END}\n" + ("" if body.startswith("\n") else "\n") + body
    if nb != 1 or ne != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"RESULTS.md: expected one {BEGIN!r} followed by one {END!r}, got {nb} begin and {ne} end "
                         "markers (or end before begin); fix the file by hand")
    start = text.index(BEGIN) + len(BEGIN)
    return text[:start] + inner + text[text.index(END):]


# --- machine --------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _gpu() -> str:
    try:
        import torch
    except ImportError:
        return "unknown (torch not installed)"
    if not torch.cuda.is_available():
        return "none"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ", ".join(names)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine_info(gpu: bool = True) -> dict[str, Any]:
    """What the figures were measured on: CPU model and cores, memory, OS, Python, torch, ray, GPU, and the load
    average at the time (on a shared machine it says how much others were using it)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "ray": _version("ray"),
        "gpu": _gpu() if gpu else "not probed",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git_commit(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- running --------------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One benchmark's run: command, outcome, figures."""

    name: str
    command: str
    ok: bool
    seconds: float
    date_utc: str
    load_before: list[float]
    load_after: list[float]
    result: dict | None = None
    headlines: list[str] = field(default_factory=list)
    error: str | None = None
    log: str = ""
    extras: list[dict] = field(default_factory=list)  # JSON objects printed after the result (bench_train's GPU rows)
    earlier: bool = False  # loaded from a previous invocation

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d.pop("earlier")
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Record":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _tail(path: Path, lines: int = 8) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_benchmark(bench: Benchmark, out_dir: Path, quick: bool, timeout: float) -> Record:
    """Run one benchmark in a subprocess, its output to ``out_dir/<name>.log``; never raises for its failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"{bench.name}.log"
    argv = bench.command(quick)
    shown = shlex.join(["python", str(Path(argv[1]).relative_to(REPO)) if Path(argv[1]).is_relative_to(REPO) else argv[1],
                        *argv[2:]])
    load_before = [round(x, 2) for x in os.getloadavg()]
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    error = None
    with open(log, "w") as fh:
        fh.write(f"$ {shlex.join(argv)}\n")
        fh.flush()
        try:
            proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=fh, text=True, timeout=timeout)
            stdout, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc, error = None, f"timed out after {timeout:.0f} s"
        fh.write("\n--- stdout ---\n" + stdout)
    seconds = round(time.perf_counter() - t0, 1)
    if rc not in (0, None):
        error = f"exit status {rc}; last lines of {log.name}:\n{_tail(log)}"
    objs = extract_json_objects(stdout)
    picked = [i for i, o in enumerate(objs) if bench.result_key is None or bench.result_key in o]
    result = objs[picked[-1]] if picked else None
    extras = objs[picked[-1] + 1:] if picked and bench.result_key else []
    heads = headline_lines(stdout, bench.headline_pattern) if bench.headline_pattern else []
    if error is None and result is None and not heads:
        error = f"it printed no JSON object and no headline line; see {log}"
    return Record(bench.name, shown, error is None, seconds, date, load_before, [round(x, 2) for x in os.getloadavg()],
                  result, heads, error, str(log.relative_to(REPO)) if log.is_relative_to(REPO) else str(log), extras)


# --- rendering ------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(", ", ": "))
    return str(v)


def _headline_figures(bench: Benchmark | None, rec: Record) -> list[str]:
    if rec.headlines:
        return rec.headlines
    r = rec.result or {}
    if "rows" in r and isinstance(r["rows"], list):  # bench_models: clips per CPU-second at each batch
        figs = []
        for row in r["rows"]:
            t = row.get("train_clips_per_cpu_s")
            figs.append(f"{row.get('model')} batch {row.get('batch')}: infer {_fmt(row.get('infer_clips_per_cpu_s'))} "
                        f"clips/CPU-s ({_fmt(row.get('infer_clips_per_s_wall'))}/s wall)"
                        + (f", train {_fmt(t)} clips/CPU-s" if t is not None else ""))
        return figs
    keys = bench.headline_keys if bench and bench.headline_keys else tuple(
        k for k, v in r.items() if isinstance(v, (int, float, str, bool)))[:8]
    figs = [f"{k} = {_fmt(r[k])}" for k in keys if k in r]
    figs += [_fmt(e) for e in rec.extras[:6]]
    if "frame_to_score_s" in r and isinstance(r["frame_to_score_s"], dict):
        f = r["frame_to_score_s"]
        figs.append(f"frame_to_score_s p50 {_fmt(round(f.get('p50', float('nan')), 3))}, "
                    f"p95 {_fmt(round(f.get('p95', float('nan')), 3))}")
    return figs


def render_block(machine: dict, records: Sequence[Record], plots: Sequence[Path], benches: Sequence[Benchmark],
                 quick: bool, results_dir: Path) -> str:
    """The Markdown between the markers: machine table, per-benchmark headline figures with commands, plots."""
    by_name = {b.name: b for b in benches}
    lines = [
        "## Generated by `benchmarks/run_all.py`",
        "",
        "This block is rewritten by `python benchmarks/run_all.py` (`--quick` for small arguments, `--only`/`--skip` "
        "to select); the sections below it are hand-written. Each row gives the exact command and its own date and load "
        "average; the machine was probed at " + str(machine["date_utc"]) + ". Logs: `benchmarks/out/<name>.log` "
        "(not committed).",
        "",
        "| machine | |",
        "|---|---|",
    ]
    for k in ("cpu", "cores", "cores_usable", "memory_gib", "os", "python", "torch", "ray", "gpu", "load_average",
              "git_commit", "date_utc"):
        label = {"memory_gib": "memory (GiB)", "load_average": "load average (1, 5, 15 min) when probed",
                 "cores_usable": "cores usable by this process"}.get(k, k)
        lines.append(f"| {label} | {_fmt(machine.get(k))} |")
    lines += ["", "| benchmark | status | command | headline figures | load avg before / after |", "|---|---|---|---|---|"]
    for rec in records:
        status = ("ok" if rec.ok else "FAILED") + f", {rec.seconds:g} s, {rec.date_utc}"
        if rec.earlier:
            status += ", from an earlier invocation"
        figs = _headline_figures(by_name.get(rec.name), rec) if rec.ok else []
        cell = "<br>".join(f.replace("|", "\\|") for f in figs) if rec.ok else \
            "error: " + (rec.error or "").replace("|", "\\|").replace("\n", "<br>")
        lines.append(f"| {rec.name} | {status} | `{rec.command}` | {cell} | {_fmt(rec.load_before)} / "
                     f"{_fmt(rec.load_after)} |")
    if plots:
        lines.append("")
        for p in plots:
            rel = os.path.relpath(p, results_dir)
            lines.append(f"![{p.stem.replace('_', ' ')}]({rel})")
    else:
        lines += ["", "No plots: none of bench_models, bench_serve (stream runs), bench_prepare has a record yet."]
    return "\n".join(lines) + "\n"


def _finish_plot(plt, fig, ax, path: Path) -> Path:
    """Legend, grid, save as PNG, close; returns the path."""
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def make_plots(records: Sequence[Record], plot_dir: Path) -> list[Path]:
    """PNG plots from the records that carry the data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    recs = {r.name: r for r in records if r.ok and r.result}
    written: list[Path] = []

    models = recs.get("bench_models")
    if models and models.result.get("rows"):
        fig, ax = plt.subplots(figsize=(6, 4))
        rows = models.result["rows"]
        for name in dict.fromkeys(r["model"] for r in rows):
            pts = sorted((r["batch"], r["infer_clips_per_cpu_s"]) for r in rows if r["model"] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{name} inference")
            tr = sorted((r["batch"], r["train_clips_per_cpu_s"]) for r in rows
                        if r["model"] == name and r.get("train_clips_per_cpu_s") is not None)
            if tr:
                ax.plot([p[0] for p in tr], [p[1] for p in tr], marker="s", linestyle="--", label=f"{name} train step")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["batch"] for r in rows}), [str(b) for b in sorted({r["batch"] for r in rows})])
        ax.set_xlabel("batch size (clips)")
        ax.set_ylabel("clips per CPU-second")
        ax.set_title(f"Throughput vs batch size (bench_models, clip {models.result.get('clip')}, "
                     f"{models.result.get('threads')} thread(s))", fontsize=9)
        written.append(_finish_plot(plt, fig, ax, plot_dir / "throughput_vs_batch.png"))

    serve = recs.get("bench_serve")
    runs = (serve.result.get("stream_runs") or []) if serve else []
    runs = [r for r in runs if isinstance(r.get("frame_to_score_s"), dict) and "p50" in r["frame_to_score_s"]]
    if runs:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["streams"] for r in runs]
        ax.plot(xs, [r["frame_to_score_s"]["p50"] for r in runs], marker="o", label="p50")
        ax.plot(xs, [r["frame_to_score_s"].get("p95") for r in runs], marker="s", label="p95")
        for r in runs:
            if not r.get("ok"):
                ax.annotate("fell behind", (r["streams"], r["frame_to_score_s"]["p50"]), fontsize=8)
        ax.set_xlabel("simultaneous camera streams")
        ax.set_ylabel("frame-to-score latency (s)")
        ax.set_title("Streams vs latency (bench_serve)", fontsize=9)
        written.append(_finish_plot(plt, fig, ax, plot_dir / "streams_vs_latency.png"))

    prep = recs.get("bench_prepare")
    if prep and prep.result.get("peak_ray_mib_1x") is not None and prep.result.get("peak_ray_mib_4x") is not None:
        r = prep.result
        sizes = [r.get("clips_written_1x"), r.get("clips_written_4x")]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(sizes, [r["peak_ray_mib_1x"], r["peak_ray_mib_4x"]], marker="o", label="peak of Ray processes")
        if r.get("peak_driver_mib_1x") is not None:
            ax.plot(sizes, [r["peak_driver_mib_1x"], r["peak_driver_mib_4x"]], marker="s", label="peak of the driver")
        ax.set_xlabel("dataset size (clips written)")
        ax.set_ylabel("peak resident memory (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("Memory vs dataset size (bench_prepare)", fontsize=9)
        written.append(_finish_plot(plt, fig, ax, plot_dir / "memory_vs_dataset.png"))
    return written


# --- orchestration ------------------------------------------------------------------------------------------


def _select(benches: Sequence[Benchmark], only: str | None, skip: str | None) -> list[Benchmark]:
    names = [b.name for b in benches]
    chosen = [n.strip() for n in only.split(",") if n.strip()] if only else list(names)
    skipped = [n.strip() for n in skip.split(",") if n.strip()] if skip else []
    unknown = [n for n in chosen + skipped if n not in names]
    if unknown:
        raise SystemExit(f"run_all: unknown benchmark(s) {unknown}; expected names from {names}")
    return [b for b in benches if b.name in chosen and b.name not in skipped]


def run_all(*, only: str | None = None, skip: str | None = None, quick: bool = False,
            benchmarks: Sequence[Benchmark] = BENCHMARKS, results: Path = HERE / "RESULTS.md",
            out_dir: Path = HERE / "out", plot_dir: Path = HERE / "plots", timeout: float = 3 * 3600,
            gpu: bool = True, progress: Callable[[str], None] = print, render_only: bool = False) -> list[Record]:
    """Run the selected benchmarks, keep earlier records of the others, rewrite the block in ``results``.

    ``render_only`` runs nothing: the block and plots are rebuilt from the records (and the machine) stored by
    earlier invocations in ``out_dir``."""
    selected = [] if render_only else _select(benchmarks, only, skip)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine_store = out_dir / "machine.json"
    if render_only and machine_store.exists():
        machine = json.loads(machine_store.read_text())
    else:
        machine = machine_info(gpu=gpu)
        machine_store.write_text(json.dumps(machine, indent=1))
    records: list[Record] = []
    for bench in benchmarks:
        store = out_dir / f"{bench.name}.json"
        if bench in selected:
            progress(f"run_all: {bench.name} ... (log: {out_dir / (bench.name + '.log')})")
            rec = run_benchmark(bench, out_dir, quick, timeout)
            store.write_text(json.dumps(rec.to_json(), indent=1))
            progress(f"run_all: {bench.name} {'ok' if rec.ok else 'FAILED: ' + (rec.error or '')} in {rec.seconds} s")
            records.append(rec)
        elif store.exists():
            rec = Record.from_json(json.loads(store.read_text()))
            rec.earlier = True
            records.append(rec)
    plots = make_plots(records, plot_dir)
    block = render_block(machine, records, plots, benchmarks, quick, results.parent)
    text = ""
    if results.exists():
        with open(results, encoding="utf-8", newline="") as fh:
            text = fh.read()
    new = replace_block(text, block)
    with open(results, "w", encoding="utf-8", newline="") as fh:
        fh.write(new)
    progress(f"run_all: wrote {results} ({len(records)} record(s), {len(plots)} plot(s))")
    return records


def main(argv: list[str] | None = None) -> int:
    """CLI entry: exit status 1 when a benchmark run this time failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated benchmark names to run (default: all)")
    ap.add_argument("--skip", default=None, help="comma-separated benchmark names not to run")
    ap.add_argument("--quick", action="store_true", help="small arguments for each benchmark (minutes in all)")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per benchmark before it is killed")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--list", action="store_true", help="print the benchmarks and their commands, run nothing")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing; rebuild the block and plots from the records in benchmarks/out/")
    args = ap.parse_args(argv)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:<20} full: {shlex.join(b.command(False)[1:])}\n{'':<20} quick: {shlex.join(b.command(True)[1:])}")
        return 0
    records = run_all(only=args.only, skip=args.skip, quick=args.quick, results=args.results, timeout=args.timeout,
                      render_only=args.render_only)
    return 0 if all(r.ok for r in records if not r.earlier) else 1


if __name__ == "__main__":
    sys.exit(main())
