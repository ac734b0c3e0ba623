"""Benchmark (not a test): CPU cost of one camera in a stream shard, decode + resize + window assembly.

A :class:`~bigsister_ray.video.stream.StreamRunner` replays an H.264 file as fast as it decodes
(``realtime=False``) into a :class:`~bigsister_ray.video.windows.WindowAssembler`. Measured: process CPU
seconds (``time.process_time``: every thread of the process, decoder threads included) per second of video,
and from it cameras per CPU core = 1 / (CPU-s per camera-second). Two paths run side by side, alternating,
``--rounds`` times each:

- **new**: FFmpeg scales each kept frame from the decoder's YUV frame to the clip size (``clip.scale_frame``);
- **baseline**: each kept frame converted to full-resolution RGB, then ``clip.preprocess_frames`` (torch).

Videos (made with ``ffmpeg``'s ``testsrc2`` into a temporary folder): 320x240 and 1920x1080, 25 fps, H.264
(``--hd-bitrate``, default 4 Mbit/s). Torch runs one thread (a shard's stream threads share the node).

Run::

    python benchmarks/bench_stream_decode.py --seconds 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_video(path: Path, size: str, seconds: float, bitrate: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
           "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-b:v", bitrate, "-maxrate", bitrate,
           "-bufsize", bitrate, "-g", "50", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)


class _BaselineScaler:
    """The baseline path: full-resolution RGB, then torch's antialiased bilinear resize."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self._last = None

    def __call__(self, frame):
        from bigsister_ray.clip import preprocess_frames

        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        small = preprocess_frames(frame.to_ndarray(format="rgb24"), self.spec)[0]
        self._last = (frame, small)
        return small


def run_once(path: Path, spec, baseline: bool, decode_threads: int) -> dict:
    import bigsister_ray.video.reader as reader_mod
    from bigsister_ray.config import StreamsConfig
    from bigsister_ray.video.decode import KeptFrameScaler
    from bigsister_ray.video.stream import StreamRunner
    from bigsister_ray.video.windows import WindowAssembler

    reader_mod.KeptFrameScaler = _BaselineScaler if baseline else KeptFrameScaler  # type: ignore[misc]
    asm = WindowAssembler(spec)
    windows = [0]
    ended = threading.Event()

    def on_frames(_sid, frames, stamps):
        windows[0] += len(asm.push(frames, stamps))

    cfg = StreamsConfig(media_root=path.parent, decode_threads=decode_threads, max_buffer_windows=4)
    runner = StreamRunner("bench", path.name, spec, cfg, on_frames, realtime=False, on_end=lambda _s: ended.set())
    cpu0, wall0 = time.process_time(), time.monotonic()
    runner.start()
    if not ended.wait(600):
        runner.stop(10)
        raise RuntimeError(f"{path.name}: the replay did not end within 600 s: {runner.status()}")
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    runner.stop(10)
    reader_mod.KeptFrameScaler = KeptFrameScaler  # type: ignore[misc]
    status = runner.status()
    if status.last_error:
        raise RuntimeError(f"{path.name}: {status.last_error}")
    return {"cpu_s": cpu, "wall_s": wall, "frames_decoded": status.frames_decoded,
            "frames_delivered": status.frames_delivered, "windows": windows[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each test video")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each path per video (alternating)")
    ap.add_argument("--hd-bitrate", default="4M")
    ap.add_argument("--decode-threads", type=int, default=1, help="serve.streams.decode_threads")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("needs the ffmpeg command (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    import torch

    from bigsister_ray.clip import CLIP_PRESETS

    torch.set_num_threads(1)
    spec = CLIP_PRESETS["laptop"]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stream-decode-") as tmp:
        videos = {"320x240": Path(tmp) / "small.mp4", "1920x1080": Path(tmp) / "hd.mp4"}
        make_video(videos["320x240"], "320x240", args.seconds, "500k")
        make_video(videos["1920x1080"], "1920x1080", args.seconds, args.hd_bitrate)
        for name, path in videos.items():
            runs: dict[str, list[dict]] = {"new": [], "baseline": []}
            run_once(path, spec, baseline=False, decode_threads=args.decode_threads)  # warm-up (imports, caches)
            for r in range(args.rounds):
                order = ("new", "baseline") if r % 2 == 0 else ("baseline", "new")
                for which in order:
                    runs[which].append(run_once(path, spec, which == "baseline", args.decode_threads))
            row: dict[str, object] = {"video": name, "seconds": args.seconds, "rounds": args.rounds}
            for which, rs in runs.items():
                per_cam_s = [x["cpu_s"] / args.seconds for x in rs]
                med = statistics.median(per_cam_s)
                row[which] = {"cpu_s_per_camera_s": round(med, 4), "cameras_per_core": round(1 / med, 2),
                              "spread": [round(min(per_cam_s), 4), round(max(per_cam_s), 4)],
                              "frames_decoded": rs[0]["frames_decoded"], "frames_delivered": rs[0]["frames_delivered"],
                              "windows": rs[0]["windows"]}
            row["ratio_cameras_per_core"] = round(row["new"]["cameras_per_core"] / row["baseline"]["cameras_per_core"], 2)
            results[name] = row
            print(json.dumps(row), flush=True)
    print()
    print("| video | new: cameras/core (CPU-s per camera-s) | baseline: cameras/core | ratio |")
    print("|---|---|---|---|")
    for name, row in results.items():
        n, b = row["new"], row["baseline"]
        print(f"| {name} | {n['cameras_per_core']} ({n['cpu_s_per_camera_s']}) | {b['cameras_per_core']} "
              f"({b['cpu_s_per_camera_s']}) | {row['ratio_cameras_per_core']}x |")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
