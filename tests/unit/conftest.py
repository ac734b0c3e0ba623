"""Unit tier: in-process and single-threaded.

A unit test starts no Ray, no thread and no server, and opens no network connection: the fixture below refuses
each with an error that says where the test belongs (tests/integration). The one exception is a store test's
PostgreSQL case (marker ``postgres``, added in tests/conftest.py), which connects to the test server;
``pytest tests/unit -m "not postgres"`` is the tier with no server at all.

Only the test's own thread is refused: in a whole-suite run the integration tier's shared Ray may be up in the
same process, and its background threads (Serve's long-poll client, gRPC) must go on starting threads and
connections while a unit test runs.
"""

import socket
import threading

import pytest

_NETWORK = (socket.AF_INET, socket.AF_INET6)


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"tests/unit must not {what}; move this test to tests/integration")

    return refuse


def _on_the_test_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@pytest.fixture(autouse=True)
def _unit_tier_only(request, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", _refuse("start Ray"))
    real_start = threading.Thread.start

    def start(self):
        if _on_the_test_thread():
            _refuse("start a thread")()
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    if request.node.get_closest_marker("postgres") is not None:
        return
    for method, what in (("bind", "open a server socket"), ("connect", "open a network connection"),
                         ("connect_ex", "open a network connection")):
        real = getattr(socket.socket, method)

        def guarded(self, address, *, _real=real, _what=what):
            if self.family in _NETWORK and _on_the_test_thread():
                _refuse(_what)()
            return _real(self, address)

        monkeypatch.setattr(socket.socket, method, guarded)


@pytest.fixture()
def torch_one_thread():
    """One torch thread and a fixed seed for the test; the thread count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)
