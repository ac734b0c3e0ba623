"""Request/response schemas of the incidents HTTP API (the table schemas live in models.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bigsister_ray.incidents.models import IncidentPublic

__all__ = ["IncidentPage", "ErrorDetail"]


class IncidentPage(BaseModel):
    """One page of incidents, newest first. ``total`` counts every incident matching the filters."""

    items: list[IncidentPublic]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


class ErrorDetail(BaseModel):
    detail: str
