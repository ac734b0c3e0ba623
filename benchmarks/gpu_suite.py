"""Every GPU figure the project reports, in one run (under 8 minutes on one H100/H200-class GPU).

Sections, each independent (one failing is recorded with its error and the rest still run):

1. ``models``: bf16-autocast training steps (forward + backward + AdamW) and inference of I3D at 64 x 224 x 224
   and of the CPU recipe's model and clip (read from ``configs/fight-cpu.yaml``): clips/s,
   GFLOPs per clip and model FLOP utilisation against the device's dense bf16 peak.
2. ``serving``: windows/s through a shard's path into the Classifier deployment on the GPU (WindowAssembler ->
   WindowBatcher -> Classifier ``classify_many``, ``@serve.batch``), from many pseudo-streams of already
   decoded frames, and from it cameras per GPU = windows/s over the windows one camera needs per second
   (clip fps / stride).
3. ``decode``: a 1080p H.264 file decoded with NVDEC (``serve.streams.hwaccel: cuda``) against the CPU decoder:
   frames/s and CPU-seconds per frame, hence 25 fps 1080p cameras per NVDEC and per CPU core.
4. ``shards`` (only with ``--shards`` and ``BIGSISTER_TEST_POSTGRES_URL``): ``bench_shards.py --mode capacity``,
   320x240 cameras one StreamShard sustains on this node's cores.

``--tiny`` shrinks every size so that the whole suite runs on a CPU in seconds (the test does this); on a GPU
machine it is simply started::

    python benchmarks/gpu_suite.py --out gpu-suite.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
#: Dense bf16 peak FLOP/s by device name (NVIDIA datasheets), for MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def _device(tiny: bool) -> tuple[str, str, float | None]:
    """(torch device, its name, dense bf16 peak FLOP/s or None)."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return "cuda", name, next((v for k, v in PEAK_BF16.items() if k in name), None)
    if not tiny:
        print("warning: no CUDA device; the figures below are the CPU's", file=sys.stderr, flush=True)
    return "cpu", platform.processor() or platform.machine(), None


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def model_rates(name: str, spec, batch: int, steps: int, device: str, peak: float | None,
                warmup: int = 2) -> list[dict]:
    """Training-step and inference clips/s of registry model ``name`` under bf16 autocast on ``device``."""
    import torch

    from bigsister_ray.clip import input_channels
    from bigsister_ray.models import build_model, mfu, model_flops

    channels = input_channels(spec.input)
    model = build_model(name, 2, in_channels=channels).to(device)
    x = torch.randn(batch, channels, spec.frames, spec.size, spec.size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = []
    for mode in ("train", "infer"):
        model.train(mode == "train")

        def step() -> None:
            with torch.autocast(device, dtype=torch.bfloat16):
                if mode == "train":
                    loss = torch.nn.functional.cross_entropy(model(x).float(), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                else:
                    with torch.inference_mode():
                        model(x)

        for _ in range(warmup):
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rate = steps * batch / (time.perf_counter() - t0)
        flops = model_flops(name, spec, num_classes=2, backward=(mode == "train"))
        rows.append({"model": name, "mode": mode, "clip": f"{spec.frames}x{spec.size}x{spec.size} {spec.input}",
                     "batch": batch, "clips_per_s": round(rate, 2), "gflops_per_clip": round(flops / 1e9, 2),
                     "mfu": round(mfu(flops, rate, peak), 4) if peak else None})
    del model, opt, x
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def cpu_recipe(tiny: bool):
    """(model name, ClipSpec) of ``configs/fight-cpu.yaml``; ``tiny`` shrinks the clip to 4 frames of 32 px."""
    from bigsister_ray.config import load_settings

    s = load_settings(REPO / "configs" / "fight-cpu.yaml")
    spec = s.clip.model_copy(update={"frames": 4, "size": 32, "stride": 2}) if tiny else s.clip
    return s.model.name, spec


def section_models(args, device: str, peak: float | None) -> list[dict]:
    from bigsister_ray.clip import ClipSpec

    recipe_model, recipe_spec = cpu_recipe(args.tiny)
    if args.tiny:
        cases = [("i3d", ClipSpec(frames=8, fps=25.0, size=64, stride=4), 2), (recipe_model, recipe_spec, 2)]
    else:
        cases = [("i3d", ClipSpec(frames=64, fps=25.0, size=224, stride=32), args.i3d_batch),
                 (recipe_model, recipe_spec, args.batch)]
    rows = []
    for name, spec, batch in cases:
        rows += model_rates(name, spec, batch, args.steps, device, peak, warmup=1 if args.tiny else 2)
        print(json.dumps(rows[-2]), json.dumps(rows[-1]), sep="\n", flush=True)
    return rows


def section_serving(args, device: str) -> dict:
    """Windows/s into the Classifier on ``device`` through a shard's path; cameras per GPU."""
    import ray
    from ray import serve

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(BENCH))
    from bench_serve import graph_rate

    from bigsister_ray.clip import input_channels
    from bigsister_ray.config import Settings
    from bigsister_ray.models import CheckpointMeta, build_model, get_model_spec, save_checkpoint
    from bigsister_ray.runtime import ensure_ray
    from bigsister_ray.serve.app import AppArgs, build_app

    name, spec = cpu_recipe(args.tiny)
    root = Path(tempfile.mkdtemp(prefix="gpu-suite-serve-"))
    model = build_model(name, 2, in_channels=input_channels(spec.input))
    meta = CheckpointMeta(model_name=name, labels=["fight", "normal"], clip=spec,
                          norm=get_model_spec(name).norm, data_fingerprint=None, thresholds={}, epoch=0)
    ckpt = save_checkpoint(root / "ckpt", model, meta)
    gpu = 1.0 if device == "cuda" else 0.0
    settings = Settings(
        serve={"checkpoint": str(ckpt),
               "classifier": {"max_batch_size": args.serve_batch, "batch_wait_timeout_s": 0.01,
                              "num_cpus": 1.0, "num_gpus": gpu},
               "streams": {"media_root": str(root / "media")}, "shards": {"journal_dir": str(root / "journal")}},
        database={"url": f"sqlite:///{root / 'suite.db'}"},
        alerts={"alert_file": str(root / "alerts.jsonl"), "notifier": "console"},
        auth={"enabled": False, "allow_loopback": True})
    ensure_ray(settings, include_dashboard=False, log_to_driver=False)
    try:
        from tests._serve_support import free_port

        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        serve.run(build_app(AppArgs.from_settings(settings)), name="gpu-suite", route_prefix=None)
        streams = args.pseudo_streams
        graph_rate("gpu-suite", spec, streams=streams, seconds=min(2.0, args.serve_seconds))  # warm-up
        got = graph_rate("gpu-suite", spec, streams=streams, seconds=args.serve_seconds)
    finally:
        serve.shutdown()
        ray.shutdown()
    per_camera = spec.fps / spec.stride
    return {"clip": f"{spec.frames}x{spec.size}x{spec.size} {spec.input}", "model": name,
            "classifier_gpus": gpu, "pseudo_streams": streams, "windows_per_s": round(got["windows_per_s"], 1),
            "mean_batch": round(got["mean_batch"], 1), "windows_per_camera_s": per_camera,
            "cameras_per_classifier": int(got["windows_per_s"] / per_camera)}


def _decode_rate(path: Path, hwaccel) -> dict:
    import av

    from bigsister_ray.video.sniff import video_stream

    frames, wall, cpu = 0, time.perf_counter(), time.process_time()
    with av.open(str(path), hwaccel=hwaccel) as container:
        stream = video_stream(container, str(path))
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            frames += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"frames": frames, "frames_per_s": round(frames / wall, 1), "cpu_s_per_frame": round(cpu / frames, 5)}


