"""Typed settings: one object, loaded once at the edge and passed down.

Precedence (highest first): explicit keyword overrides, environment variables
``FLYWHEEL_*`` (nested with ``__``, e.g. ``FLYWHEEL_DATABASE__URL``), the YAML file chosen
by ``--config`` or ``FLYWHEEL_CONFIG``, then the embedded defaults below, which
``configs/default.yaml`` mirrors. This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import contextlib
import os
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from flywheel.errors import InvalidInputError

CONFIG_ENV_VAR = "FLYWHEEL_CONFIG"
ENV_PREFIX = "FLYWHEEL_"
ENV_NESTED_DELIMITER = "__"


class SettingsError(InvalidInputError):
    """Settings that do not validate: one line per bad key in ``problems``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _is_int_literal(annotation: Any) -> bool:
    """Whether ``annotation`` is a Literal of integers (``Literal[1, 3]``), maybe or None."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return bool(members) and all(_is_int_literal(a) for a in members)
    return get_origin(annotation) is Literal and all(type(a) is int for a in get_args(annotation))


def numbers_from_text(model: type[BaseModel], data: Any) -> Any:
    """``data`` with numeric strings made integers where ``model`` (or a section nested in
    it) has an integer Literal field: environment values are text, and pydantic matches a
    Literal's options exactly, so ``FLYWHEEL_LEARNING__CHANNELS=3`` gave "3", never 3."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, field in model.model_fields.items():
        if name not in out:
            continue
        value, annotation = out[name], field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out[name] = numbers_from_text(annotation, value)
        elif isinstance(value, str) and _is_int_literal(annotation):
            with contextlib.suppress(ValueError):  # not a number: pydantic names the options
                out[name] = int(value)
    return out


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per bad key: its dotted name, its environment form and what is allowed."""
    lines = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "settings"
        env = ENV_PREFIX + key.upper().replace(".", ENV_NESTED_DELIMITER)
        got = repr(error.get("input"))
        got = got if len(got) <= 80 else got[:77] + "..."
        lines.append(f"setting {key} ({env}): {error['msg']}, got {got}")
    return lines


class StorageSettings(BaseModel):
    """Where bytes live: ``<root>/blobs`` (samples), ``<root>/versions`` (manifests) and
    ``<root>/embeddings`` (the embedding store)."""

    # A local folder or any pyarrow/fsspec URI (s3://bucket/prefix, memory://x).
    # None means ``<data_dir>/store``.
    root: str | None = None


class DatabaseSettings(BaseModel):
    # Any SQLAlchemy URL; None means SQLite at ``<data_dir>/flywheel.db``.
    url: str | None = None
    # Upgrade the schema to the newest Alembic revision when the database is opened.
    auto_migrate: bool = True
    echo: bool = False


class MLflowSettings(BaseModel):
    # None means a local store: SQLite at ``<data_dir>/mlflow.db`` (no server).
    tracking_uri: str | None = None
    # Where new experiments keep artifacts; None means ``<data_dir>/mlartifacts``.
    artifact_location: str | None = None
    experiment: str = "flywheel"
    model_name: str = "flywheel-classifier"


class BrokerSettings(BaseModel):
    # None runs Celery tasks eagerly in-process (the embedded default).
    url: str | None = None
    # Where task results go; None: the broker's Redis.
    result_backend: str | None = None
    # Redis re-delivers an unacknowledged task after this long: it must exceed the longest
    # task (a training step), or a slow task would run twice at once.
    visibility_timeout_s: int = Field(default=6 * 3600, gt=0)
    # Transient errors (broker or database briefly unreachable) are retried this often,
    # with exponential backoff; any other error fails the task at once.
    max_retries: int = Field(default=5, ge=0)
    # How often a worker looks for tasks whose worker died unacknowledged (older than the
    # visibility timeout) and puts them back in the queue.
    restore_interval_s: int = Field(default=30, gt=0)


class IngestSettings(BaseModel):
    max_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    # Decompression-bomb guard: refuse images larger than this before decoding them.
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    allowed_formats: list[str] = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"]
    # URI schemes a manifest on the server's own disk may point at (local paths are always
    # allowed there). Remote URIs sent over HTTP must also lie under ``uri_roots``.
    uri_schemes: list[str] = ["s3", "gs", "gcs", "abfs", "az", "hdfs", "memory"]
    # Source roots that URIs registered over HTTP (POST /v1/samples/uris) must lie under,
    # e.g. ["s3://bucket/prefix"]. Empty: no remote URI is accepted over HTTP.
    uri_roots: list[str] = []
    # Whether app keys may register URIs at all (engineer keys always may, under uri_roots).
    app_keys_may_register_uris: bool = False
    # Remote reads: seconds to connect and to wait for data, and attempts per object. A
    # read that is still going after ``remote_total_timeout_s`` is abandoned.
    remote_connect_timeout_s: float = Field(default=5.0, gt=0.0)
    remote_read_timeout_s: float = Field(default=15.0, gt=0.0)
    remote_attempts: int = Field(default=2, ge=1, le=10)
    remote_total_timeout_s: float = Field(default=60.0, gt=0.0)
    # Remote reads for HTTP registrations run on this many threads per source root (a dead
    # store stalls only its own reads), never on the threads that serve predict, feedback
    # and health; registrations past ``remote_queue`` waiting get 503 instead of queueing
    # without bound.
    remote_threads: int = Field(default=4, ge=1, le=64)
    remote_queue: int = Field(default=64, ge=1)
    # Samples written per transaction: bounds memory and the work lost to a crash.
    batch_size: int = Field(default=512, gt=0)


class ApiSettings(BaseModel):
    """The HTTP service (``flywheel serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Bodies over this are refused with 413 before they are read into memory.
    max_body_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    # Seconds a verified key (or a revocation) may be served from memory: a revoked key
    # stops working within this time. 0 checks the database on every request.
    auth_cache_seconds: float = Field(default=5.0, ge=0.0)
    # How often the server looks for a newly promoted champion (no restart needed).
    champion_refresh_seconds: float = Field(default=5.0, ge=0.0)
    top_k: int = Field(default=5, gt=0)
    # Feedback items per request to the batch endpoint, and per group commit.
    max_batch_items: int = Field(default=1000, gt=0)
    # Seconds a stopping server (SIGTERM) waits for open requests before cancelling them.
    shutdown_grace_s: float = Field(default=5.0, gt=0.0)
    # With no broker, POST /v1/cycles runs the cycle in a thread of the API process.
    run_cycles_in_process: bool = True
    # Collect, then freeze the heap once start-up is done (gc.freeze): full collections stop
    # rescanning torch's and MLflow's objects, pauses that were the feedback p99
    # (BENCHMARKS.md section 5). A process that starts many apps, like the test suite, turns
    # it off: each start would pay a full collection of its ever larger heap.
    freeze_heap: bool = True


class WebSettings(BaseModel):
    """The web UI at ``/ui`` (review queue, label audit, dashboard): engineer keys only."""

    # Signs session cookies. None: a random secret made once and kept in
    # ``<data_dir>/.session_secret`` (mode 0600), so sessions survive a restart.
    session_secret: str | None = None
    session_hours: float = Field(default=12.0, gt=0.0)  # a login lasts this long
    page_size: int = Field(default=20, gt=0, le=200)  # review items, issues, versions a page
    # Thumbnails kept in memory (LRU, a few KB each); browsers also cache them privately.
    thumbnail_cache_items: int = Field(default=4096, ge=0)
    # Seconds the label audit, annotator statistics and drift check are reused before they
    # are recomputed (a new cycle or champion recomputes them at once).
    insight_cache_seconds: float = Field(default=300.0, ge=0.0)


class ConsensusSettings(BaseModel):
    """Turning users' feedback into labels (Dawid-Skene over annotators)."""

    # A sample whose consensus posterior is below this goes to the review queue instead.
    min_confidence: float = Field(default=0.9, gt=0.0, le=1.0)
    # Beta prior on an annotator's accuracy before any evidence (pseudo-counts right/wrong):
    # new annotators are trusted moderately, and evidence moves them quickly.
    prior_correct: float = Field(default=4.0, gt=0.0)
    prior_wrong: float = Field(default=1.0, gt=0.0)
    max_iterations: int = Field(default=50, gt=0)


class CycleSettings(BaseModel):
    """How cycles share the project: one at a time, under a lock that outlives no holder."""

    # The cycle lock (and a step's claim) expires this long after its holder last renewed
    # it: a crashed worker or API process blocks cycles at most this long.
    lease_s: float = Field(default=120.0, gt=0.0)
    heartbeat_s: float = Field(default=20.0, gt=0.0)  # renewal interval, well below lease_s
    # How often outbox messages (queued cycles) are handed to the broker when it is up.
    relay_interval_s: float = Field(default=2.0, gt=0.0)
    # Pool samples per shard of a select step: one task embeds and scores one shard, so the
    # shards of a large pool spread over every GPU worker (a chord; in-process when eager).
    shard_size: int = Field(default=4096, ge=1, le=1_000_000)


class TriggerSettings(BaseModel):
    """What starts a cycle besides an engineer (API/CLI)."""

    # Start a cycle once this many feedback items arrived since the last one began; 0: off.
    feedback_count: int = Field(default=0, ge=0)
    # Celery beat schedules: a crontab ("0 3 * * *" = nightly at 03:00) and/or an interval.
    schedule_cron: str | None = None
    schedule_interval_s: float | None = Field(default=None, gt=0.0)


class DriftSettings(BaseModel):
    """Drift watch: recent inputs against training inputs, in the champion's features."""

    recent: int = Field(default=500, gt=0)  # newest predicted inputs compared (distinct)
    reference: int = Field(default=2000, gt=0)  # random training inputs they are compared to
    min_recent: int = Field(default=50, gt=1)  # fewer recent inputs: no verdict yet
    # MMD² (Gaussian kernel, median bandwidth) above which a significant difference counts
    # as drift: about the 99th percentile of MMD² between 50 unseen digits and the digits
    # the champion trained on (0.0095, bench/bench_drift.py). A test alone would flag
    # harmless shifts once there are many inputs; this is the size that matters.
    mmd_threshold: float = Field(default=0.01, ge=0.0)
    trigger_cycle: bool = False  # queue a cycle (trigger "drift") when drift is found
    # How often the API (and beat, with a broker) checks when trigger_cycle is on.
    check_interval_s: float = Field(default=3600.0, gt=0.0)


class LearningSettings(BaseModel):
    """One cycle's learning choices. Defaults suit the built-in digits set on 2 CPU cores."""

    # Images are brought to this square size whenever they are read for learning or
    # serving. None: the most common size among the project's samples (recorded with the
    # cycle and the model, so serving uses the size the model was trained at).
    image_size: int | None = Field(default=None, gt=0, le=1024)
    # How an image of another shape reaches that size: "stretch" (resize both sides),
    # "crop" (scale the short side, then centre-crop) or "pad" (scale the long side, then
    # pad with black to a square, keeping the aspect ratio).
    resize: Literal["stretch", "crop", "pad"] = "stretch"
    # Decoded pool images a worker keeps in memory (the rest are read from the store again
    # when used): a cycle's memory is this, not the pool's size.
    pool_cache_mb: int = Field(default=2048, ge=0)
    # 1 (grey) or 3 (colour); None: from the images (colour when any sampled image has it).
    channels: Literal[1, 3] | None = None
    # Augmentation family: "digits" (small shifts/rotations, no flips) or "natural" (flips,
    # crops, colour). Flips help photos and hurt digits; "auto" asks held-out human labels
    # whether a mirrored image keeps its class (flywheel.learn.profile).
    augment: Literal["auto", "digits", "natural"] = "auto"
    backbone: str = "small_cnn"  # or resnet18 / resnet50 on GPU nodes
    # A checkpoint to start the backbone from (flywheel.learn.pretrained): a local path, a
    # storage URI or "blob:<sha256>"; SSL on the pool then adapts it. Never downloaded.
    pretrained: str | None = None
    width: int = Field(default=32, gt=0)
    ssl_method: str = "swav"  # a method of flywheel.learn.ssl.methods.METHODS
    ssl_epochs: int = Field(default=20, ge=0)  # 0: no self-supervised embedding
    train_epochs: int = Field(default=20, gt=0)
    # Fixed optimiser steps per epoch: with 10-100 labels an "epoch" is a single batch.
    steps_per_epoch: int = Field(default=16, gt=0)
    batch_size: int = Field(default=64, gt=0)
    # FixMatch consistency on the pool: in no cycle, only while there is no champion yet,
    # or in every cycle (measured best on the generalization suite: the pool keeps teaching).
    fixmatch: Literal["none", "first", "all"] = "all"
    fixmatch_epochs: int = Field(default=8, gt=0)
    fixmatch_mu: int = Field(default=2, gt=0)  # unlabeled batch = mu * batch_size
    # Which pool predictions teach a model that continues from the champion: "fixed"
    # (FixMatch's 0.95), or class-adaptive as in "flexmatch" / "freematch"
    # (flywheel.learn.thresholds). A fresh model always uses "fixed" (learn/recipe.py).
    consistency_thresholds: Literal["fixed", "flexmatch", "freematch"] = "flexmatch"
    # Continue from the champion (same classes and input) instead of the SSL backbone, for
    # continue_epochs: each cycle then adds training rather than repeating it.
    warm_start: bool = True
    continue_epochs: int = Field(default=4, gt=0)
    # The continued model's learning rate as a share of a fresh start's: a fresh optimiser
    # at the full rate moves a trained champion far from where it was; 0.3 gained more over
    # the cycles on every set of the suite, with more candidates promoted (BENCHMARKS §19).
    continue_lr_scale: float = Field(default=0.3, gt=0.0, le=1.0)
    # > 0: a cycle's model is the moving average of its weights at this decay (0: the last)
    ema_decay: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Targets for the pool samples selection did not accept (training signal only, never
    # written as labels): "propagation" spreads the human labels over the cycle's embedding,
    # each target weighted by its certainty (flywheel.select.teacher); "none": only
    # FixMatch's own pseudo-labels teach the rest of the pool; "auto": propagation only
    # while a class has a single label, so nothing can be held out and certified (measured:
    # 70 -> 93 % on digits at 1 label a class; neutral or worse with 5, BENCHMARKS §18).
    teacher: Literal["auto", "propagation", "none"] = "auto"
    # The features the teacher propagates over: "selection" (the cycle's label-free
    # embedding), or "champion": the continued champion's own features when there is one
    # (Iscen et al. propagate over the network being trained; a first cycle has none).
    # At one label a class on digits both end at 93.6 %, seed for seed (BENCHMARKS §32).
    teacher_features: Literal["selection", "champion"] = "selection"
    # A strategy of flywheel.select.strategies.STRATEGIES. "agreement": newest model and kNN
    # anchors must agree, class-balanced quota growing per cycle (measured best on digits);
    # "calibrated": per-class thresholds calibrated on held-out human labels to reach
    # target_precision (fewer, certified labels).
    selection: str = "calibrated"
    share_start: float = Field(default=0.5, gt=0.0, le=1.0)  # agreement: first quota
    share_end: float = Field(default=0.9, gt=0.0, le=1.0)  # agreement: final quota
    share_steps: int = Field(default=4, gt=0)  # agreement: cycles from start to end
    tau: float = Field(default=0.1, gt=0.0)  # agreement: neighbour-weight temperature
    k: int = Field(default=10, gt=0)
    # FAISS index kind (flywheel.learn.index): "auto" is exact up to 200k rows, IVF past it.
    index_kind: Literal["auto", "flat", "ivf", "ivfpq", "hnsw"] = "auto"
    target_precision: float = Field(default=0.99, gt=0.5, lt=1.0)
    max_review: int = Field(default=200, ge=0)  # review queue length a cycle asks for
    gate_margin: float = Field(default=0.001, ge=0.0)
    gate_per_class_tolerance: float = Field(default=0.05, ge=0.0)
    device: str = "auto"  # "auto": cuda + AMP when present, else cpu
    num_workers: int = Field(default=0, ge=0)  # DataLoader workers running augmentations
    seed: int = 0

    # The tables are plain name -> module maps: checking a name imports no learning code.
    @field_validator("ssl_method")
    @classmethod
    def _known_ssl_method(cls, name: str) -> str:
        from flywheel.learn.ssl.methods import check_method

        return check_method(name)

    @field_validator("selection")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        from flywheel.select.strategies import check_strategy

        return check_strategy(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
    )

    data_dir: Path = Path("data")
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    mlflow: MLflowSettings = MLflowSettings()
    broker: BrokerSettings = BrokerSettings()
    ingest: IngestSettings = IngestSettings()
    learning: LearningSettings = LearningSettings()
    api: ApiSettings = ApiSettings()
    web: WebSettings = WebSettings()
    consensus: ConsensusSettings = ConsensusSettings()
    cycles: CycleSettings = CycleSettings()
    triggers: TriggerSettings = TriggerSettings()
    drift: DriftSettings = DriftSettings()

    @model_validator(mode="before")
    @classmethod
    def _numbers_from_environment(cls, data: Any) -> Any:
        return numbers_from_text(cls, data)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = settings_cls.model_config.get("yaml_file")
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    # Derived locations: computed, not stored, so one override (data_dir) moves them all.
    @property
    def storage_root(self) -> str:
        return self.storage.root or str((self.data_dir / "store").resolve())

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'flywheel.db').resolve()}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_location(self) -> str:
        return self.mlflow.artifact_location or (self.data_dir / "mlartifacts").resolve().as_uri()


def apply_library_environment() -> None:
    """Environment that third-party libraries only read from ``os.environ``.

    MLflow would otherwise try to send usage telemetry, which a service on a closed network
    must not do. Explicit settings by the operator win (setdefault).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings once, at the edge (CLI, API start-up, worker start-up).

    ``config`` (or ``$FLYWHEEL_CONFIG``) names a YAML file; keyword ``overrides`` win over
    everything (the CLI uses them for ``--data-dir``).
    """
    try:
        return _load(config, overrides)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


def _load(config: Path | str | None, overrides: dict[str, Any]) -> Settings:
    path = config or os.environ.get(CONFIG_ENV_VAR)
    if not path:
        return Settings(**overrides)
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"config file not found: {path}")
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"config file {path} is not valid YAML: {exc}") from exc
    # A subclass carries the file name, so env vars still outrank the file.
    with_file = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": path}}
    )
    return with_file(**overrides)
