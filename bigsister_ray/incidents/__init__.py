"""Incidents: SQLModel tables (streams, incidents, stream leases, shards), migrations, the store, the lease
store, the incident service and its HTTP router.

The names below are re-exported lazily: importing the package imports nothing else until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "IncidentStore": "store",
    "IncidentStoreError": "errors",
    "IncidentNotFoundError": "errors",
    "InvalidTransitionError": "errors",
    "StaleLeaseError": "errors",
    "MigrationError": "errors",
    "Fence": "fencing",
    "LeaseStore": "leases",
    "StreamLease": "models",
    "StreamLeasePublic": "models",
    "ShardRecord": "models",
    "ShardRecordPublic": "models",
    "IncidentService": "service",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
