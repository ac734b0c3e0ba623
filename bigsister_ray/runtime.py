"""Starting or joining Ray, the same way from every command (prepare, train, serve, demo).

``ray.address`` unset means a new local Ray of our own (``address="local"``: never whichever cluster happens to
run on this host) with ``ray.num_cpus`` CPUs; set, it is the cluster to connect to.

A local Ray also keeps more idle worker processes alive (``ray.idle_workers``). Ray's raylet keeps one idle
worker per CPU and kills the others after a second idle. While a training worker holds every CPU of the node,
that is all of them: the processes that ran the shard-read tasks of one epoch are killed during validation, and
the next epoch waits about 2 s for new ones to start and import pyarrow, on the same cores as the training step.
Measured with ``benchmarks/bench_train.py`` (see ``benchmarks/RESULTS.md``). On a cluster started with
``ray start`` the same limit is the ``RAY_num_workers_soft_limit`` environment variable (``cluster.yaml`` sets it).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ensure_ray", "local_system_config"]


def local_system_config(num_cpus: int | None, idle_workers: int) -> dict[str, Any]:
    """The ``_system_config`` of a local Ray: idle worker processes kept = CPUs + ``idle_workers``."""
    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    return {"num_workers_soft_limit": int(cpus) + int(idle_workers)}


def ensure_ray(settings: Any, **init_kwargs: Any) -> bool:
    """Connect to ``settings.ray.address`` or start a local Ray, unless this process is already connected.

    ``init_kwargs`` go to :func:`ray.init` (e.g. ``include_dashboard=False``). Returns True when this call
    started or joined Ray (the caller then owns the ``ray.shutdown``), False when Ray was already up.
    """
    import ray

    if ray.is_initialized():
        return False
    rc = settings.ray
    kwargs: dict[str, Any] = {"namespace": rc.namespace, **init_kwargs}
    if rc.address:
        ray.init(address=rc.address, **kwargs)
    else:
        ray.init(address="local", num_cpus=rc.num_cpus,
                 _system_config=local_system_config(rc.num_cpus, rc.idle_workers), **kwargs)
    return True
