"""One strict, typed settings tree for every flow.

Sources, highest priority first: keyword arguments (a YAML file passed with ``--config`` is loaded as
these), environment variables ``BIGSISTER_<SECTION>__<KEY>`` (``__`` nests), then the embedded defaults.
Every model forbids unknown keys, so a typo is an error that names the key::

    Settings                 root
    ├── ray: RayConfig       where Ray runs
    ├── clip: ClipSpec       what a clip is (see bigsister_ray.clip)
    ├── task: TaskConfig     which classes, and what happens to the others
    ├── data: DataConfig     clip index, split, Ray Data pipeline
    ├── model: ModelConfig   backbone and weights
    ├── train: TrainConfig   Ray Train
    ├── serve: ServeConfig   Ray Serve graph, streams, uploads
    ├── alerts: AlertsConfig alert rules and notifiers (Slack, webhook, console)
    ├── database: DatabaseConfig incidents store
    ├── incidents: IncidentsConfig evidence media and how long it is kept
    └── auth: AuthConfig     API keys and stream URL policy

Loading is file -> dict -> validate (:func:`load_settings`), so tests build ``Settings(...)`` directly.
Ray hands training loops plain dicts: validate them again with ``Settings.model_validate`` on the first line.

One unit: the sections are one tree of models that ``Settings`` nests and validates as a whole, and
docs/configuration.md is generated from it (:mod:`bigsister_ray.reference`); a section in another module would
split the tree that a newcomer reads top to bottom, and its loading and error messages belong with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bigsister_ray.clip import CLIP_PRESETS, ClipSpec
from bigsister_ray.errors import ConfigError
from bigsister_ray.labels import DEFAULT_TASK_LABELS, Task
from bigsister_ray.redact import redact_url

__all__ = [
    "Strict",
    "RayConfig",
    "TaskConfig",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "ClassifierConfig",
    "StreamsConfig",
    "ShardsConfig",
    "ConsoleConfig",
    "ServeConfig",
    "LinksConfig",
    "SlackConfig",
    "WebhookConfig",
    "AlertRule",
    "AlertsConfig",
    "ApiKey",
    "AuthConfig",
    "DatabaseConfig",
    "IncidentsConfig",
    "parse_hours",
    "Settings",
    "load_settings",
    "format_validation_error",
]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(Strict):
    address: str | None = Field(None, description="Ray cluster address ('auto', 'ray://host:10001'); None starts a local Ray.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (None: all).")
    namespace: str = Field("bigsister", description="Ray namespace for named actors and Serve.")
    idle_workers: int = Field(16, ge=0, le=1024, description=(
        "Idle worker processes a local Ray keeps alive on top of one per CPU (Ray's default kills the rest after "
        "1 s idle, so every training epoch waited for new shard-read workers to start)."))


class TaskConfig(Strict):
    labels: list[str] = Field(list(DEFAULT_TASK_LABELS), min_length=2, description="Ordered class list (model outputs).")
    mapping: dict[str, str] = Field(default_factory=dict, description="Map an outside class onto a task class, e.g. {robbery: assault}.")
    unknown: Literal["drop", "error"] = Field("drop", description="What happens to a class outside labels and mapping.")

    @model_validator(mode="after")
    def _valid_task(self) -> "TaskConfig":
        self.to_task()
        return self

    def to_task(self) -> Task:
        return Task(labels=tuple(self.labels), mapping=tuple(self.mapping.items()), unknown=self.unknown)


class DataConfig(Strict):
    clips_per_event: int = Field(4, ge=1, le=1000, description="Positive clips cut around each annotated behaviour.")
    clips_per_video: int = Field(1, ge=1, le=1000, description="Clips cut from a video without annotated times (folder datasets): spread evenly over it, no closer than one window stride; 1: the centre clip only.")
    negatives_per_video: int = Field(2, ge=0, le=1000, description="'normal' clips mined outside the annotated spans of each video.")
    negative_margin_s: float = Field(2.0, ge=0, description="Seconds kept clear around every annotated span when mining negatives.")
    use_actions: bool = Field(True, description="Cut positives around action ranges where present (more precise than AI Hub event intervals).")
    split: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="train/val/test fractions, assigned by group.")
    split_seed: int = Field(0, description="Seed of the group split.")
    groups_file: Path | None = Field(None, description="folders source: a file mapping clips to groups (sources.txt format or 'clip<TAB>group'; default ROOT/sources.txt when present; unlisted clips form one group 'unlisted').")
    shard_clips: int = Field(16, ge=1, le=100_000, description="Most clips per output shard (one Ray Data task each; a video's clips stay in one shard).")
    decode_cpus: float = Field(1.0, gt=0, description="CPUs reserved by each decode task.")
    decode_threads: int = Field(1, ge=0, description="decord decoder threads per task (0: decord's default).")
    compression: Literal["zstd", "snappy", "gzip", "none"] = Field("zstd", description="Parquet compression of shards.")

    @model_validator(mode="after")
    def _split_sums_to_one(self) -> "DataConfig":
        if abs(sum(self.split) - 1.0) > 1e-6 or any(f < 0 for f in self.split):
            raise ValueError(f"data.split must be three non-negative fractions summing to 1, got {self.split}")
        return self


class ModelConfig(Strict):
    name: str = Field("tiny3d", description="Backbone from the model registry (i3d, r3d_18, mc3_18, r2plus1d_18, s3d, mvit_v2_s, swin3d_t, tiny3d, ...).")
    weights: str | None = Field(None, description="Path or URL of weights to start from (a checkpoint of ours or a foreign state dict).")
    dropout: float = Field(0.3, ge=0, lt=1)


class TrainConfig(Strict):
    workers: int = Field(2, ge=1, le=4096, description="Ray Train workers.")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1.0, gt=0)
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1, le=4096, description="Clips per worker per step.")
    lr: float = Field(3e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0)
    balance: Literal["weighted_loss", "none"] = Field("weighted_loss", description="How class imbalance is handled.")
    early_stopping_patience: int = Field(5, ge=1, description="Epochs without a better validation macro-F1 before stopping.")
    max_failures: int = Field(3, ge=-1, description="Worker failures survived by resuming from the last checkpoint (-1: unlimited).")
    bf16: bool = Field(True, description="bf16 autocast on GPU.")
    torch_threads: int = Field(0, ge=0, description="torch threads per worker (0: cpus_per_worker).")
    name: str | None = Field(None, description="Run name; a run with the same name resumes.")
    target_precision: float = Field(0.9, gt=0, le=1, description="Precision each abnormal class's alert threshold aims for on validation.")
    seed: int = 0
    augment: bool = Field(True, description="Random crop, horizontal flip and temporal jitter of training clips on the workers.")
    color_jitter: float = Field(0.0, ge=0, lt=1, description="Training augmentation: brightness, contrast and per-channel "
                                "gains of each clip scaled by up to this fraction, e.g. 0.2 (0: off); only with train.augment.")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="Keep an exponential moving average of the weights with this "
                             "decay per step (e.g. 0.98) and validate and checkpoint the average (0: off). Steadier on "
                             "small or noisy data, where validation swings from epoch to epoch.")
    shuffle_buffer_clips: int = Field(64, ge=0, description="Clips each worker holds in its local shuffle buffer (0: none), on top of "
                                      "the shards' random order; memory per worker is this many decoded clips.")
    checkpoints_to_keep: int = Field(2, ge=1, description="Checkpoints kept by validation macro-F1 (the latest is always kept too, for resuming).")
    data_cpus: float = Field(0.0, ge=0, description="CPUs reserved by each Ray Data shard-read task feeding the workers. 0 (default): "
                             "reads run beside the workers even when they hold every CPU (Ray Data leaves the workers' CPUs out of its budget).")
    data_read_tasks: int = Field(2, ge=1, description="Most shard-read tasks running at once per dataset (bounds memory and CPU use).")
    worker_resources: dict[str, float] = Field(default_factory=dict, description="Custom resources each worker asks for besides "
                                               "CPU/GPU, e.g. {accelerator: 1} to keep workers on the GPU node type of cluster.yaml.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How Ray places the workers: SPREAD (or STRICT_SPREAD) puts them on different nodes.")


class ClassifierConfig(Strict):
    max_batch_size: int = Field(16, ge=1, le=4096, description="@serve.batch max_batch_size.")
    batch_wait_timeout_s: float = Field(0.05, ge=0, le=10)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    stuck_after_s: float = Field(120.0, gt=0, description="check_health fails (Serve replaces the replica) when windows wait and no batch finished for this long.")
    health_check_period_s: float = Field(10.0, gt=0, description="How often Serve calls the Classifier's check_health.")

    @model_validator(mode="after")
    def _replicas(self) -> "ClassifierConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"serve.classifier.min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        return self


class ShardsConfig(Strict):
    """Stream shards: each replica decodes, windows and applies the alert rules of the streams it holds a lease on."""

    min_shards: int = Field(1, ge=1, description="Fewest StreamShard replicas, whatever the number of streams.")
    max_shards: int = Field(8, ge=1, description="Most StreamShard replicas (the cluster's CPU nodes bound it too).")
    num_cpus: float = Field(0.0, ge=0, description="CPUs each shard reserves (its stream threads decode and resize); "
                            "0 lets shards share a node's CPUs with the rest of the graph.")
    max_per_node: int = Field(0, ge=0, description="Most shards on one node (0: no limit); 1 spreads them one per node.")
    lease_ttl_s: float = Field(10.0, gt=0, le=600, description="A stream's lease lasts this long unless its shard renews it "
                               "(every lease_ttl_s / 3); a shard stops a stream whose lease it could not renew in time.")
    moves_per_interval: int = Field(2, ge=1, description="Most streams one shard hands over to a less loaded one per renewal "
                                    "interval when shards are added (orphaned streams are claimed at once).")
    journal_dir: Path = Field(Path("journal"), description="Node-local folder where a shard journals the incident events "
                              "the database could not take (replayed when it answers, or by the next shard on the node).")

    @model_validator(mode="after")
    def _bounds(self) -> "ShardsConfig":
        if self.min_shards > self.max_shards:
            raise ValueError(f"serve.shards.min_shards ({self.min_shards}) must be <= max_shards ({self.max_shards})")
        return self


class StreamsConfig(Strict):
    per_shard: int = Field(16, ge=1, description="Streams one StreamShard holds at most; shards are added as streams are "
                           "registered (ceil(streams / per_shard), within serve.shards bounds).")
    media_root: Path = Field(Path("media"), description="Local files registered as file:// or plain paths must lie under this folder.")
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    healthy_after_s: float = Field(10.0, ge=0, description="A source must stay live this long before its backoff resets.")
    watchdog_s: float = Field(10.0, gt=0, description="A connected stream with no frame for this long is restarted.")
    max_buffer_windows: int = Field(4, ge=1, description="Windows a live stream may queue before it drops its oldest frames.")
    latest_frame: bool = Field(True, description="Keep each stream's newest frame (as the model sees it) as a JPEG under incidents.media_dir/cameras, replaced every lease round while frames arrive, for the console's camera grid and GET /streams/{id}/frame. False: no camera picture is stored outside evidence clips.")
    open_timeout_s: float = Field(10.0, gt=0, description="Connecting and probing a source (PyAV open timeout).")
    backoff_jitter: float = Field(0.2, ge=0, lt=1, description="Each retry delay is multiplied by a random factor in 1 +- this.")
    probe_s: float = Field(1.0, gt=0, le=10, description="Seconds of a live source FFmpeg analyses before decoding (analyzeduration).")
    decode_threads: int = Field(1, ge=0, le=64, description="FFmpeg decoder threads per stream (0: all cores). One keeps the CPU cost per camera lowest when a node decodes many cameras; raise it only for a few very high-resolution cameras per node.")
    hwaccel: Literal["none", "cuda"] = Field("none", description="Decode on the GPU with NVDEC (cuda). A node without a usable CUDA device decodes on the CPU and says so in the stream's status (decoder, last_error).")
    max_streams: int = Field(1000, ge=1, description="Streams this deployment registers at most; POST /streams beyond is a 409 (delete one first, or raise this and add shards). Checked per registration: concurrent registrations through several Ingress replicas may pass it by one each.")

    @model_validator(mode="after")
    def _backoff_bounds(self) -> "StreamsConfig":
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"serve.streams.backoff_max_s ({self.backoff_max_s}) must be >= backoff_initial_s ({self.backoff_initial_s})")
        return self


class ConsoleConfig(Strict):
    session_secret: SecretStr | None = Field(None, description="Key that signs the web console's session cookies (at least 32 random characters; the same on every Ingress replica). None: derived from the configured API keys, so changing or revoking a key ends every session.")
    session_ttl_s: float = Field(12 * 3600.0, gt=0, le=30 * 24 * 3600.0, description="A console login lasts this long (seconds), then asks for the key again.")
    secure_cookies: Literal["auto", "always", "never"] = Field("auto", description="Mark the session cookie Secure: auto when the request came over HTTPS or serve.public_url is https://.")

    @model_validator(mode="after")
    def _long_secret(self) -> "ConsoleConfig":
        if self.session_secret is not None and len(self.session_secret.get_secret_value()) < 32:
            raise ValueError("serve.ui.session_secret: expected at least 32 random characters "
                             "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return self


class LinksConfig(Strict):
    secret: SecretStr | None = Field(None, description="Key that signs the incident links in alerts (/ui/incidents/{id}?exp=...&sig=...), so they open the incident page in a browser without a login until they expire; at least 32 random characters, the same on every node. Prefer the env BIGSISTER_SERVE__LINKS__SECRET. None: links are plain and the console asks for a login first.")
    ttl_s: float = Field(7 * 24 * 3600.0, gt=0, le=366 * 24 * 3600.0, description="How long a signed link opens its incident page (seconds from when the alert was sent or last updated).")

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("serve.links.secret: use at least 32 random characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return v


class ServeConfig(Strict):
    host: str = Field("127.0.0.1", description="HTTP bind address (keep loopback behind a reverse proxy).")
    port: int = Field(8000, ge=1, le=65535)
    checkpoint: Path | None = Field(None, description="Checkpoint to serve (self-describing: labels, ClipSpec, normalisation).")
    upload_max_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    upload_max_seconds: float = Field(600.0, gt=0, description="Longest video POST /detect accepts (400 beyond).")
    upload_max_pixels: int = Field(3840 * 2160, ge=64 * 64, description="Largest frame (width x height) POST /detect accepts (400 beyond).")
    upload_decode_timeout_s: float = Field(300.0, gt=0, description="POST /detect gives up decoding an upload after this long (400).")
    request_timeout_s: float = Field(120.0, gt=0, description="Serve's HTTP request timeout (http_options.request_timeout_s): 408 beyond.")
    max_ongoing_requests: int = Field(32, ge=1, description="Requests one Ingress replica works on at once.")
    max_queued_requests: int = Field(64, ge=-1, description="Requests waiting for an Ingress replica; beyond, 503 at once (-1: unbounded, not advised).")
    public_url: str = Field("http://127.0.0.1:8000", description="Base URL used in alert links to incidents.")
    app_name: str = Field("bigsister", min_length=1, description="Serve application name.")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    streams: StreamsConfig = Field(default_factory=StreamsConfig)
    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    links: LinksConfig = Field(default_factory=LinksConfig)
    ui: ConsoleConfig = Field(default_factory=ConsoleConfig, description="The web console under /ui: sessions and cookies.")


class SlackConfig(Strict):
    token: SecretStr | None = Field(None, description="Bot token (xoxb-...). Prefer token_file or the env BIGSISTER_ALERTS__SLACK__TOKEN.")
    token_file: Path | None = Field(None, description="File holding the bot token.")
    channel: str | None = Field(None, description="Channel id or name for incidents.")
    base_url: str = Field("https://slack.com/api/", description="Slack Web API base URL (tests point it at a local server).")
    timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(3, ge=0)
    signing_secret: SecretStr | None = Field(None, description="The Slack app's signing secret: POST /slack/actions (the Ack and False alarm buttons) verifies every request with it and refuses any older than 5 minutes. Prefer the env BIGSISTER_ALERTS__SLACK__SIGNING_SECRET. None: alerts have no buttons and /slack/actions answers 404.")

    def resolved_token(self) -> SecretStr | None:
        if self.token is not None:
            return self.token
        if self.token_file is not None:
            try:
                return SecretStr(self.token_file.read_text().strip())
            except OSError as err:
                raise ConfigError(f"alerts.slack.token_file: cannot read {self.token_file}: {err.strerror}") from err
        return None


class WebhookConfig(Strict):
    url: SecretStr | None = Field(None, description="Incoming-webhook URL (text only).")
    timeout_s: float = Field(10.0, gt=0)


class AlertRule(Strict):
    threshold: float | None = Field(None, gt=0, le=1, description="Score that counts a window as a hit (None: the checkpoint's calibrated threshold).")
    k: int = Field(3, ge=1, description="Hits needed among the last n windows to open an incident.")
    n: int = Field(5, ge=1)
    close_threshold_ratio: float = Field(0.7, gt=0, le=1, description="Lower threshold (hysteresis) = threshold x this.")
    close_after: int = Field(3, ge=1, description="Consecutive windows below the lower threshold that close an incident.")
    cooldown_s: float = Field(60.0, ge=0, description="Seconds after an incident closes before the same stream and class may open another.")
    severity: Literal["low", "medium", "high", "critical"] | None = None
    enabled: bool = Field(True, description="Whether the class is watched: false, its windows never count as hits (no incident opens).")
    active_hours: list[str] = Field(default_factory=list, description="Times of day when windows may count as hits, as HH:MM-HH:MM in `timezone` (22:00-06:00 wraps past midnight); empty: always.")
    timezone: str = Field("UTC", description="IANA time zone of active_hours, e.g. Asia/Seoul.")

    @model_validator(mode="after")
    def _k_le_n(self) -> "AlertRule":
        if self.k > self.n:
            raise ValueError(f"alert rule k ({self.k}) must be <= n ({self.n})")
        return self

    @model_validator(mode="after")
    def _hours(self) -> "AlertRule":
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError) as err:
            raise ValueError(f"alert rule timezone: expected an IANA zone such as Europe/Paris, got {self.timezone!r}") from err
        for span in self.active_hours:
            if parse_hours(span) is None:
                raise ValueError(f"alert rule active_hours: expected HH:MM-HH:MM such as 08:00-18:30, got {span!r}")
        return self


def parse_hours(span: str) -> tuple[int, int] | None:
    """``"HH:MM-HH:MM"`` as (start, end) minutes of the day; None when malformed. ``end <= start`` wraps past midnight."""
    parts = span.strip().split("-")
    if len(parts) != 2:
        return None
    minutes = []
    for part in parts:
        hh, sep, mm = part.strip().partition(":")
        if not sep or not (hh.isdigit() and mm.isdigit()) or len(mm) != 2 or not (0 <= int(hh) <= 24 and 0 <= int(mm) < 60):
            return None
        value = int(hh) * 60 + int(mm)
        if value > 24 * 60:
            return None
        minutes.append(value)
    return minutes[0], minutes[1]


class AlertsConfig(Strict):
    notifier: Literal["console", "slack", "webhook", "auto"] = Field("auto", description="auto: Slack when a token and channel are set, else console.")
    default: AlertRule = Field(default_factory=AlertRule)
    per_class: dict[str, AlertRule] = Field(default_factory=dict, description="Overrides per class (replaces the default rule).")
    default_threshold: float = Field(0.6, gt=0, le=1, description="Threshold when neither the rule nor the checkpoint gives one.")
    severity: dict[str, Literal["low", "medium", "high", "critical"]] = Field(
        default_factory=lambda: {"assault": "high", "datefight": "high", "robbery": "high", "kidnap": "critical", "fight": "medium"},
    )
    max_messages_per_minute: int = Field(20, ge=1, description="Cap on messages per channel per minute.")
    sweep_interval_s: float = Field(5.0, gt=0, description="How often pending alerts are retried.")
    retry_backoff_initial_s: float = Field(2.0, gt=0, description="First wait before retrying a failed delivery (doubles per attempt).")
    retry_backoff_max_s: float = Field(300.0, gt=0, description="Longest wait between delivery attempts (alerts are retried until sent).")
    lease_s: float = Field(300.0, gt=0, description="How long a sender holds an alert before another sweeper may take it over; longer than one send with all its retries.")
    alert_file: Path | None = Field(Path("alerts.jsonl"), description="The console notifier also appends here (None: stdout only).")
    slack: SlackConfig = Field(default_factory=SlackConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)


class ApiKey(Strict):
    name: str = Field(..., min_length=1, max_length=64, description="Who holds the key (shown in logs, never the key).")
    key: SecretStr = Field(..., description="The key itself (at least 16 characters).")
    scope: Literal["read", "write"] = Field("read", description="read: list and read; write: also register, delete, change.")

    @model_validator(mode="after")
    def _long_enough(self) -> "ApiKey":
        if len(self.key.get_secret_value()) < 16:
            raise ValueError(f"auth key {self.name!r} is too short: use at least 16 random characters")
        return self


class AuthConfig(Strict):
    enabled: bool = Field(True, description="Every route except /healthz needs a key (header X-API-Key or Authorization: Bearer).")
    keys: list[ApiKey] = Field(default_factory=list, description="Accepted keys; prefer keys_file or env over YAML for secrets.")
    keys_file: Path | None = Field(None, description="YAML/JSON list of {name, key, scope} kept on the node (mode 0600).")
    generated_key_file: Path = Field(Path("bigsister-api-key"), description="With no keys configured, a write key is generated once and kept here (0600).")
    allowed_hosts: list[str] = Field(default_factory=list, description="Camera hosts or networks (CIDR) streams may use; empty: any public host.")
    allow_loopback: bool = Field(False, description="Allow stream URLs on 127.0.0.0/8 and ::1 (tests, local replay servers).")
    allow_private: bool = Field(True, description="Allow private-range camera addresses (10/8, 172.16/12, 192.168/16); cameras usually live there.")
    allowed_networks: list[str] = Field(default_factory=list, description="Networks (CIDR, e.g. 10.20.0.0/16) camera addresses must lie in, checked at registration and at every connection; empty: any address the other rules allow.")
    allowed_ports: list[int] = Field(default_factory=list, description="Ports stream URLs may use (a URL without one uses its scheme's default: rtsp 554, http 80, https 443); empty: any port but Ray's and the service's.")
    public_docs: bool = Field(True, description="Serve /docs and /openapi.json without a key (the published contract; nothing secret).")
    max_streams_per_key: int = Field(0, ge=0, description="Streams one key may have registered at once (counted by the key's name); POST /streams beyond is a 409. 0: no per-key cap, only serve.streams.max_streams (most deployments use one write key). Set it when several clients share a deployment so one key cannot take every slot.")
    registrations_per_minute: int = Field(60, ge=0, description="POST /streams per key per minute, per Ingress replica (a token bucket holding a minute's worth); beyond, 429 with Retry-After. 0: no limit.")

    @model_validator(mode="after")
    def _camera_network_rules(self) -> "AuthConfig":
        import ipaddress

        for net in self.allowed_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as err:
                raise ValueError(f"auth.allowed_networks: expected a CIDR network such as 10.20.0.0/16, got {net!r}") from err
        for port in self.allowed_ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"auth.allowed_ports: expected ports 1..65535, got {port}")
        return self


class DatabaseConfig(Strict):
    url: str = Field("sqlite:///bigsister.db", description="SQLAlchemy URL: sqlite:///file.db or postgresql+psycopg://user@host/db.")
    busy_timeout_ms: int = Field(5000, ge=0)
    echo: bool = False


class IncidentsConfig(Strict):
    media_dir: Path = Field(Path("media"), description="Folder of incident media files (evidence clips); an incident stores its clip's path relative to it.")
    media_retention_days: float | None = Field(30.0, ge=0, description="Evidence clips and snapshots of incidents that started longer ago than this are deleted by a periodic sweep (the incident rows stay). 0 or null: keep them forever.")
    retention_sweep_interval_s: float = Field(3600.0, gt=0, description="How often the retention sweep runs (in every process that sweeps the delivery outbox).")
    clip_before_s: float = Field(5.0, ge=0, description="Seconds of video before an incident's peak window in its evidence clip.")
    clip_after_s: float = Field(10.0, ge=0, description="Seconds of video after an incident's peak window in its evidence clip.")


class Settings(BaseSettings):
    """The root of the settings tree. ``Settings()`` gives the embedded defaults (plus env)."""

    model_config = SettingsConfigDict(
        env_prefix="BIGSISTER_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    ray: RayConfig = Field(default_factory=RayConfig)
    clip: ClipSpec = Field(default_factory=lambda: CLIP_PRESETS["laptop"])
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)

    @model_validator(mode="before")
    @classmethod
    def _clip_preset(cls, data: Any) -> Any:
        """``clip: i3d`` (a preset name) or ``clip: {preset: i3d, stride: 16}``."""
        if isinstance(data, dict):
            clip = data.get("clip")
            if isinstance(clip, str):
                if clip not in CLIP_PRESETS:
                    raise ValueError(f"clip: unknown preset {clip!r}, expected one of {sorted(CLIP_PRESETS)}")
                data = {**data, "clip": CLIP_PRESETS[clip]}
            elif isinstance(clip, dict) and "preset" in clip:
                name = clip["preset"]
                if name not in CLIP_PRESETS:
                    raise ValueError(f"clip.preset: unknown preset {name!r}, expected one of {sorted(CLIP_PRESETS)}")
                rest = {k: v for k, v in clip.items() if k != "preset"}
                data = {**data, "clip": {**CLIP_PRESETS[name].model_dump(), **rest}}
        return data

    def for_workers(self) -> "Settings":
        """A copy without secrets, for Ray tasks, actors and jobs: what crosses a process boundary is pickled into
        Ray's object store and may be shown by its state API and dashboard.

        Dropped: the API keys (``auth.keys``), the Slack token and signing secret (``alerts.slack.token``,
        ``signing_secret``), the link key (``serve.links.secret``), the console's session key
        (``serve.ui.session_secret``), the webhook URL (``alerts.webhook.url``) and the
        credentials in ``database.url`` (user and password become ``***``).
        Kept: the files that hold secrets on the nodes (``auth.keys_file``, ``alerts.slack.token_file``), which a
        process that needs the secret reads where it runs. The copy is valid: dumped in JSON mode and validated
        again on a worker it gives the same settings, less the secrets.
        """
        alerts = self.alerts.model_copy(update={
            "slack": self.alerts.slack.model_copy(update={"token": None, "signing_secret": None}),
            "webhook": self.alerts.webhook.model_copy(update={"url": None}),
        })
        return self.model_copy(update={
            "serve": self.serve.model_copy(update={"links": self.serve.links.model_copy(update={"secret": None}),
                                                   "ui": self.serve.ui.model_copy(update={"session_secret": None})}),
            "alerts": alerts,
            "auth": self.auth.model_copy(update={"keys": []}),
            "database": self.database.model_copy(update={"url": redact_url(self.database.url)}),
        })


def format_validation_error(err: ValidationError, source: str | None = None) -> str:
    """One line per problem: ``where: key.path: message (got value)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `bigsister config --reference` lists every key)"
        got = e.get("input")
        got_s = "" if e["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source + ': ' if source else ''}{loc}: {msg}{got_s}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load ``path`` (YAML, optional), apply ``overrides`` (dotted keys allowed: ``{"train.epochs": 2}``), validate.

    Raises :class:`ConfigError` naming the file and every bad key.
    """
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config file {p}: {err.strerror or err}") from err
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from err
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level, got {type(loaded).__name__}")
        data = loaded
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[parts[-1]] = value
    try:
        return Settings(**data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from err