def section_decode(args) -> dict:
    """NVDEC against the CPU decoder on a 1080p H.264 file (FFmpeg's testsrc2)."""
    from bigsister_ray.video.decode import hwaccel_for

    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not on PATH: install it (Debian: apt-get install ffmpeg) to make the test video")
    size, seconds = ("320x240", 1.0) if args.tiny else ("1920x1080", args.decode_seconds)
    path = Path(tempfile.mkdtemp(prefix="gpu-suite-decode-")) / "camera.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                    "-b:v", "4M", "-g", "50", "-pix_fmt", "yuv420p", str(path)], check=True)
    out: dict[str, Any] = {"video": f"{size} H.264 25 fps, {seconds:g} s", "cpu": _decode_rate(path, None)}
    out["cpu"]["cameras_per_core"] = round(1.0 / (25 * out["cpu"]["cpu_s_per_frame"]), 1)
    accel, problem = hwaccel_for("cuda")
    if accel is None:
        out["nvdec"] = {"error": problem}
    else:
        out["nvdec"] = _decode_rate(path, accel)
        out["nvdec"]["cameras_per_decoder"] = round(out["nvdec"]["frames_per_s"] / 25, 1)
    return out


def section_shards(args) -> dict:
    if not os.environ.get("BIGSISTER_TEST_POSTGRES_URL"):
        return {"skipped": "BIGSISTER_TEST_POSTGRES_URL is not set: eval \"$(bash .ci/start_postgres.sh)\" first"}
    out = Path(tempfile.mkdtemp(prefix="gpu-suite-shards-")) / "shards.json"
    subprocess.run([sys.executable, str(BENCH / "bench_shards.py"), "--mode", "capacity", "--steps", args.shard_steps,
                    "--hold", "20", "--out", str(out)], check=True, timeout=args.shard_timeout)
    return json.loads(out.read_text())


