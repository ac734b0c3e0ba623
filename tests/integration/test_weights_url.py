"""I3D weights from a URL, served by a local HTTP server on 127.0.0.1, and clear errors when the URL fails."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch

from bigsister_ray.errors import CheckpointError
from bigsister_ray.models.i3d import i3d

from tests.unit.test_i3d import _kinetics_file  # noqa: F401 (shared fixtures)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_weights_from_a_url_and_clear_errors(http_dir):
    root, base = http_dir
    path, sd = _kinetics_file(root)
    model = i3d(num_classes=3, weights=f"{base}/{path.name}")
    assert torch.equal(model.Mixed_5c.b3b.conv3d.weight, sd["Mixed_5c.b3b.conv3d.weight"])
    with pytest.raises(CheckpointError, match=r"HTTP 404") as err:
        i3d(num_classes=3, weights=f"http://user:secret@127.0.0.1:{base.rsplit(':', 1)[1]}/nope.pt?token=abc")
    assert "secret" not in str(err.value) and "token=abc" not in str(err.value) and "/nope.pt" in str(err.value)
    (root / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        i3d(num_classes=3, weights=f"{base}/junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        i3d(num_classes=3, weights=str(root / "absent.pt"))
