"""Step 2-3 of an update, the part that runs wherever the update's processes are: learn the
task on top of the learner, then measure every learnt task on its test split. One process runs
it in the worker (``app.updates.apply``); N processes run it together, one call each, when the
task asks for more (``app.updates.ranks``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.learning import ContinualLearner, Evaluation, TaskData, TrainConfig, UpdateResult

TRAIN_CONFIG_KEYS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "seed")


def train_config_of(hyperparameters: dict | None, device: str) -> TrainConfig:
    """The task's training settings over the library's defaults. Epochs the user gave are the budget,
    exactly; without them the library chooses it (4 epochs, or more to reach ``min_steps`` on a small task,
    then early stopping on validation up to twice that)."""
    hyperparameters = hyperparameters or {}
    given = {key: hyperparameters[key] for key in TRAIN_CONFIG_KEYS if hyperparameters.get(key) is not None}
    exact: dict[str, Any] = {"min_steps": 0, "replay_min_steps": 0, "patience": 0} if "epochs" in given else {}
    return TrainConfig(device=device, **given, **exact)


def learn_and_evaluate(
    learner: ContinualLearner,
    task_id: int,
    strategy: str | None,
    hyperparameters: dict | None,
    splits_of: dict[int, dict[str, TaskData]],
    device: str,
    progress: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_evaluate: Callable[[], None] | None = None,
) -> tuple[UpdateResult, dict[int, Evaluation]]:
    """Learn task ``task_id`` (its train split; λ search and the gate on every learnt task's
    validation split), then the accuracy table row: every learnt task on its test split."""
    result = learner.learn_task(
        str(task_id),
        splits_of[task_id]["train"],
        strategy=strategy,
        validation={
            str(key): splits["validation"] for key, splits in splits_of.items() if len(splits["validation"].y) > 0
        },
        train_config=train_config_of(hyperparameters, device),
        ewc_lambda=(hyperparameters or {}).get("ewc_lambda"),
        progress=progress,
        should_stop=should_stop,
    )
    if on_evaluate is not None:
        on_evaluate()
    per_task = learner.predicts_per_task  # scored as the model answers: per task (ccll) or over every label
    accuracy = {
        key: learner.evaluate(splits["test"], task_key=str(key) if per_task else None)
        for key, splits in splits_of.items()
        if len(splits["test"].y) > 0
    }
    return result, accuracy
