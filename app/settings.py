"""All service settings in one place: one pydantic-settings class, read from the environment.

Every field is ``RETAIN_<FIELD>`` in the environment (e.g. ``RETAIN_LEASE_SECONDS=2``), except
the database URL, which is ``DATABASE_URL`` as most platforms set it (``RETAIN_DATABASE_URL``
works too). The defaults give the embedded single-process service: a SQLite file and an
artifact directory under ``./data`` and a worker thread inside the API process.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def sqlalchemy_url(url: str) -> str:
    """Platforms hand out ``postgresql://`` / ``postgres://`` URLs; the installed driver is psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_", extra="ignore", populate_by_name=True)

    # Storage
    database_url: str = Field(
        "sqlite:///./data/retain.db",
        validation_alias=AliasChoices("DATABASE_URL", "RETAIN_DATABASE_URL", "database_url"),
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    artifact_uri: str = Field(
        "./data/artifacts",
        description="directory or any fsspec URL (s3://bucket/prefix, ...) shared by the API and every worker",
    )

    # Access (app/auth/)
    auth: Literal["on", "off"] = Field(
        "on",
        description="off: every request acts as admin, no key needed (a throwaway local run only; warned at start)",
    )
    auth_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="how long an API replica trusts a key it verified "
        "before asking the database again (a revocation "
        "reaches other replicas within this); 0 = every request",
    )
    admin_key_file: str = Field(
        "./data/admin.key",
        description="where the first start writes the admin key it creates (mode 0600); the CLI reads it there",
    )
    admin_key: str | None = Field(
        None,
        min_length=32,
        description="an admin key to register at start (compose: RETAIN_ADMIN_KEY); no key file is written then",
    )

    # API processes (`retain serve`; docs/replicas.md)
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1,
        description="API processes `retain serve` runs on one port, forked by gunicorn's master after torch "
        "and the app are loaded, so they share those pages (auto: one per core); each has its own learner "
        "cache and batcher, and with more than one the embedded worker trains in the supervising process, once",
    )
    prepare_on_start: bool = Field(
        True,
        description="the app's start migrates an embedded SQLite database and makes sure an admin key exists; "
        "`retain serve --workers N` does both once before its replicas start and turns this off in them",
    )

    # Workers
    embedded_worker: bool = Field(True, description="run a worker thread inside the API process")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="where workers train: auto = cuda when present, cuda:K = GPU K (one worker "
        "per GPU on a many-GPU machine)",
    )
    max_update_bytes: int | None = Field(
        None,
        gt=0,
        description="a worker's memory budget for one update, in bytes: an update whose estimated peak (network "
        "and λ-search copies, gradients, optimizer state, Fisher, anchors, replay memory) is over it fails "
        "with that reason before training; none: no check",
    )
    fisher_samples: int = Field(
        4000,
        ge=1,
        description="most training samples an update estimates the Fisher on "
        "(recorded per version); lower it for large conv nets on CPU",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads torch uses in a worker (default: torch's "
        "own, one per core); set cores / workers when "
        "several workers share a machine",
    )
    max_nproc: int = Field(
        1,
        ge=1,
        description="most processes one update may run on (a task's nproc form field): "
        "data-parallel training and Fisher over torch.distributed, gloo on "
        "CPU, nccl on GPU (rank K on cuda:K); at most the GPUs a worker has",
    )
    poll_interval: float = Field(0.5, gt=0, description="seconds an idle worker waits before looking for work again")
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="a claimed job is requeued when its worker has not heartbeated for this long (worker lost)",
    )
    heartbeat_seconds: float | None = Field(
        None, gt=0, description="how often a busy worker renews its lease; default min(5, lease_seconds / 3)"
    )
    progress_interval: float = Field(1.0, ge=0, description="least seconds between two progress writes of a job")
    max_attempts: int = Field(3, ge=1, description="how many times a job may be started before it fails")
    artifact_gc_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="an artifact no row refers to is removed by garbage collection only once it is "
        "older than this: a job writes its artifacts before the commit that refers to "
        "them, so a young one may belong to a commit about to happen",
    )

    # Uploads and prediction
    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0, description="largest accepted upload, in bytes")
    max_upload_samples: int = Field(1_000_000, gt=0, description="most samples in one upload")
    max_predict_samples: int = Field(10_000, gt=0, description="most samples in one prediction request")
    max_model_parameters: int = Field(
        200_000_000,
        gt=0,
        description="most parameters an imported model may have (POST /models answers 413 above it)",
    )
    max_request_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="largest body of any other request (predict, inference), in bytes"
    )
    max_decoded_bytes: int | None = Field(
        None,
        gt=0,
        description="most bytes an upload's arrays may decode to "
        "(npz members, images, Parquet); default 4 x "
        "max_upload_bytes, at least 1 MiB",
    )
    max_abs_value: float = Field(
        1e6,
        gt=0,
        description="largest absolute feature value accepted in uploads and "
        "predictions (float32 training overflows long before "
        "1e300; raise it for data with large raw values)",
    )
    max_text_chars: int = Field(
        100_000,
        gt=0,
        description="most characters in one text sample (a row of a text dataset, or one text to predict); "
        "longer texts are refused, never cut",
    )
    max_labels_per_task: int = Field(1000, ge=2, description="most distinct labels in one upload")
    max_labels_per_model: int = Field(
        10_000, ge=2, description="most distinct labels a model's tasks may hold together (its classifier's width)"
    )
    max_layers: int = Field(16, ge=1, description="most layers in architecture_options (hidden, channels)")
    max_layer_width: int = Field(4096, ge=1, description="widest layer in architecture_options (hidden, channels)")
    max_epochs: int = Field(1000, ge=1, description="most epochs a task may ask for")
    max_batch_size: int = Field(8192, ge=1, description="largest batch_size a task may ask for")
    max_queued_per_model: int = Field(
        100, ge=1, description="most unfinished jobs per model; more are refused with 429 and Retry-After"
    )
    predict_cache_size: int = Field(8, ge=1, description="model versions kept loaded for prediction")
    predict_cache_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description="bytes of weights the prediction cache keeps loaded, all versions together (the least "
        "recently used go first; one version larger than this is still served, alone)",
    )

    # Serving (app/predict/batching.py, app/predict/served_versions.py)
    serving_threads: int = Field(
        1,
        ge=1,
        description="threads that run forward passes (one batch at a time "
        "each); torch's intra-op threads per forward are set by "
        "torch_threads",
    )
    predict_max_batch_size: int = Field(
        64,
        ge=1,
        description="most samples one serving forward pass takes when concurrent "
        "requests for a model version are batched together (the training batch is a task's "
        "batch_size, at most max_batch_size)",
    )
    max_queue_delay: float = Field(
        0.0,
        ge=0,
        description="seconds a request may wait for more requests to fill "
        "its batch; 0 (the default, as Triton's) batches only "
        "what is already waiting",
    )
    serving_check_interval: float = Field(
        0.005,
        ge=0,
        description="seconds a replica trusts its cached serving versions before checking the alias stamp again",
    )
    split_seed: int = Field(0, description="seed of the train/validation/test split of uploads")

    # The feedback loop (app/feedback/; docs/feedback-loop.md)
    feedback_flush_interval: float = Field(
        0.5, gt=0, description="seconds between writes of the buffered prediction log (a background thread)"
    )
    feedback_policy_interval: float = Field(
        5.0, gt=0, description="seconds an API replica keeps the feedback policies before reading them again"
    )
    feedback_check_interval: float = Field(
        5.0, gt=0, description="seconds between evaluations of the feedback triggers by a worker"
    )
    feedback_max_log_samples: int = Field(
        1_000_000, ge=1, description="the largest log_max_samples a feedback policy may set"
    )
    max_feedback_items: int = Field(
        10_000, ge=1, description="feedback items (labels or labelled samples) accepted per POST /feedback"
    )

    # Data by reference (POST /tasks with uri=...; app/datasets/data_uris.py)
    data_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated folders and s3:// (or, with allow_http_data, http(s)://) "
        "prefixes a task may name as its data; empty: references are off",
    )
    allow_http_data: bool = Field(
        False,
        description="allow http(s):// roots in data_roots (off: plain web URLs "
        "let a request make the service fetch from anywhere it reaches)",
    )
    max_reference_bytes: int | None = Field(
        None, gt=0, description="largest dataset read by reference; default max_upload_bytes"
    )

    # Learning quality. The default gate sits between what EWC and plain fine-tuning do to earlier
    # tasks on pmnist-conflict (MLP, 5 tasks, default settings): it passes every EWC update with a wide
    # margin (validation noise of small uploads included) and stops every fine-tuning update
    # (docs/benchmarks/measurements.md).
    default_max_forgetting: float = Field(
        0.1,
        ge=0,
        le=1,
        description="forgetting gate of new models: an update is stored but not promoted when any earlier task's "
        "validation accuracy drops by more than this (absolute, 0..1)",
    )

    # A task not learnt (docs/safeguards.md): its validation accuracy's Wilson 95% lower bound is no higher
    # than the share of its most frequent label, the accuracy of a model that learnt nothing.
    reject_not_learnt: bool = Field(
        True,
        description="reject an update (stored, not promoted; job rejected with the reason) when its new task, "
        "the first of a model included, was not learnt: validation accuracy no better than always answering the "
        "task's most frequent label (Wilson 95% lower bound); false: such updates are promoted as before",
    )

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        return sqlalchemy_url(url)

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value):
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between two heartbeats of a busy worker: ``heartbeat_seconds``, by default
        min(5, lease_seconds / 3)."""
        return self.heartbeat_seconds if self.heartbeat_seconds is not None else min(5.0, self.lease_seconds / 3)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.heartbeat_seconds is None:
            self.heartbeat_seconds = self.heartbeat_interval
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be shorter than lease_seconds "
                f"({self.lease_seconds}), or every lease would expire between two heartbeats"
            )
        return self

    @field_validator("admin_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value):
        return None if value == "" else value

    @property
    def decoded_bytes_limit(self) -> int:
        return self.max_decoded_bytes or max(4 * self.max_upload_bytes, 1 << 20)

    @property
    def worker_count(self) -> int:
        """``workers`` as a number: auto is the cores this process may run on."""
        return available_cores() if self.workers == "auto" else self.workers

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
