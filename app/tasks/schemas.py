"""What POST /tasks accepts (as form fields) and what the task routes answer."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.errors import InvalidInput
from app.jobs.status import JobStatus
from app.learning import ARCHITECTURES, strategy_names

STRATEGIES = strategy_names()  # every registered strategy: ewc, finetune, replay, ewc_replay, ccll (benchmark baselines are not)


@dataclass
class TaskRequest:
    """The form fields of POST /tasks, checked; the file is parsed separately."""

    model: str
    name: str | None
    architecture: str | None
    architecture_options: dict | None
    strategy: str
    ewc_lambda: float | str  # a float or "auto"
    epochs: int | None
    batch_size: int | None
    lr: float | None
    test_fraction: float
    validation_fraction: float
    max_forgetting: float | None

    @classmethod
    def from_form(cls, *, model: str, name: str | None, architecture: str | None, architecture_options: str | None,
                  strategy: str, ewc_lambda: str, epochs: int | None, batch_size: int | None, lr: float | None,
                  test_fraction: float, validation_fraction: float, max_forgetting: float | None) -> "TaskRequest":
        model = model.strip()
        if not model or len(model) > 100 or "/" in model:
            raise InvalidInput("model must be a non-empty name of at most 100 characters without '/'")
        if architecture is not None and architecture not in ARCHITECTURES:
            raise InvalidInput(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {architecture!r}")
        if strategy not in STRATEGIES:
            raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        options = None
        if architecture_options not in (None, ""):
            try:
                options = json.loads(architecture_options)
            except ValueError as error:
                raise InvalidInput(f"architecture_options must be a JSON object: {error}") from error
            if not isinstance(options, dict):
                raise InvalidInput(f"architecture_options must be a JSON object, got {architecture_options!r}")
        return cls(model=model, name=name, architecture=architecture, architecture_options=options,
                   strategy=strategy, ewc_lambda=parse_lambda(ewc_lambda), epochs=positive("epochs", epochs),
                   batch_size=positive("batch_size", batch_size), lr=positive("lr", lr),
                   test_fraction=test_fraction, validation_fraction=validation_fraction,
                   max_forgetting=unit_interval("max_forgetting", max_forgetting))

    def hyperparameters(self) -> dict:
        return {key: value for key, value in {
            "ewc_lambda": self.ewc_lambda, "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
            "test_fraction": self.test_fraction, "validation_fraction": self.validation_fraction,
        }.items() if value is not None}


def parse_lambda(value: str | None) -> float | str:
    if value is None or value.strip().lower() in ("", "auto"):
        return "auto"
    try:
        number = float(value)
    except ValueError as error:
        raise InvalidInput(f"ewc_lambda must be a non-negative number or 'auto'; got {value!r}") from error
    if not math.isfinite(number) or number < 0:
        raise InvalidInput(f"ewc_lambda must be a non-negative number or 'auto'; got {value!r}")
    return number


def positive(name: str, value):
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise InvalidInput(f"{name} must be positive; got {value}")
    return value


def unit_interval(name: str, value: float | None) -> float | None:
    if value is not None and not (0.0 <= value <= 1.0):
        raise InvalidInput(f"{name} must be between 0 and 1; got {value}")
    return value


class DatasetOut(BaseModel):
    id: int
    sha256: str
    format: str
    n_train: int
    n_validation: int
    n_test: int
    input_shape: list[int]
    labels: list[int | str]


TASK_EXAMPLE = {
    "id": 7, "job_id": 7, "status": "queued", "model": "digits", "name": "permuted digits",
    "strategy": "ewc", "hyperparameters": {"ewc_lambda": "auto", "epochs": 4, "test_fraction": 0.2,
                                             "validation_fraction": 0.1},
    "dataset": {"id": 3, "sha256": "9f2c…", "format": "npz", "n_train": 3600, "n_validation": 400, "n_test": 1000,
                "input_shape": [1, 28, 28], "labels": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]},
    "model_version": None, "created_at": "2025-01-01T12:00:00Z",
}


class TaskOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [TASK_EXAMPLE]})

    id: int
    job_id: int | None
    status: JobStatus = Field(description="the status of the task's job: queued | running | succeeded | failed | cancelled | rejected")
    model: str
    name: str | None
    strategy: str
    hyperparameters: dict[str, Any]
    dataset: DatasetOut
    model_version: int | None = Field(None, description="number of the version this task produced, once trained")
    created_at: datetime


class AccuracyEntry(BaseModel):
    model_version: int
    after_task_id: int
    accuracy: float
    loss: float | None = None
    n_test: int
    promoted: bool
    created_at: datetime


ACCURACY_EXAMPLE = {
    "task_id": 1,
    "history": [
        {"model_version": 1, "after_task_id": 1, "accuracy": 0.962, "loss": 0.13, "n_test": 1000, "promoted": True,
         "created_at": "2025-01-01T12:00:10Z"},
        {"model_version": 2, "after_task_id": 2, "accuracy": 0.948, "loss": 0.17, "n_test": 1000, "promoted": True,
         "created_at": "2025-01-01T12:01:10Z"},
    ],
    "initial": 0.962, "current": 0.948, "best": 0.962, "forgetting": 0.014,
}


class TaskAccuracyOut(BaseModel):
    """One task's test accuracy after every update since it was learnt, oldest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [ACCURACY_EXAMPLE]})

    task_id: int
    history: list[AccuracyEntry]
    initial: float | None = Field(None, description="accuracy right after the task was learnt")
    current: float | None = Field(None, description="accuracy of the serving version (latest measured when none serves)")
    best: float | None
    forgetting: float | None = Field(None, description="best minus current (Chaudhry et al. 2018)")


class PromoteOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"task_id": 8, "model": "digits", "model_version": 3, "previous_version": 2, "status": "succeeded"}]})

    task_id: int
    model: str
    model_version: int
    previous_version: int | None
    status: JobStatus
