"""A local Ray started by our commands (``bigsister serve``, ``bigsister demo``) listens on loopback only.

The check runs in its own Python process with its own local Ray (``ensure_ray``, as the commands start it), with
a task, an actor and Serve's HTTP proxy running, and reads the listening sockets of that process and every process
under it (GCS, raylet, agents, workers, Serve's controller and proxy).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent("""
    import json, os, socket, sys
    import psutil
    import ray
    from ray import serve
    from bigsister_ray.config import Settings
    from bigsister_ray.runtime import ensure_ray

    settings = Settings.model_validate({"ray": {"num_cpus": 2}})
    assert ensure_ray(settings, log_to_driver=False)

    @ray.remote(num_cpus=0)
    def task():
        return os.getpid()

    @ray.remote(num_cpus=0)
    class Actor:
        def pid(self):
            return os.getpid()

    actor = Actor.remote()
    ray.get([task.remote(), actor.pid.remote()])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": settings.serve.host, "port": port})

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
    def hello():
        return "hi"

    serve.run(hello.bind(), name="probe", route_prefix="/probe")
    me = psutil.Process()
    listening = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
                    listening.append({"pid": proc.pid, "name": name, "ip": conn.laddr.ip, "port": conn.laddr.port})
        except psutil.NoSuchProcess:
            continue
    print("RESULT " + json.dumps({"listening": listening, "node_ip": ray.util.get_node_ip_address(),
                                  "dashboard": ray.get_runtime_context().gcs_address}), flush=True)
    serve.shutdown()
    ray.shutdown()
""")


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@pytest.mark.timeout(300)
def test_local_ray_and_serve_listen_on_loopback_only():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    listening = result["listening"]
    names = {s["name"] for s in listening}
    # positive control: the probe saw Ray's own servers and the Serve proxy, so an empty "exposed" means something
    assert {"gcs_server", "raylet"} <= names, names
    assert any("ProxyActor" in n for n in names) or len(listening) >= 6, listening
    exposed = [s for s in listening if not _is_loopback(s["ip"])]
    # Ray Serve 2.60 starts an inter-deployment gRPC server in every replica on "[::]:0" (hard-coded in
    # ray/serve/_private/replica.py, no option): the one socket of ours on all interfaces. It is named here so
    # that any other socket beyond loopback fails; closing it takes a host firewall (bigsister_ray/runtime.py).
    replica_grpc = [s for s in exposed if s["name"].startswith("ray::ServeReplica:")]
    assert [s for s in exposed if s not in replica_grpc] == [], f"listening beyond loopback: {exposed}"
    assert len(replica_grpc) <= 1, replica_grpc
    assert result["node_ip"] == "127.0.0.1"
    assert not any(s["port"] == 8265 for s in listening), "the dashboard runs although nobody asked for it"
