"""The incidents package's errors (re-exported by :mod:`bigsister_ray.incidents.store`)::

    BigSisterError
    └── IncidentStoreError          the database cannot be reached or refused a write (URL redacted)
        ├── IncidentNotFoundError   no incident/stream with that id
        ├── InvalidTransitionError  a review status change that TRANSITIONS does not allow
        ├── StaleLeaseError         a write carried a fencing token that is no longer the stream's current one
        └── MigrationError          the database schema cannot be brought to the revision this code needs
"""

from __future__ import annotations

from bigsister_ray.errors import BigSisterError
from bigsister_ray.incidents.models import TRANSITIONS

__all__ = ["IncidentStoreError", "IncidentNotFoundError", "InvalidTransitionError", "StaleLeaseError", "MigrationError"]


class IncidentStoreError(BigSisterError):
    """The database cannot be reached or refused a write."""


class IncidentNotFoundError(IncidentStoreError, KeyError):
    """No row with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class InvalidTransitionError(IncidentStoreError):
    """A review status change that is not allowed from the current status."""

    def __init__(self, incident_id: int, current: str, target: str) -> None:
        allowed = sorted(TRANSITIONS.get(current, ()))
        super().__init__(
            f"incident {incident_id} is {current!r}: cannot move to {target!r} "
            f"(allowed from {current!r}: {', '.join(allowed) if allowed else 'nothing, it is final'})"
        )
        self.incident_id, self.current, self.target = incident_id, current, target


class StaleLeaseError(IncidentStoreError):
    """A write carried a fencing token that is no longer the stream's current one (another shard owns it now).

    Nothing was written. The writer must stop working on the stream: retrying cannot succeed.
    """


class MigrationError(IncidentStoreError):
    """The database schema cannot be upgraded (or is newer than this code)."""
