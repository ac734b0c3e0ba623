"""Starting or joining Ray, the same way from every command (prepare, train, serve, demo).

``ray.address`` unset means a new local Ray of our own (``address="local"``: never whichever cluster happens to
run on this host) with ``ray.num_cpus`` CPUs; set, it is the cluster to connect to.

A local Ray also keeps more idle worker processes alive (``ray.idle_workers``). Ray's raylet keeps one idle
worker per CPU and kills the others after a second idle. While a training worker holds every CPU of the node,
that is all of them: the processes that ran the shard-read tasks of one epoch are killed during validation, and
the next epoch waits about 2 s for new ones to start and import pyarrow, on the same cores as the training step.
Measured with ``benchmarks/bench_train.py`` (see ``benchmarks/RESULTS.md``). On a cluster started with
``ray start`` the same limit is the ``RAY_num_workers_soft_limit`` environment variable (``cluster.yaml`` sets it).

A local Ray started without the dashboard has no state API. Ray Train's ``PlacementGroupCleaner`` asks that API
every second whether the training controller is alive and warns each time it cannot (about 200 identical lines in
one ``bigsister demo``), so a local Ray started for training without the dashboard has its workers drop that one
warning (:func:`quiet_worker_logs`, Ray's ``worker_process_setup_hook``; ``ensure_ray(..., train=True)``).
Everything else they log still reaches the driver. Only for training: a job with a runtime environment gets no
pre-started worker processes, so its first tasks wait longer for workers, about 1.5 s in all at the start of a run
(``benchmarks/worker_start.py``; RESULTS.md).

A local Ray listens on the loopback interface only. Ray turns a node address of ``127.0.0.1`` into the host's
routable address, and then its GCS, raylet, object manager, dashboard agent, runtime-env agent, metrics ports and
every worker's gRPC server listen on all interfaces: any host that reaches this one could submit code to it (Ray
has no authentication). The node address is kept at ``127.0.0.1`` (:func:`_loopback_node`), and every one of them
binds to loopback. The dashboard is off unless asked for (``include_dashboard=True``), and then on ``127.0.0.1``.
Not covered: the Serve HTTP proxy binds ``serve.host`` (loopback by default); every Serve replica opens an
inter-deployment gRPC server on all interfaces (Ray Serve hard-codes ``[::]:0``; it runs the deployment's methods
for whoever connects); a Ray Train run's ``torch.distributed`` rendezvous store listens on all interfaces while the
run lasts. On a host others can reach, a host firewall that drops inbound connections to ports other than the
published HTTP port closes these. A cluster (``ray.address``
set) is exposed as its ``ray start`` flags and security groups say (``cluster.yaml``).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

from bigsister_ray.config import Settings

__all__ = ["ensure_ray", "local_system_config", "quiet_worker_logs", "LOOPBACK"]

#: The address a local Ray binds to.
LOOPBACK = "127.0.0.1"

#: The logger of Ray Train's placement-group cleaner, and the warning it repeats while the state API is absent.
PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
STATE_API_ABSENT = "Failed to query Ray Train Controller actor state"


def _not_state_api_absent(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(STATE_API_ABSENT)


def quiet_worker_logs() -> None:
    """Worker setup hook of a local Ray without the dashboard: drop the cleaner's state-API warning (see above)."""
    logger = logging.getLogger(PG_CLEANER_LOGGER)
    if _not_state_api_absent not in logger.filters:
        logger.addFilter(_not_state_api_absent)


def local_system_config(num_cpus: int | None, idle_workers: int) -> dict[str, Any]:
    """The ``_system_config`` of a local Ray: idle worker processes kept = CPUs + ``idle_workers``."""
    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    return {"num_workers_soft_limit": int(cpus) + int(idle_workers)}


@contextmanager
def _loopback_node() -> Iterator[None]:
    """While Ray starts: let ``127.0.0.1`` be the node address (Ray's own rule on a single-host macOS or Windows
    Ray, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``); Ray's processes then bind to it. Read once, at start-up."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def ensure_ray(settings: Settings, *, train: bool = False, **init_kwargs: Any) -> bool:
    """Connect to ``settings.ray.address`` or start a local Ray, unless this process is already connected.

    ``init_kwargs`` go to :func:`ray.init` (e.g. ``include_dashboard=True``). A local Ray listens on loopback only
    and has no dashboard unless ``include_dashboard=True`` (then on ``127.0.0.1`` unless ``dashboard_host`` says
    otherwise). ``train``: this Ray will run Ray Train (a local one without the dashboard then quiets the
    cleaner's warning, see above). Returns True when this call started or joined Ray (the caller then owns the
    ``ray.shutdown``), False when Ray was already up.
    """
    import ray

    if ray.is_initialized():
        return False
    rc = settings.ray
    kwargs: dict[str, Any] = {"namespace": rc.namespace, **init_kwargs}
    if rc.address:
        ray.init(address=rc.address, **kwargs)
    else:
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("dashboard_host", LOOPBACK)
        kwargs.setdefault("_node_ip_address", LOOPBACK)
        if train and kwargs["include_dashboard"] is False and "runtime_env" not in kwargs:
            kwargs["runtime_env"] = {"worker_process_setup_hook": f"{__name__}.quiet_worker_logs"}
        with _loopback_node():
            ray.init(address="local", num_cpus=rc.num_cpus,
                     _system_config=local_system_config(rc.num_cpus, rc.idle_workers), **kwargs)
    return True