def run(args) -> dict:
    device, name, peak = _device(args.tiny)
    results: dict[str, Any] = {"device": name, "torch_device": device, "peak_bf16_flops": peak,
                               "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("models", lambda: section_models(args, device, peak)),
        ("serving", lambda: section_serving(args, device)),
        ("decode", lambda: section_decode(args)),
    ]
    if args.shards:
        sections.append(("shards", lambda: section_shards(args)))
    for key, fn in sections:
        if args.only and key not in args.only.split(","):
            continue
        t0 = time.perf_counter()
        try:
            results[key] = fn()
        except Exception as err:  # one section's failure is recorded; the others still run
            traceback.print_exc()
            results[key] = {"error": f"{type(err).__name__}: {err}"}
        results.setdefault("seconds", {})[key] = round(time.perf_counter() - t0, 1)
        print(f"{key}: {json.dumps(results[key])}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="Tiny sizes: the whole suite in seconds on a CPU.")
    p.add_argument("--only", default=None, help="Comma-separated sections: models,serving,decode,shards.")
    p.add_argument("--steps", type=int, default=10, help="Timed steps per model and mode.")
    p.add_argument("--i3d-batch", type=int, default=8)
    p.add_argument("--batch", type=int, default=64, help="Batch of the CPU recipe's model.")
    p.add_argument("--serve-batch", type=int, default=128, help="Classifier max_batch_size.")
    p.add_argument("--pseudo-streams", type=int, default=512, help="Concurrent pseudo-streams into the Classifier.")
    p.add_argument("--serve-seconds", type=float, default=20.0)
    p.add_argument("--decode-seconds", type=float, default=20.0)
    p.add_argument("--shards", action="store_true", help="Also run bench_shards.py --mode capacity.")
    p.add_argument("--shard-steps", default="16,32,64,96,128")
    p.add_argument("--shard-timeout", type=float, default=240.0)
    p.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.serve_batch, args.pseudo_streams = 1, 4, 4
        args.serve_seconds = min(args.serve_seconds, 1.0)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    results = run(args)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print("RESULT " + json.dumps(results), flush=True)
    return 1 if any(isinstance(v, dict) and "error" in v for v in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
