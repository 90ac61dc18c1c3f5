"""The schema as typed SQLAlchemy 2.0 ORM tables.

The tables are created only by the Alembic migrations in migrations/ (tests included), so
every change here needs a migration. Registry integrity lives in constraints, not only in
code: one version per task (an update is applied at most once, whichever worker finishes
it), one accuracy row per (version, task), version numbers unique per model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.jobs.status import JobStatus

JOB_STATUSES = tuple(JobStatus)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database: SQLite keeps no zone, so values are
    stored as UTC and come back aware (comparisons with ``utcnow()`` stay valid everywhere)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    # Named constraints, so migrations can drop and alter them by name on every database.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    architecture: Mapped[str] = mapped_column(String(200))
    family: Mapped[str] = mapped_column(String(32))  # ewc | ccll: which update strategies apply
    input_shape: Mapped[list[Any]] = mapped_column(JSON)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    serving_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", use_alter=True), nullable=True
    )
    max_forgetting: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the upload
    format: Mapped[str] = mapped_column(String(16))
    n_train: Mapped[int]
    n_validation: Mapped[int]
    n_test: Mapped[int]
    input_shape: Mapped[list[Any]] = mapped_column(JSON)
    labels: Mapped[list[Any]] = mapped_column(JSON)
    artifact_uri: Mapped[str] = mapped_column(Text)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    strategy: Mapped[str] = mapped_column(String(32))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)  # mirrors its job's
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One update to apply; the jobs table is the queue (app/jobs/queue.py). ``status`` changes only
    in app/jobs/state_machine.py. ``attempt`` is the number of the current try, from 1."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(str(s)) for s in JOB_STATUSES)})", name="job_status"),
        Index("ix_jobs_model_status", "model_id", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    # Empty only on the record of a failed or cancelled import, whose rows are gone
    # (app/jobs/failed_import.py); ``model_name`` then keeps the name it would have had.
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True, nullable=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    model_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    attempt: Mapped[int] = mapped_column(default=1)
    max_attempts: Mapped[int] = mapped_column(default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ModelVersion(Base):
    """A learnt state of a model: weights + consolidation (Fisher, anchors) artifacts, the λ chosen and
    what it means (Fisher recipe), and the validation numbers the forgetting gate judged it by."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number"), UniqueConstraint("task_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    number: Mapped[int]
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), nullable=True)
    weights_uri: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    weights_size: Mapped[int] = mapped_column(BigInteger)
    consolidation_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    consolidation_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    consolidation_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ewc_lambda: Mapped[float | None] = mapped_column(Float, nullable=True)
    lambda_search: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    fisher_recipe: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    train_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # {"before": {task: acc}, "after": {task: acc}, "drops": {task: drop}, "max_forgetting": float,
    #  "passed": bool, "tripped_by": task | None}; validation split only (never test)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    train_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    search_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    promoted: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Accuracy(Base):
    __tablename__ = "accuracy"
    __table_args__ = (UniqueConstraint("model_version_id", "task_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    accuracy: Mapped[float] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_test: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasChange(Base):
    __tablename__ = "alias_changes"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    to_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A bearer API key (app/auth/): only the SHA-256 of the secret is stored, never the secret;
    ``prefix`` (the first characters) lets a user tell keys apart in a listing."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('predict', 'train', 'admin')", name="api_key_scope"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class FeedbackPolicy(Base):
    """A model's feedback loop (app/feedback/): what predictions to log, and the triggers that turn
    labels into updates, as the JSON of ``app.feedback.schemas.FeedbackPolicyIn``."""

    __tablename__ = "feedback_policies"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoggedSample(Base):
    """A served prediction (``prediction_id`` given to the caller) or a labelled sample sent as feedback
    (no version, no prediction). ``inputs``: the sample behind a one-byte tag, raw float32 or a text as
    UTF-8 (app/feedback/prediction_log.py; older rows: zlib-compressed float32). ``label`` is the
    true label once known; ``task_id`` the trigger-made task it went into (None: still in the buffer)."""

    __tablename__ = "logged_samples"
    __table_args__ = (
        Index("ix_logged_samples_model_id_id", "model_id", "id"),
        Index("ix_logged_samples_model_buffer", "model_id", "task_id", "labelled_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(String(32), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    inputs: Mapped[bytes] = mapped_column(LargeBinary)
    predicted: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    label: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    labelled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TriggerDecision(Base):
    """One evaluation of a model's trigger that decided something (fired, or why not), newest last."""

    __tablename__ = "trigger_decisions"
    __table_args__ = (Index("ix_trigger_decisions_model_id_id", "model_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    trigger: Mapped[str] = mapped_column(String(32))
    fired: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
