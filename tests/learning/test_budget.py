"""The training budget grows for small tasks (``TrainConfig.min_steps``), the λ search cannot trade an
old task away for the new one, and an update warns when every λ it tried lost an old task."""

import numpy as np
import torch

from app.learning import ContinualLearner, TaskData, TrainConfig
from app.learning.lambda_search import successive_halving
from app.learning.learner import capacity_warning
from app.learning.training import Trainer


def test_a_small_task_trains_at_least_min_steps_in_whole_epochs_and_a_large_one_its_epochs():
    config = TrainConfig(epochs=4, min_steps=320, batch_size=32)
    assert config.epochs_for(1295) == 8  # 41 steps an epoch: 8 epochs reach 320 steps
    assert config.epochs_for(3601) == 4  # 113 steps an epoch: 4 epochs already are 452
    assert TrainConfig(epochs=4, min_steps=0).epochs_for(100) == 4
    layer = torch.nn.Linear(2, 2)
    trainer = Trainer(layer, list(layer.parameters()), torch.zeros(100, 2), torch.zeros(100, dtype=torch.long), config)
    assert trainer.total_steps == 4 * 80 and trainer.epochs == 80


def test_the_search_ranks_a_candidate_that_drops_an_old_task_after_one_that_keeps_it():
    # λ=1 has the best mean but drops the old task by 0.10; λ=10 keeps it within the bound.
    quality = {1: {"old": 0.80, "new": 0.99}, 10: {"old": 0.89, "new": 0.85}, 100: {"old": 0.90, "new": 0.60}}
    start, advance = (lambda value: {"value": value}), (lambda candidate, n: None)
    score = lambda candidate: quality[candidate["value"]]  # noqa: E731
    winner, _ = successive_halving([1, 10, 100], start, advance, score, 8, before={"old": 0.90}, max_drop=0.02)
    assert winner.value == 10
    plain, _ = successive_halving([1, 10, 100], start, advance, score, 8, before={"old": 0.90}, max_drop=1.0)
    assert plain.value == 1  # the plain mean would have traded the old task away
    # none keeps within the bound: the one that drops least wins
    least, entries = successive_halving([1, 10], start, advance, score, 8, before={"old": 0.95}, max_drop=0.02)
    assert least.value == 10 and not any(e.keeps_old_tasks(0.02) for e in entries)


def test_the_capacity_warning_comes_only_when_every_lambda_lost_an_old_task():
    search = [{"lambda": 10.0, "worst_old_task_drop": 0.30}, {"lambda": 1e4, "worst_old_task_drop": 0.08}]
    warning = capacity_warning(search, threshold=0.05)
    assert "λ = 10000" in warning and "8.0%" in warning and "ewc_replay" in warning and "wider" in warning
    assert capacity_warning([*search, {"lambda": 1e5, "worst_old_task_drop": 0.01}], threshold=0.05) is None
    assert capacity_warning(None, threshold=0.05) is None


def test_an_update_records_its_budget_and_each_candidates_old_task_drop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    tasks = [TaskData(x[:160], (x[:160, k] > 0).astype(int)) for k in range(2)]
    validation = {f"t{k}": TaskData(x[160:], (x[160:, k] > 0).astype(int)) for k in range(2)}
    learner = ContinualLearner.create("mlp", (4,), architecture_options={"hidden": [8]})
    config = TrainConfig(epochs=1, min_steps=20, batch_size=32)
    first = learner.learn_task("t0", tasks[0], validation=validation, train_config=config)
    assert first.train_config["epochs_trained"] == 4 and first.capacity_warning is None  # 5 steps an epoch
    second = learner.learn_task("t1", tasks[1], validation=validation, train_config=config, ewc_lambda="auto")
    assert all({"worst_old_task_drop", "keeps_old_tasks"} <= set(entry) for entry in second.lambda_search)
    least = min(entry["worst_old_task_drop"] for entry in second.lambda_search)
    assert (second.capacity_warning is not None) == (least > learner.ewc.capacity_warning_drop)
