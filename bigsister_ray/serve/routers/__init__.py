"""One router per resource: streams, shards, detect, health (incidents come from bigsister_ray.incidents.api)."""

from bigsister_ray.serve.routers.detect import router as detect_router
from bigsister_ray.serve.routers.health import router as health_router
from bigsister_ray.serve.routers.streams import router as streams_router
from bigsister_ray.serve.routers.streams import shards_router

__all__ = ["streams_router", "shards_router", "detect_router", "health_router"]
