"""What the registry routes answer: models, versions (with λ and Fisher recipe), the accuracy matrix."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict


class ParameterCounts(BaseModel):
    base: int
    per_task: dict[str, int] = Field(default_factory=dict, description="parameters each task added (ccll), by task id")
    per_task_percent_of_base: dict[str, float] = Field(default_factory=dict)
    total: int


class ReplayMemory(BaseModel):
    samples: int
    bytes: int
    capacity: int = Field(description="memory_size: the most samples it keeps, shared equally among tasks")


MODEL_EXAMPLE: JsonDict = {
    "name": "digits",
    "architecture": "mlp",
    "family": "ewc",
    "input_shape": [1, 28, 28],
    "options": {"hidden": [100, 100]},
    "serving_version": 2,
    "max_forgetting": 0.05,
    "n_versions": 2,
    "n_tasks": 2,
    "parameter_counts": {"base": 89610, "per_task": {}, "per_task_percent_of_base": {}, "total": 89610},
    "replay_memory": {"samples": 1000, "bytes": 3144000, "capacity": 1000},
    "created_at": "2025-01-01T12:00:00Z",
}


class ModelOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [MODEL_EXAMPLE]})

    name: str
    architecture: str
    family: str = Field(
        description="model family: ewc (its updates may use strategy ewc, finetune, replay or ewc_replay) or ccll"
    )
    input_shape: list[int]
    options: dict[str, Any]
    serving_version: int | None
    max_forgetting: float | None
    n_versions: int
    n_tasks: int
    parameter_counts: ParameterCounts | None = Field(
        None, description="of the serving version; only in GET /models/{name}"
    )
    replay_memory: ReplayMemory | None = Field(
        None,
        description="the serving version's rehearsal memory (strategies auto, replay, ewc_replay): samples kept, "
        "their bytes in its consolidation payload, and the memory_size bound; only in GET /models/{name}",
    )
    created_at: datetime


VERSION_EXAMPLE: JsonDict = {
    "id": 12,
    "number": 2,
    "parent_number": 1,
    "task_id": 8,
    "task_name": "permuted digits",
    "strategy": "auto",
    "strategy_choice": {
        "strategy": "ewc",
        "reason": "every label of the task is known to the model: EWC keeps the old tasks",
    },
    "ewc_lambda": 100.0,
    "lambda_search": [
        {"lambda": 10.0, "validation_accuracy": 0.81, "per_task": {"7": 0.7, "8": 0.92}, "epochs": 1},
        {"lambda": 100.0, "validation_accuracy": 0.9, "per_task": {"7": 0.9, "8": 0.9}, "epochs": 2},
    ],
    "fisher_recipe": {
        "label_mode": "true",
        "n_samples": 1000,
        "scaling": "mean over samples",
        "half_convention": "lambda/2",
        "consolidation": "separate",
        "gamma": 1.0,
    },
    "train_config": {"optimizer": "sgd", "lr": 0.05, "epochs": 4},
    "validation": {
        "max_forgetting": 0.1,
        "before": {"7": 0.93},
        "after": {"7": 0.9, "8": 0.91},
        "drops": {"7": 0.03},
        "tripped_by": [],
        "passed": True,
        "capacity_warning": None,
    },
    "capacity_warning": None,
    "train_seconds": 12.4,
    "search_seconds": 12.4,
    "promoted": True,
    "serving": True,
    "weights_uri": "file:///data/artifacts/ab/abcd….safetensors",
    "weights_sha256": "abcd…",
    "weights_size": 360000,
    "consolidation_sha256": "ef01…",
    "consolidation_size": 720000,
    "created_at": "2025-01-01T12:01:10Z",
}


class VersionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [VERSION_EXAMPLE]})

    id: int
    number: int
    parent_number: int | None
    task_id: int | None
    task_name: str | None
    strategy: str | None = Field(None, description="the strategy the task asked for")
    strategy_choice: dict[str, Any] | None = Field(
        None,
        description="with strategy auto: the strategy the update was learnt with (ewc, or ewc_replay for a task "
        "that brought new labels) and why",
    )
    ewc_lambda: float | None = Field(None, description="the λ used (the chosen one when ewc_lambda was auto)")
    lambda_search: list[dict[str, Any]] | None = Field(
        None, description="the λ candidates with their validation scores"
    )
    fisher_recipe: dict[str, Any] | None = Field(None, description="label mode, sample count, scaling, ½ convention")
    train_config: dict[str, Any] | None = None
    validation: dict[str, Any] | None = Field(
        None,
        description="the forgetting gate's verdict on validation data: accuracy of every task before and after "
        "the update, drops, max_forgetting, passed, tripped_by, capacity_warning",
    )
    capacity_warning: str | None = Field(
        None,
        description="set when old tasks lost validation accuracy whatever λ the search tried: the model may be "
        "too small for its tasks (a wider model, or rehearsal with strategy ewc_replay, may help)",
    )
    train_seconds: float | None = Field(None, description="training time of the update, λ search included")
    search_seconds: float | None = Field(None, description="time spent choosing λ (0 when λ was given)")
    promoted: bool
    serving: bool
    weights_uri: str
    weights_sha256: str
    weights_size: int
    consolidation_sha256: str | None
    consolidation_size: int | None
    created_at: datetime


class MatrixTask(BaseModel):
    task_id: int
    name: str | None


class MatrixCell(BaseModel):
    task_id: int
    accuracy: float
    loss: float | None
    n_test: int


class MatrixRow(BaseModel):
    model_version: int
    task_id: int | None = Field(description="the task this version learnt")
    task_name: str | None
    promoted: bool
    serving: bool
    accuracy: list[MatrixCell]


MATRIX_EXAMPLE: JsonDict = {
    "model": "digits",
    "tasks": [{"task_id": 7, "name": "digits"}, {"task_id": 8, "name": "permuted digits"}],
    "rows": [
        {
            "model_version": 1,
            "task_id": 7,
            "task_name": "digits",
            "promoted": True,
            "serving": False,
            "accuracy": [{"task_id": 7, "accuracy": 0.96, "loss": 0.13, "n_test": 1000}],
        },
        {
            "model_version": 2,
            "task_id": 8,
            "task_name": "permuted digits",
            "promoted": True,
            "serving": True,
            "accuracy": [
                {"task_id": 7, "accuracy": 0.95, "loss": 0.16, "n_test": 1000},
                {"task_id": 8, "accuracy": 0.93, "loss": 0.21, "n_test": 1000},
            ],
        },
    ],
    "matrix": [[0.96, None], [0.95, 0.93]],
    "average_accuracy": 0.94,
    "bwt": -0.01,
    "forgetting": 0.01,
}


class AccuracyMatrixOut(BaseModel):
    """R[i][j] = test accuracy on task j after the update that learnt task i (promoted versions, in order)."""

    model_config = ConfigDict(json_schema_extra={"examples": [MATRIX_EXAMPLE]})

    model: str
    tasks: list[MatrixTask]
    rows: list[MatrixRow] = Field(description="every version, rejected ones included")
    matrix: list[list[float | None]] = Field(description="R over the promoted line of versions")
    average_accuracy: float | None
    bwt: float | None = Field(None, description="backward transfer (Lopez-Paz & Ranzato 2017)")
    forgetting: float | None = Field(None, description="mean of best earlier minus final (Chaudhry et al. 2018)")


class ServingVersionIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"version": 1, "reason": "rollback: v2 forgot task 1"}]})

    version: int = Field(ge=1)
    reason: str | None = Field(None, max_length=500)


class ServingVersionOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "digits", "serving_version": 1, "previous_version": 2, "reason": "rollback"}]
        }
    )

    model: str
    serving_version: int
    previous_version: int | None
    reason: str | None


class CollectionOut(BaseModel):
    """What an artifact collection found and removed (app/registry/collection.py)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "dry_run": False,
                    "grace_seconds": 3600.0,
                    "stored": 42,
                    "referenced": 37,
                    "kept_recent": 1,
                    "removed": 4,
                    "bytes_freed": 1843200,
                }
            ]
        },
    )

    dry_run: bool = Field(description="true: nothing was removed; removed and bytes_freed say what would have been")
    grace_seconds: float = Field(
        description="unreferenced artifacts younger than this are kept (artifact_gc_grace_seconds)"
    )
    stored: int = Field(description="artifacts in the store")
    referenced: int = Field(description="of those, named by a dataset, a version or a version's consolidation manifest")
    kept_recent: int = Field(
        description="unreferenced but younger than the grace period (maybe a commit about to happen)"
    )
    removed: int
    bytes_freed: int


class DeletedOut(BaseModel):
    """What a delete removed: rows first (one transaction), then the artifacts nothing refers to any more."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "digits",
                    "versions": [3],
                    "tasks": 0,
                    "jobs": 0,
                    "artifacts": {
                        "dry_run": False,
                        "grace_seconds": 3600.0,
                        "stored": 40,
                        "referenced": 37,
                        "kept_recent": 3,
                        "removed": 0,
                        "bytes_freed": 0,
                    },
                }
            ]
        }
    )

    model: str
    versions: list[int] = Field(description="the numbers of the versions deleted")
    tasks: int = Field(
        description="tasks deleted (with their datasets and accuracy rows); a version delete keeps its task"
    )
    jobs: int = Field(description="jobs deleted")
    artifacts: CollectionOut | None = Field(
        description="the collection run right after: what the deleted rows alone "
        "referred to is removed once older than the grace period "
        "(null when it could not run; the next collection does it)"
    )
