"""``GET /incidents/{id}/clip``: an incident's evidence clip, ``video/mp4``, with HTTP Range requests (browsers
ask for byte ranges to start playing and to seek: ``206 Partial Content``; an unsatisfiable range is a 416).

Read scope, like the other ``/incidents`` routes. 404 for an unknown incident, one without a clip, or a clip whose
file is gone (deleted by the media retention sweep). The stored path is relative to ``incidents.media_dir`` and
is refused if it leads out of it.
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations.
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from bigsister_ray.serve.context import ServeContext, get_ctx

__all__ = ["router", "clip_file"]

router = APIRouter(prefix="/incidents", tags=["incidents"])

IncidentId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="Incident id.")]


def clip_file(store, media_dir: Path, incident_id: int) -> Path:
    """The incident's clip file; HTTPException 404 when there is none and 503 when the database cannot say."""
    from bigsister_ray.incidents.store import IncidentNotFoundError, IncidentStoreError

    try:
        rel = store.get_clip_path(incident_id)
    except IncidentNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from err
    except IncidentStoreError as err:
        raise HTTPException(status_code=503, detail=f"incident store unavailable: {err}") from err
    if rel is None:
        raise HTTPException(status_code=404, detail=f"incident {incident_id} has no evidence clip")
    root = Path(media_dir).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(status_code=404, detail=f"incident {incident_id}: its clip path leads out of incidents.media_dir")
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"incident {incident_id}: its clip file is gone (media retention)")
    return path


@router.get("/{incident_id}/clip", response_class=FileResponse,
                  responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "The requested byte range."},
                             404: {"description": "No such incident, or it has no clip."}, 416: {"description": "Range not satisfiable."}})
def get_clip(incident_id: IncidentId, ctx: ServeContext = Depends(get_ctx)) -> FileResponse:
    """The evidence clip (H.264 MP4, faststart); supports ``Range: bytes=...``."""
    path = clip_file(ctx.store, ctx.settings.incidents.media_dir, incident_id)
    return FileResponse(path, media_type="video/mp4", filename=f"incident-{incident_id}.mp4", content_disposition_type="inline",
                        headers={"Cache-Control": "private, max-age=3600"})
