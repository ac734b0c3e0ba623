"""Ray Serve: the serving graph (Ingress -> StreamShard x N -> Classifier x M, incidents from the shards) and detection.

* :func:`build_app` / :class:`AppArgs`: the application (``deploy/serve_config.yaml`` points at it);
* :func:`run_serve`: ``bigsister serve`` on a local Ray, blocking until Ctrl-C;
* :func:`detect_file`: ``bigsister detect``, the same answer as ``POST /detect``.

Importing this package starts nothing and imports neither Ray Serve nor torch; the deployments load on use.
"""

from bigsister_ray.serve.app import AppArgs, build_app, deployment_options, run_serve
from bigsister_ray.serve.detect import detect_file

__all__ = ["AppArgs", "build_app", "run_serve", "deployment_options", "detect_file"]
