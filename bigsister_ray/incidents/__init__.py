"""Incidents: SQLModel tables (streams, incidents), the store, the incident service and its HTTP router.

Import submodules directly (``bigsister_ray.incidents.store``); this package imports nothing at import time.
"""

__all__: list[str] = []
