"""What the feedback routes take and answer: the policy with its triggers, feedback items, live accuracy.

Each trigger kind is a small model selected by its ``kind`` field (as Modyn's trigger configs are),
so a policy reads as the list of conditions under which the model updates itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TRIGGERS = 8


class EveryNLabels(BaseModel):
    """Fires when ``n`` labels not yet learnt from have arrived."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["every_n_labels"] = "every_n_labels"
    n: int = Field(ge=1, le=10_000_000, description="labels in the buffer that make an update")


class EverySeconds(BaseModel):
    """Fires when ``seconds`` have passed since the last trigger-made update (or since the policy was
    set), if the buffer holds at least the policy's ``min_labels``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["every_seconds"] = "every_seconds"
    seconds: float = Field(gt=0, le=366 * 86400)


class AccuracyBelow(BaseModel):
    """Fires when the serving version's live accuracy (its last ``accuracy_window`` labelled
    predictions, at least ``min_samples`` of them) is below ``threshold``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["accuracy_below"] = "accuracy_below"
    threshold: float = Field(ge=0, le=1)
    min_samples: int = Field(50, ge=1, le=1_000_000)


class AccuracyDrop(BaseModel):
    """Fires when the serving version's live accuracy is ``drop`` or more below its accuracy at
    promotion (the mean of its test accuracies in the accuracy table), over ``min_samples`` or more."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["accuracy_drop"] = "accuracy_drop"
    drop: float = Field(gt=0, le=1)
    min_samples: int = Field(50, ge=1, le=1_000_000)


class Drift(BaseModel):
    """Fires when recent inputs (the last ``window`` logged) differ from the serving version's
    training data: a two-sample Kolmogorov-Smirnov test per input feature (``scipy.stats.ks_2samp``),
    significant when a p-value is below ``alpha`` divided by the number of features (Bonferroni).
    Numeric inputs only: a text model's policy may not hold it."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["drift"] = "drift"
    test: Literal["ks"] = Field("ks", description="ks: Kolmogorov-Smirnov per feature, Bonferroni-bounded")
    alpha: float = Field(0.05, gt=0, lt=1, description="family-wise significance level")
    window: int = Field(200, ge=10, le=100_000, description="the most recent logged inputs compared")
    min_samples: int = Field(50, ge=10, le=100_000, description="recent inputs needed before testing")
    reference_samples: int = Field(500, ge=10, le=100_000, description="training samples drawn for the test")


Trigger = Annotated[EveryNLabels | EverySeconds | AccuracyBelow | AccuracyDrop | Drift, Field(discriminator="kind")]


class UpdateOptions(BaseModel):
    """How a trigger-made task trains (as POST /tasks form fields); unset: the model's last task's."""

    model_config = ConfigDict(extra="forbid")
    epochs: int | None = Field(
        None,
        ge=1,
        description="epochs of each trigger-made update, exactly (its cost then grows with its labels); unset: the "
        "last task's, or the service's budget, whose floor of optimizer steps makes a small update cost about as "
        "much as retraining a small model",
    )
    ewc_lambda: float | Literal["auto"] | None = Field(None, description="a number >= 0 or 'auto'")
    test_fraction: float = Field(0.2, gt=0, lt=0.9)
    validation_fraction: float = Field(0.1, gt=0, lt=0.9)


class FeedbackPolicyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "log_rate": 1.0,
                    "log_max_samples": 50000,
                    "triggers": [
                        {"kind": "every_n_labels", "n": 500},
                        {"kind": "accuracy_drop", "drop": 0.05, "min_samples": 100},
                        {"kind": "drift", "alpha": 0.01},
                    ],
                }
            ]
        },
    )

    log_rate: float = Field(1.0, ge=0, le=1, description="fraction of served samples logged (0: none)")
    log_max_samples: int = Field(10_000, ge=1, description="logged samples kept per model; the oldest go first")
    accuracy_window: int = Field(500, ge=1, le=1_000_000, description="labelled predictions in live accuracy")
    min_labels: int = Field(20, ge=4, description="labels a trigger-made task needs at least")
    triggers: list[Trigger] = Field(default_factory=list, max_length=MAX_TRIGGERS)
    update: UpdateOptions = Field(default_factory=UpdateOptions)


class FeedbackPolicyOut(FeedbackPolicyIn):
    model: str
    updated_at: datetime


class FeedbackItem(BaseModel):
    prediction_id: str = Field(min_length=1, max_length=64)
    label: Any = Field(description="the true label: an integer or a string, as the model's labels")


class FeedbackIn(BaseModel):
    """Labels for logged predictions (``items``), or labelled samples of their own (``inputs`` and
    ``labels``), or both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"model": "digits", "items": [{"prediction_id": "4b1f0c...", "label": 7}]},
                {"model": "digits", "inputs": [[0.0, 0.5, 1.0, 0.25]], "labels": [3]},
                {"model": "tickets", "inputs": ["where is my refund?"], "labels": ["billing"]},
            ]
        },
    )

    model: str
    items: list[FeedbackItem] = Field(default_factory=list)
    inputs: list[Any] | None = None
    labels: list[Any] | None = None


class FeedbackResult(BaseModel):
    """One item's fate: ``status`` 200 kept (``changed`` False when it was already so), else the 4xx it got."""

    prediction_id: str | None
    status: int
    changed: bool = False
    detail: str | None = None


class FeedbackOut(BaseModel):
    model: str
    accepted: int
    refused: int
    results: list[FeedbackResult]


class VersionAccuracy(BaseModel):
    model_version: int
    accuracy: float | None
    n: int
    promotion_accuracy: float | None = Field(description="mean test accuracy in the accuracy table")
    serving: bool


class AccuracyPoint(BaseModel):
    at: datetime
    model_version: int | None
    accuracy: float
    n: int


class LiveAccuracyOut(BaseModel):
    model: str
    window: int
    versions: list[VersionAccuracy]
    history: list[AccuracyPoint] = Field(description="rolling accuracy after each batch of labels, oldest first")
    updates: list[dict[str, Any]] = Field(description="promotions (version, time) to mark on the line")


class TriggerDecisionOut(BaseModel):
    id: int
    trigger: str
    fired: bool
    reason: str
    task_id: int | None
    created_at: datetime


class TriggerDecisionsOut(BaseModel):
    model: str
    buffered_labels: int
    decisions: list[TriggerDecisionOut]
