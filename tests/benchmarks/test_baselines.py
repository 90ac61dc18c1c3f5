"""The benchmark baselines: joint training is the multi-task bound, and only with its own memory."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.learning import ContinualLearner, TaskData, TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # scripts' folder, not a package
from baselines import Joint


def _tasks() -> tuple[TaskData, TaskData]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    return TaskData(x, (x[:, 0] > 0).astype(int)), TaskData(x, 2 + (x[:, 1] > 0).astype(int))


def test_joint_trains_from_scratch_on_every_task_seen_so_far():
    """The upper bound is multi-task training: the second joint update cannot depend on the
    weights the first one left, and it learns both tasks."""
    task_a, task_b = _tasks()
    learners = []
    for first_epochs in (1, 3):
        learner = ContinualLearner.create("mlp", (4,), architecture_options={"hidden": [16]})
        joint = Joint()
        learner.learn_task("a", task_a, strategy=joint, train_config=TrainConfig(epochs=first_epochs))
        result = learner.learn_task("b", task_b, strategy=joint, train_config=TrainConfig(epochs=5))
        learners.append(learner)
    assert result.strategy == "joint" and result.ewc_lambda is None
    for (name, first), (_, second) in zip(*(learner.network.state_dict().items() for learner in learners), strict=True):
        assert torch.equal(first, second), name
    assert learners[0].evaluate(task_a, task_key="a").accuracy > 0.9
    assert learners[0].evaluate(task_b, task_key="b").accuracy > 0.9


def test_joint_refuses_a_learner_whose_earlier_tasks_it_did_not_keep():
    task_a, task_b = _tasks()
    learner = ContinualLearner.create("mlp", (4,), architecture_options={"hidden": [16]})
    learner.learn_task("a", task_a, train_config=TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="memory"):
        learner.learn_task("b", task_b, strategy=Joint())
    assert learner.task_keys == ["a"]  # refused before anything changed
