"""A 4K upload's decode stays within the documented memory bound of the Ingress (docs/security.md).

The clip is made here (3840x2160 H.264, 20 frames). It is decoded by the upload path (``iter_window_batches``:
every frame scaled at decode time, one chunk of sampled frames at a time) in a fresh process, which reports its
peak resident memory before and after. The bound is far below what one chunk of full-resolution RGB frames
would take (64 x 3840 x 2160 x 3 bytes = 1.6 GB), so a decode that converted at full size would fail it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
#: Peak memory one 4K upload decode may add to the Ingress process (docs/security.md).
BOUND_MB = 200

PROBE = """
import json, resource, sys
from bigsister_ray.clip import ClipSpec
from bigsister_ray.serve.detect import iter_window_batches
spec = ClipSpec(frames=16, fps=8.0, size=112, stride=8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
windows = sum(len(b) for b in iter_window_batches(sys.argv[1], spec, 16, max_seconds=60.0))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"windows": windows, "before_mb": before / 1024, "after_mb": after / 1024}))
"""


def _make_4k(path: Path, frames: int = 20) -> None:
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 3840, 2160, "yuv420p"
        st.options = {"preset": "ultrafast"}
        for i in range(frames):
            img = np.zeros((2160, 3840, 3), np.uint8)
            img[:, (i * 97) % 3400:(i * 97) % 3400 + 400] = 200
            img[::7, ::5] = rng.integers(0, 255, size=img[::7, ::5].shape, dtype=np.uint8)
            for packet in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)


@pytest.mark.slow
def test_a_4k_upload_decodes_within_the_documented_memory_bound(tmp_path):
    clip = tmp_path / "4k.mp4"
    _make_4k(clip)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(clip)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["windows"] >= 1, report  # positive control: the 4K clip was decoded into windows
    growth = report["after_mb"] - report["before_mb"]
    assert growth < BOUND_MB, f"a 4K upload decode added {growth:.0f} MB (bound {BOUND_MB} MB): {report}"
