"""Request/response schemas of the incidents HTTP API (the table schemas live in models.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bigsister_ray.incidents.models import IncidentActionPublic, IncidentPublic

__all__ = ["IncidentPage", "ErrorDetail", "ActionBody", "AuditTrail"]


class IncidentPage(BaseModel):
    """One page of incidents, newest first. ``total`` counts every incident matching the filters."""

    items: list[IncidentPublic]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


class ErrorDetail(BaseModel):
    detail: str


class ActionBody(BaseModel):
    """Optional body of ``POST /incidents/{id}/ack|false-alarm|resolve``."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000, description="Why (kept in the audit trail).")


class AuditTrail(BaseModel):
    """The operator actions on one incident, oldest first."""

    incident_id: int
    items: list[IncidentActionPublic]
