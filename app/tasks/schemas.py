"""What POST /tasks accepts (as form fields) and what the task routes answer."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from app.errors import InvalidInput
from app.jobs.status import JobStatus
from app.learning import ARCHITECTURES, strategy_names
from app.settings import Settings

MAX_OPTIONS_CHARACTERS = 4096
LAYER_OPTIONS = ("hidden", "channels")  # the architecture options that are lists of layer widths

STRATEGIES = (
    strategy_names()
)  # every registered strategy: ewc, finetune, replay, ewc_replay, ccll (benchmark baselines are not)


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
    nproc: int | None = None  # processes the update runs on (torch.distributed); None: one

    @classmethod
    def from_form(
        cls,
        *,
        model: str,
        name: str | None,
        architecture: str | None,
        architecture_options: str | None,
        strategy: str,
        ewc_lambda: str,
        epochs: int | None,
        batch_size: int | None,
        lr: float | None,
        test_fraction: float,
        validation_fraction: float,
        max_forgetting: float | None,
        nproc: int | None = None,
        max_nproc: int = 1,
    ) -> TaskRequest:
        model = model.strip()
        if not model or len(model) > 100 or "/" in model or not model.isprintable():
            raise InvalidInput("model must be a non-empty name of at most 100 printable characters without '/'")
        if name is not None and (len(name) > 200 or not name.isprintable()):
            raise InvalidInput("name must be at most 200 printable characters (no control characters or NUL)")
        if architecture is not None and architecture not in ARCHITECTURES:
            raise InvalidInput(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {architecture!r}")
        if strategy not in STRATEGIES:
            raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        options = None
        if architecture_options not in (None, ""):
            if len(architecture_options) > MAX_OPTIONS_CHARACTERS:
                raise InvalidInput(
                    f"architecture_options is {len(architecture_options)} characters; the limit is "
                    f"{MAX_OPTIONS_CHARACTERS}"
                )
            try:
                options = json.loads(architecture_options)
            except RecursionError:
                raise InvalidInput(
                    'architecture_options is nested too deeply; it is a flat JSON object such as {"hidden": [100, 100]}'
                ) from None
            except ValueError as error:
                raise InvalidInput(f"architecture_options must be a JSON object: {error}") from error
            if not isinstance(options, dict):
                raise InvalidInput(f"architecture_options must be a JSON object, got {architecture_options!r}")
        if nproc is not None and not 1 <= nproc <= max_nproc:
            raise InvalidInput(
                f"nproc must be between 1 and {max_nproc} (the max_nproc setting, RETAIN_MAX_NPROC); got {nproc}"
            )
        return cls(
            model=model,
            name=name,
            architecture=architecture,
            architecture_options=options,
            strategy=strategy,
            ewc_lambda=parse_lambda(ewc_lambda),
            epochs=positive("epochs", epochs),
            batch_size=positive("batch_size", batch_size),
            lr=positive("lr", lr),
            test_fraction=test_fraction,
            validation_fraction=validation_fraction,
            max_forgetting=unit_interval("max_forgetting", max_forgetting),
            nproc=nproc,
        )

    def check_limits(self, settings: Settings) -> None:
        """The budget a task may ask for: layer widths and depth, epochs, batch size (from settings)."""
        for option in LAYER_OPTIONS:
            widths = (self.architecture_options or {}).get(option)
            if widths is None:
                continue
            if not isinstance(widths, list) or not all(type(width) is int and width > 0 for width in widths):
                raise InvalidInput(
                    f"architecture option {option!r} must be a list of positive integers; got {widths!r}"
                )
            if len(widths) > settings.max_layers:
                raise InvalidInput(
                    f"architecture option {option!r} has {len(widths)} layers; the limit is "
                    f"{settings.max_layers} (max_layers)"
                )
            if widths and max(widths) > settings.max_layer_width:
                raise InvalidInput(
                    f"architecture option {option!r} has a layer of width {max(widths)}; the limit is "
                    f"{settings.max_layer_width} (max_layer_width)"
                )
        for field, limit, setting in (
            ("epochs", settings.max_epochs, "max_epochs"),
            ("batch_size", settings.max_batch_size, "max_batch_size"),
        ):
            value = getattr(self, field)
            if value is not None and value > limit:
                raise InvalidInput(f"{field} is {value}; the limit is {limit} ({setting})")

    def hyperparameters(self) -> dict:
        return {
            key: value
            for key, value in {
                "ewc_lambda": self.ewc_lambda,
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "test_fraction": self.test_fraction,
                "validation_fraction": self.validation_fraction,
                "nproc": self.nproc,
            }.items()
            if value is not None
        }


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


TASK_EXAMPLE: JsonDict = {
    "id": 7,
    "job_id": 7,
    "status": "queued",
    "model": "digits",
    "name": "permuted digits",
    "strategy": "auto",
    "hyperparameters": {"ewc_lambda": "auto", "epochs": 4, "test_fraction": 0.2, "validation_fraction": 0.1},
    "dataset": {
        "id": 3,
        "sha256": "9f2c…",
        "format": "npz",
        "n_train": 3600,
        "n_validation": 400,
        "n_test": 1000,
        "input_shape": [1, 28, 28],
        "labels": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    },
    "model_version": None,
    "created_at": "2025-01-01T12:00:00Z",
}


class TaskOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [TASK_EXAMPLE]})

    id: int
    job_id: int | None
    status: JobStatus = Field(
        description="the status of the task's job: queued | running | succeeded | failed | cancelled | rejected"
    )
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


ACCURACY_EXAMPLE: JsonDict = {
    "task_id": 1,
    "history": [
        {
            "model_version": 1,
            "after_task_id": 1,
            "accuracy": 0.962,
            "loss": 0.13,
            "n_test": 1000,
            "promoted": True,
            "created_at": "2025-01-01T12:00:10Z",
        },
        {
            "model_version": 2,
            "after_task_id": 2,
            "accuracy": 0.948,
            "loss": 0.17,
            "n_test": 1000,
            "promoted": True,
            "created_at": "2025-01-01T12:01:10Z",
        },
    ],
    "initial": 0.962,
    "current": 0.948,
    "best": 0.962,
    "forgetting": 0.014,
}


class TaskAccuracyOut(BaseModel):
    """One task's test accuracy after every update since it was learnt, oldest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [ACCURACY_EXAMPLE]})

    task_id: int
    history: list[AccuracyEntry]
    initial: float | None = Field(None, description="accuracy right after the task was learnt")
    current: float | None = Field(
        None, description="accuracy of the serving version (latest measured when none serves)"
    )
    best: float | None
    forgetting: float | None = Field(None, description="best minus current (Chaudhry et al. 2018)")


class PromoteOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"task_id": 8, "model": "digits", "model_version": 3, "previous_version": 2, "status": "succeeded"}
            ]
        }
    )

    task_id: int
    model: str
    model_version: int
    previous_version: int | None
    status: JobStatus
