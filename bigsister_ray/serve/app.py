"""The serving graph: ``build_app(args)`` binds the Ingress to the StreamShards and the Classifier.

Handle composition (no DAGDriver/InputNode)::

    Ingress (FastAPI) ──poke()──▶ StreamShard x N ──classify_many(windows)──▶ Classifier x M (@serve.batch)
         │                       (streams leased in the database;      │
         │                        decode + window + alert rules)       └──▶ incidents (fenced) ─▶ outbox ─▶ Slack
         └── /detect windows ────────────────────────────────────────────▶ Classifier

StreamShards scale with the registered streams (``ceil(streams / serve.streams.per_shard)`` within
``serve.shards``; :func:`bigsister_ray.serve.ownership.shard_count_policy`) and spread over the CPU nodes.
``deploy/serve_config.yaml`` points ``import_path`` at :func:`build_app` (``serve run`` / ``serve deploy``);
``bigsister serve`` calls :func:`run_serve`, which starts a local Ray and Serve on the settings' host and port.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bigsister_ray.config import Settings
from bigsister_ray.errors import ConfigError
from bigsister_ray.runtime import ensure_ray

__all__ = ["AppArgs", "build_app", "run_serve", "deployment_options", "http_options", "check_clip_matches",
           "check_database_for_cluster", "check_media_for_cluster"]

log = logging.getLogger(__name__)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class AppArgs(BaseModel):
    """Arguments of :func:`build_app` (the ``args:`` of an application in ``serve_config.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    config: Path | None = Field(None, description="YAML settings file, as `bigsister --config` takes.")
    checkpoint: Path | None = Field(None, description="Checkpoint to serve (overrides serve.checkpoint).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Settings overrides, nested like the YAML file.")

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> "AppArgs":
        """Args that rebuild exactly ``settings`` (secrets kept as SecretStr, not masked)."""
        return cls(settings=settings.model_dump(mode="python"), **kwargs)

    def to_settings(self) -> Any:
        """The settings tree: the YAML file, then ``settings`` overrides, then ``checkpoint``; validated."""
        from pydantic import ValidationError

        from bigsister_ray.config import format_validation_error, load_settings

        data: dict[str, Any] = {}
        if self.config is not None:
            data = load_settings(self.config).model_dump(mode="python")
        data = _deep_merge(data, self.settings)
        if self.checkpoint is not None:
            data = _deep_merge(data, {"serve": {"checkpoint": self.checkpoint}})
        try:
            return Settings(**data)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, "serve application args")) from err


def deployment_options(settings: Settings) -> dict[str, dict[str, Any]]:
    """Serve options of each deployment, from ``settings.serve`` (resources, batching, autoscaling, queues)."""
    sv = settings.serve
    c, sh = sv.classifier, sv.shards
    return {
        "Classifier": {
            "ray_actor_options": {"num_cpus": c.num_cpus, "num_gpus": c.num_gpus},
            "autoscaling_config": {
                "min_replicas": c.min_replicas,
                "initial_replicas": max(1, c.min_replicas),
                "max_replicas": c.max_replicas,
                "target_ongoing_requests": c.target_ongoing_requests,
            },
            "user_config": {"max_batch_size": c.max_batch_size, "batch_wait_timeout_s": c.batch_wait_timeout_s,
                            "stuck_after_s": c.stuck_after_s},
            "health_check_period_s": c.health_check_period_s,
            "health_check_timeout_s": max(30.0, c.health_check_period_s),
            # Enough requests in flight per replica to fill several batches.
            "max_ongoing_requests": max(sv.max_ongoing_requests, 4 * c.max_batch_size),
            "max_queued_requests": -1,
        },
        "StreamShard": {
            "ray_actor_options": {"num_cpus": sh.num_cpus},
            "autoscaling_config": {
                "min_replicas": sh.min_shards,
                "initial_replicas": sh.min_shards,
                "max_replicas": sh.max_shards,
                "policy": {"policy_function": "bigsister_ray.serve.ownership:shard_count_policy"},
                "upscale_delay_s": 2.0,
                "downscale_delay_s": 60.0,
            },
            **({"max_replicas_per_node": sh.max_per_node} if sh.max_per_node else {}),
            "max_ongoing_requests": 1_000,
            "max_queued_requests": -1,
            "graceful_shutdown_timeout_s": 30,
            "health_check_period_s": max(2.0, sh.lease_ttl_s / 2),
            "health_check_timeout_s": 30.0,
        },
        "Ingress": {"ray_actor_options": {"num_cpus": 0}, "max_ongoing_requests": sv.max_ongoing_requests,
                    "max_queued_requests": sv.max_queued_requests},
    }


def check_clip_matches(settings: Settings, meta: Any, checkpoint: str) -> None:
    """Refuse a config whose ``clip`` was changed from the embedded default to something else than the checkpoint's.

    Serving always cuts windows with the checkpoint's ClipSpec (what the model was trained on); a config that
    sets another one would be silently ignored, so it is an error that says which to change.
    """

    default = Settings.model_fields["clip"].get_default(call_default_factory=True)
    if settings.clip != meta.clip and settings.clip != default:
        raise ConfigError(f"clip: the config sets {settings.clip!r} but the checkpoint {checkpoint} was trained with "
                          f"{meta.clip!r}; serving uses the checkpoint's clip: remove `clip:` from the config, set it "
                          "to the checkpoint's, or serve a checkpoint trained with this clip")


def http_options(settings: Settings) -> dict[str, Any]:
    """Serve's ``http_options``: bind address and port, and the request timeout (``serve.request_timeout_s``)."""
    sv = settings.serve
    return {"host": sv.host, "port": sv.port, "request_timeout_s": sv.request_timeout_s}


