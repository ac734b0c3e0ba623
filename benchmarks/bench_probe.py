"""Benchmark (not a test): probing a video and decoding one clip's frames, decord against PyAV.

Where decord cannot be imported, :func:`bigsister_ray.video.files.open_reader` returns a
:class:`~bigsister_ray.video.files.PyAVReader`: the frame count from the stream's packets, the fps from its average
rate, frames by one forward decode. This measures both readers on the same file, alternating, ``--rounds`` times:

- **probe**: open, frame count and fps (what :func:`~bigsister_ray.video.files.probe` and every decode job need);
- **decode**: the full-resolution RGB frames of one clip (``--clip-s`` seconds in the middle of the video,
  sampled at the ClipSpec's fps) through the reader's ``get_batch``, as :func:`~bigsister_ray.video.files.decode_frames`
  does;
- **probe+decode**: the two together.

Both readers must report the same frame count and fps and give the same frames, or the run stops. The clip pixels
of ``prepare`` come from :class:`~bigsister_ray.video.files.ScaledFrameReader` (PyAV) with either reader, so only
the probe differs there. One decoder thread, one process.

Videos are made with ``ffmpeg``'s ``testsrc2`` (H.264, 25 fps, GOP 2 s) into a temporary folder. Run::

    python benchmarks/bench_probe.py --seconds 16 --size 640x360 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_video(path: Path, size: str, seconds: float) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p",
                    str(path)], check=True)


def _decord_reader(path: Path):
    import decord

    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def _pyav_reader(path: Path):
    from bigsister_ray.video.files import PyAVReader

    return PyAVReader(path, num_threads=1)


def _one(make, path: Path, indices: list[int]) -> tuple[float, float, tuple[int, float], object]:
    t0 = time.perf_counter()
    reader = make(path)
    facts = (len(reader), float(reader.get_avg_fps()))
    t1 = time.perf_counter()
    frames = reader.get_batch(indices).asnumpy()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, facts, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=16.0, help="length of the test video")
    parser.add_argument("--size", default="640x360", help="WxH of the test video")
    parser.add_argument("--clip-s", type=float, default=2.0, help="length of the clip decoded, in the video's middle")
    parser.add_argument("--preset", default="laptop", help="ClipSpec preset whose fps samples the clip")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import numpy as np

    from bigsister_ray.clip import CLIP_PRESETS, sample_indices

    spec = CLIP_PRESETS[args.preset]
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        video = Path(tmp) / f"testsrc2-{args.size}.mp4"
        make_video(video, args.size, args.seconds)
        n, fps = len(_pyav_reader(video)), _pyav_reader(video).get_avg_fps()
        mid = args.seconds / 2
        indices = [int(i) for i in sample_indices(n, fps, spec, mid - args.clip_s / 2, mid + args.clip_s / 2)]
        times: dict[str, dict[str, list[float]]] = {"decord": {"probe": [], "decode": []},
                                                    "pyav": {"probe": [], "decode": []}}
        _one(_decord_reader, video, indices), _one(_pyav_reader, video, indices)  # warm the page cache and imports
        for _ in range(args.rounds):
            results = {}
            for name, make in (("decord", _decord_reader), ("pyav", _pyav_reader)):
                probe_s, decode_s, facts, frames = _one(make, video, indices)
                times[name]["probe"].append(probe_s)
                times[name]["decode"].append(decode_s)
                results[name] = (facts, frames)
            (fa, a), (fb, b) = results["decord"], results["pyav"]
            if fa != fb:
                raise SystemExit(f"the readers disagree: decord {fa}, PyAV {fb} (frames, fps)")
            diff = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
        med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
        for name in med:
            med[name]["total"] = med[name]["probe"] + med[name]["decode"]
        result = {
            "video": f"{args.size}, {args.seconds:g} s, 25 fps H.264", "frames": n, "fps": fps,
            "clip_frames": len(indices), "clip_span": [indices[0], indices[-1]], "rounds": args.rounds,
            "max_pixel_difference": diff,
            "median_ms": {name: {k: round(v * 1000, 2) for k, v in m.items()} for name, m in med.items()},
            "pyav_over_decord": {k: round(med["pyav"][k] / med["decord"][k], 2) for k in ("probe", "decode", "total")},
            "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        }
    print(json.dumps(result))
    m = result["median_ms"]
    print(f"probe: decord {m['decord']['probe']} ms, PyAV {m['pyav']['probe']} ms; decode {len(indices)} frames: decord "
          f"{m['decord']['decode']} ms, PyAV {m['pyav']['decode']} ms; probe+decode: decord {m['decord']['total']} ms, "
          f"PyAV {m['pyav']['total']} ms (PyAV/decord {result['pyav_over_decord']['total']}x)")


if __name__ == "__main__":
    main()
