"""The unit tier's guard (tests/unit/conftest.py) refuses what makes a test integration, and lets the rest through."""

from __future__ import annotations

import socket
import threading

import pytest


def test_a_unit_test_cannot_start_a_thread():
    ran: list[bool] = []
    with pytest.raises(RuntimeError, match="tests/unit must not start a thread; move this test to tests/integration"):
        threading.Thread(target=lambda: ran.append(True)).start()
    assert ran == []


@pytest.mark.parametrize("family, address", [(socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_INET6, ("::1", 0))])
def test_a_unit_test_cannot_open_a_server_or_a_network_connection(family, address):
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"no {family.name} sockets on this machine")
    with sock:
        with pytest.raises(RuntimeError, match="must not open a server socket"):
            sock.bind(address)
        with pytest.raises(RuntimeError, match="must not open a network connection"):
            sock.connect(address)
        with pytest.raises(RuntimeError, match="must not open a network connection"):
            sock.connect_ex(address)


def test_a_unit_test_cannot_start_ray():
    import ray

    # The suite's integration tests share one Ray that may already be up in this process: the guard must refuse
    # without starting or stopping anything either way.
    before = ray.is_initialized()
    with pytest.raises(RuntimeError, match="must not start Ray"):
        ray.init(address="local", num_cpus=1)
    assert ray.is_initialized() == before


def test_local_files_and_unix_sockets_stay_open_to_unit_tests(tmp_path):
    # a positive control for the socket guard: it refuses the network, not sockets as such
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen(1)
        client.connect(path)
        conn, _ = server.accept()
        with conn:
            client.sendall(b"ok")
            assert conn.recv(2) == b"ok"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_only_a_postgres_case_may_reach_the_network(request, backend):
    marked = request.node.get_closest_marker("postgres") is not None
    assert marked == (backend == "postgresql")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if marked:  # nothing listens on port 1 of loopback: refused by the kernel, not by the guard
            assert sock.connect_ex(("127.0.0.1", 1)) != 0
        else:
            with pytest.raises(RuntimeError, match="must not open a network connection"):
                sock.connect_ex(("127.0.0.1", 1))