def check_database_for_cluster(settings: Settings, alive_nodes: int) -> None:
    """Refuse SQLite when the app spans several nodes: each node would keep its own file, leases would not be shared
    and a stream could run twice. Raises :class:`ConfigError` saying to set ``database.url`` to PostgreSQL."""
    if alive_nodes > 1 and settings.database.url.startswith("sqlite"):
        raise ConfigError(f"the Ray cluster has {alive_nodes} nodes but database.url is SQLite ({settings.database.url}): "
                          "stream shards on several nodes need one shared database; set database.url (or "
                          "BIGSISTER_DATABASE__URL) to postgresql://USER:PASSWORD@HOST/DB")


def check_media_for_cluster(settings: Settings, hosts: list[str], *, mounts_text: str | None = None) -> None:
    """Refuse a node-local ``incidents.media_dir`` when the app spans several machines (``hosts``): the shards write
    evidence clips and camera pictures on whichever node decodes the camera and the Ingress serves them from its
    own, so each would see only its node's files. Raises :class:`ConfigError` saying what to set."""
    from bigsister_ray.storage import is_on_network_filesystem

    media = Path(settings.incidents.media_dir)
    if len(hosts) > 1 and not is_on_network_filesystem(media, mounts_text=mounts_text):
        raise ConfigError(f"the Ray cluster spans {len(hosts)} machines but incidents.media_dir ({media}) is on a local "
                          "disk: stream shards on any node write evidence clips and camera pictures there and the "
                          "Ingress serves them, so each would see only its own node's files. Set incidents.media_dir "
                          "(or BIGSISTER_INCIDENTS__MEDIA_DIR) to a folder every node mounts (NFS, EFS, e.g. "
                          "/mnt/bigsister/evidence); see docs/cluster.md")


def _cluster_checks(settings: Settings) -> None:
    from bigsister_ray.storage import cluster_hosts

    check_database_for_cluster(settings, _alive_nodes())
    check_media_for_cluster(settings, cluster_hosts())


def _alive_nodes() -> int:
    import ray

    if not ray.is_initialized():
        return 1
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def build_app(args: AppArgs | dict[str, Any]) -> Any:
    """The serving application (``ray.serve.Application``): the Ingress bound to the rest by handles.

    Raises :class:`ConfigError` when no checkpoint is configured, :class:`CheckpointError` when it is unreadable.
    """
    from bigsister_ray.models.checkpoint import read_checkpoint_meta, resolve_checkpoint_path
    from bigsister_ray.serve.classifier import Classifier
    from bigsister_ray.serve.ingress import Ingress
    from bigsister_ray.serve.shard import StreamShard

    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args or {})
    settings = args.to_settings()
    streams = settings.serve.streams
    if not Path(streams.media_root).is_absolute():  # replicas run in other working directories: resolve it here
        streams.media_root = Path(streams.media_root).resolve()
    if not Path(settings.serve.shards.journal_dir).is_absolute():
        settings.serve.shards.journal_dir = Path(settings.serve.shards.journal_dir).resolve()
    if not Path(settings.incidents.media_dir).is_absolute():  # shards write clips there, the Ingress serves them
        settings.incidents.media_dir = Path(settings.incidents.media_dir).resolve()
    if settings.serve.checkpoint is None:
        raise ConfigError("serve.checkpoint is not set: pass --checkpoint PATH, set serve.checkpoint in the config file, "
                          "or `checkpoint:` in the application args")
    ckpt = str(resolve_checkpoint_path(settings.serve.checkpoint).resolve())
    meta = read_checkpoint_meta(ckpt)  # fail here, not in five replicas
    check_clip_matches(settings, meta, ckpt)
    _cluster_checks(settings)
    log.info("serving %s (%s, labels %s, clip %s)", ckpt, meta.model_name, meta.labels, meta.clip)
    opts = deployment_options(settings)
    torch_threads = max(1, int(settings.serve.classifier.num_cpus))
    classifier = Classifier.options(**opts["Classifier"]).bind(ckpt, torch_threads)
    shards = StreamShard.options(**opts["StreamShard"]).bind(settings, ckpt, classifier, settings.serve.classifier.max_batch_size)
    return Ingress.options(**opts["Ingress"]).bind(settings, shards, classifier)

def run_serve(settings: Settings, *, block: bool = True, stop_event: threading.Event | None = None) -> None:
    """``bigsister serve``: local Ray (or ``ray.address``), Serve on ``serve.host:serve.port``; blocks until Ctrl-C.

    On SIGINT/SIGTERM the application is deleted (streams stopped, open incidents flushed), then Serve and Ray
    shut down.
    """
    import ray
    from ray import serve

    if settings.serve.checkpoint is None:
        raise ConfigError("serve.checkpoint is not set: pass --checkpoint PATH or set serve.checkpoint in the config file")
    app = build_app(AppArgs.from_settings(settings))  # a bad checkpoint or config fails before Ray starts
    started_ray = ensure_ray(settings, include_dashboard=False)
    stop = stop_event or threading.Event()
    try:
        _cluster_checks(settings)
        serve.start(http_options=http_options(settings))
        serve.run(app, name=settings.serve.app_name, route_prefix="/")
        print(f"bigsister: serving on http://{settings.serve.host}:{settings.serve.port} (docs at /docs); Ctrl-C stops",
              flush=True)
        if not block:
            return
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print("bigsister: shutting down", flush=True)
        serve.delete(settings.serve.app_name)
        serve.shutdown()
    finally:
        if block and started_ray:
            ray.shutdown()
