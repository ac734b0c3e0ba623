"""Benchmark of ``bigsister prepare`` (not a test): throughput against bare decord, and memory as data grows.

1. Throughput: the same clips' sampled frames, decoded (a) with bare decord (one reader per video,
   ``get_batch`` of the sampled indices, nothing else), once in one process and once in ``--cpus`` processes
   (the videos dealt round-robin; the fair baseline for a pipeline that uses every core), and (b) by the Ray
   Data pipeline (decode + shared preprocessing + compressed parquet shards) on a local Ray with ``--cpus`` CPUs.
   All run pinned to the same CPU set (``sched_setaffinity``). Bare decord runs before and after the pipeline;
   a ratio is pipeline frames/s over the mean of the two baselines. Reported for the Ray Data stage alone and
   for the whole ``prepare`` call (reading, probing and indexing included), at 1x and (stage) at ``--scale``x,
   where the fixed start-up of Ray Data and its workers weighs less.
2. Memory: peak PSS (falling back to RSS) summed over every Ray process (the driver's child process tree:
   GCS, raylet and its workers, object store), sampled every second, while preparing the dataset and the same
   dataset four times larger (every video listed ``--scale`` times through symlinks, same groups), each on a
   fresh local Ray. The driver process is reported separately.

Run::

    python benchmarks/bench_prepare.py --root ../shared/data/fight-surv --cpus 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["main"]


def _log(message: str) -> None:
    print(f"[bench_prepare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _pinned_cpus(n: int) -> set[int]:
    available = sorted(os.sched_getaffinity(0))
    return set(available[:n])


class PeakMemory:
    """Samples the summed PSS/RSS of the driver's descendants (all Ray processes) in a thread."""

    def __init__(self, interval: float = 1.0) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.peak_ray = 0
        self.peak_driver = 0
        self.samples = 0
        self.peak_breakdown: dict[str, float] = {}
        self.peak_processes = 0
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (name, user+system seconds at the last sample)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _mem(self, proc) -> int:
        try:
            info = proc.memory_full_info()
            return int(getattr(info, "pss", 0) or info.rss)
        except (self._psutil.NoSuchProcess, self._psutil.AccessDenied, self._psutil.ZombieProcess):
            return 0

    def _run(self) -> None:
        me = self._psutil.Process()
        while not self._stop.is_set():
            children = me.children(recursive=True)
            mems = [(p, self._mem(p)) for p in children]
            total = sum(m for _, m in mems)
            if total > self.peak_ray:
                breakdown: dict[str, int] = {}
                for p, m in mems:
                    try:
                        name = "ray workers" if p.name().startswith("ray::") else p.name()
                    except self._psutil.Error:
                        continue
                    breakdown[name] = breakdown.get(name, 0) + m
                self.peak_breakdown = {k: round(v / 2**20, 1) for k, v in sorted(breakdown.items(), key=lambda kv: -kv[1])}
                self.peak_processes = len(mems)
            for p in children + [me]:
                try:
                    t = p.cpu_times()
                    self.cpu[p.pid] = (p.name(), t.user + t.system)
                except (self._psutil.NoSuchProcess, self._psutil.AccessDenied, self._psutil.ZombieProcess):
                    pass
            self.peak_ray = max(self.peak_ray, total)
            self.peak_driver = max(self.peak_driver, self._mem(me))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        import psutil

        me = psutil.Process()
        self.cpu_start = {p.pid: sum(p.cpu_times()[:2]) for p in me.children(recursive=True) + [me]}
        self._thread.start()
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used while sampling, per process name (processes that ended keep their last sample)."""
        out: dict[str, float] = {}
        for pid, (name, seconds) in self.cpu.items():
            used = seconds - self.cpu_start.get(pid, 0.0)
            key = "ray workers" if name.startswith("ray::") else name
            out[key] = round(out.get(key, 0.0) + used, 2)
        return out

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _bare_decord(jobs: list[tuple[str, list[list[int]]]], threads: int) -> tuple[int, float, float]:
    """Frames decoded, wall seconds, CPU seconds of this process."""
    import decord

    frames = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for path, clips in jobs:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
        for idx in clips:
            uniq = sorted(set(idx))
            batch = vr.get_batch(uniq).asnumpy()
            frames += len(idx)
            del batch
        del vr
    return frames, time.perf_counter() - t0, time.process_time() - c0


def _bare_worker(args: tuple[list[tuple[str, list[list[int]]]], int, int]) -> tuple[int, float]:
    jobs, threads, _tag = args
    frames, _wall, cpu = _bare_decord(jobs, threads)
    return frames, cpu


def _bare_decord_parallel(jobs: list[tuple[str, list[list[int]]]], threads: int, procs: int) -> tuple[int, float, float]:
    """Bare decord in ``procs`` processes (spawned and warmed before the clock starts): frames, wall s, CPU s."""
    import multiprocessing as mp

    parts = [jobs[i::procs] for i in range(procs)]
    with mp.get_context("spawn").Pool(procs) as pool:
        pool.map(_bare_worker, [(part[:1], threads, i) for i, part in enumerate(parts)])  # import decord in each
        t0 = time.perf_counter()
        results = pool.map(_bare_worker, [(part, threads, i) for i, part in enumerate(parts)], chunksize=1)
        wall = time.perf_counter() - t0
    return sum(r[0] for r in results), wall, sum(r[1] for r in results)


def _decode_jobs(clips, videos, spec) -> list[tuple[str, list[list[int]]]]:
    from bigsister_ray.clip import sample_indices

    by_path = {v.path: v for v in videos}
    per_video: dict[str, list[list[int]]] = {}
    for c in clips:
        v = by_path[c.video]
        end = None if c.kind == "whole" else c.end_s
        per_video.setdefault(c.video, []).append(sample_indices(v.num_frames, v.fps, spec, c.start_s, end).tolist())
    return sorted(per_video.items())


def _replicate(root: Path, dest: Path, scale: int, groups: dict[str, str]) -> Path:
    """``dest`` holds every video of ``root`` ``scale`` times (symlinks with distinct stems, same groups)."""
    from bigsister_ray.data.readers import UNLISTED_GROUP, VIDEO_EXTENSIONS

    lines = []
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        for video in sorted(class_dir.rglob("*")):
            if video.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            for k in range(scale):
                link = dest / class_dir.name / f"{video.stem}_r{k}{video.suffix}"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(video.resolve())
                lines.append(f"{link.stem}\t{groups.get(video.stem, UNLISTED_GROUP)}")
    (dest.parent / f"{dest.name}.groups.tsv").write_text("\n".join(lines) + "\n")
    return dest.parent / f"{dest.name}.groups.tsv"


def _run_prepare(source: str, root: Path, out: Path, settings, cpus: int) -> dict:
    import ray

    from bigsister_ray.data.pipeline import prepare

    # address="local": always a fresh local Ray of our own, never another cluster on this machine.
    for attempt in (1, 2, 3):  # a loaded machine can time Ray's startup out; try again rather than lose the run
        try:
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            break
        except Exception as err:  # noqa: BLE001 - ray raises a bare Exception for a startup timeout
            if attempt == 3 or "timed out during startup" not in str(err):
                raise
            _log(f"Ray did not start ({err}); retrying")
            ray.shutdown()
            time.sleep(10)
    try:
        time.sleep(2.0)  # let the idle workers Ray prestarts come up, for both scales alike
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            summary = prepare(source, root, out, settings, progress=None)
            wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    _log(f"prepare {root}: {summary.clips_written} clips in {wall:.1f} s (Ray Data stage {summary.decode_seconds:.1f} s), "
         f"peak Ray memory {mem.peak_ray / 2**20:.0f} MiB")
    return {"summary": summary, "wall": wall, "peak_ray": mem.peak_ray, "peak_driver": mem.peak_driver,
            "samples": mem.samples, "cpu": mem.cpu_seconds(), "breakdown": mem.peak_breakdown,
            "processes": mem.peak_processes}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-surv")
    parser.add_argument("--source", default="folders", choices=["folders", "aihub", "manifest"])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--shard-clips", type=int, default=None, help="data.shard_clips (default: the settings' value)")
    parser.add_argument("--decord-threads", type=int, default=1,
                        help="decord threads of the bare baseline (0: decord's default); the pipeline uses data.decode_threads")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    from bigsister_ray.config import load_settings
    from bigsister_ray.data.index import build_index
    from bigsister_ray.data.readers import read_groups_file, read_source

    overrides = {"data.shard_clips": args.shard_clips} if args.shard_clips else {}
    settings = load_settings(args.config, **overrides)
    cpus = _pinned_cpus(args.cpus)
    os.sched_setaffinity(0, cpus)  # the driver, bare decord and every Ray process it starts share these CPUs
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    videos, errors = read_source(args.source, args.root, settings)
    clips = build_index(videos, settings)
    jobs = _decode_jobs(clips, videos, settings.clip)
    _bare_decord(jobs[:5], args.decord_threads)  # warm the page cache and decord
    frames, base1, cpu1 = _bare_decord(jobs, args.decord_threads)
    _log(f"bare decord: {frames} frames in {base1:.1f} s ({cpu1:.1f} CPU s)")
    frames_p, par1, pcpu1 = _bare_decord_parallel(jobs, args.decord_threads, len(cpus))
    assert frames_p == frames
    _log(f"bare decord in {len(cpus)} processes: {frames} frames in {par1:.1f} s ({pcpu1:.1f} CPU s)")

    run1 = _run_prepare(args.source, args.root, work / "out-1x", settings, args.cpus)
    frames_b, base2, cpu2 = _bare_decord(jobs, args.decord_threads)
    assert frames_b == frames
    _log(f"bare decord again: {frames} frames in {base2:.1f} s ({cpu2:.1f} CPU s)")
    _, par2, pcpu2 = _bare_decord_parallel(jobs, args.decord_threads, len(cpus))
    _log(f"bare decord in {len(cpus)} processes again: {frames} frames in {par2:.1f} s ({pcpu2:.1f} CPU s)")

    groups_file = args.root / "sources.txt"
    groups = read_groups_file(groups_file) if groups_file.exists() else {}
    scaled_root = work / f"data-{args.scale}x"
    tsv = _replicate(args.root, scaled_root, args.scale, groups)
    scaled_settings = settings.model_copy(update={"data": settings.data.model_copy(update={"groups_file": tsv})})
    run4 = _run_prepare(args.source, scaled_root, work / f"out-{args.scale}x", scaled_settings, args.cpus)

    base_s = statistics.mean([base1, base2])
    s1 = run1["summary"]
    fps_base = frames / base_s
    fps_stage = frames / s1.decode_seconds
    fps_e2e = frames / run1["wall"]
    fps_par = frames / statistics.mean([par1, par2])
    s4 = run4["summary"]
    fps_stage_4x = args.scale * frames / s4.decode_seconds if s4.decode_seconds else None
    result = {
        "cpus": sorted(cpus),
        "clips": len(clips), "frames": frames, "videos": len(videos), "read_errors": len(errors),
        "shard_clips": settings.data.shard_clips, "clip": settings.clip.model_dump(),
        "bare_decord_s": [round(base1, 2), round(base2, 2)], "bare_decord_fps": round(fps_base, 1),
        "pipeline_stage_s": round(s1.decode_seconds, 2), "pipeline_stage_fps": round(fps_stage, 1),
        "prepare_wall_s": round(run1["wall"], 2), "prepare_fps": round(fps_e2e, 1),
        "ratio_stage": round(fps_stage / fps_base, 3), "ratio_prepare": round(fps_e2e / fps_base, 3),
        "clips_written_1x": s1.clips_written, "clips_failed_1x": s1.clips_failed,
        "clips_written_4x": s4.clips_written, "clips_failed_4x": s4.clips_failed,
        "stage_fps_4x": round(fps_stage_4x, 1) if fps_stage_4x else None,
        "bare_decord_parallel_s": [round(par1, 2), round(par2, 2)], "bare_decord_parallel_fps": round(fps_par, 1),
        "bare_decord_parallel_cpu_s": [round(pcpu1, 2), round(pcpu2, 2)],
        "ratio_stage_vs_parallel": round(fps_stage / fps_par, 3),
        "ratio_prepare_vs_parallel": round(fps_e2e / fps_par, 3),
        "ratio_stage_4x": round(fps_stage_4x / fps_base, 3) if fps_stage_4x else None,
        "ratio_stage_4x_vs_parallel": round(fps_stage_4x / fps_par, 3) if fps_stage_4x else None,
        "peak_ray_mib_1x": round(run1["peak_ray"] / 2**20, 1), "peak_ray_mib_4x": round(run4["peak_ray"] / 2**20, 1),
        "peak_driver_mib_1x": round(run1["peak_driver"] / 2**20, 1), "peak_driver_mib_4x": round(run4["peak_driver"] / 2**20, 1),
        "memory_ratio_4x_over_1x": round(run4["peak_ray"] / run1["peak_ray"], 3) if run1["peak_ray"] else None,
        "memory_samples": [run1["samples"], run4["samples"]],
        "bare_decord_cpu_s": [round(cpu1, 2), round(cpu2, 2)],
        "prepare_cpu_s_1x": run1["cpu"],
        "peak_breakdown_mib_1x": run1["breakdown"], "peak_breakdown_mib_4x": run4["breakdown"],
        "peak_processes": [run1["processes"], run4["processes"]],
        "load_average": os.getloadavg(),
    }
    pipeline_cpu = sum(run1["cpu"].values())
    result["frames_per_cpu_s_bare"] = round(frames / statistics.mean([cpu1, cpu2]), 1)
    result["frames_per_cpu_s_pipeline"] = round(frames / pipeline_cpu, 1) if pipeline_cpu else None
    print(json.dumps(result, indent=2))
    n = len(cpus)
    print(f"throughput ratio, Ray Data stage / bare decord in {n} processes: 1x {result['ratio_stage_vs_parallel']}, "
          f"{args.scale}x {result['ratio_stage_4x_vs_parallel']}  goal >= 0.8")
    print(f"throughput ratio, whole prepare / bare decord in {n} processes: 1x {result['ratio_prepare_vs_parallel']}")
    print(f"throughput ratio, Ray Data stage / bare decord in 1 process: 1x {result['ratio_stage']}, "
          f"{args.scale}x {result['ratio_stage_4x']}")
    print(f"peak memory of Ray processes, {args.scale}x / 1x: {result['memory_ratio_4x_over_1x']}  goal <= 1.25")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
