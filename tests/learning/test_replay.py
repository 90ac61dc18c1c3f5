"""Rehearsal: the replay strategies keep a bounded, per-task-balanced memory that travels with the
consolidation payload, and replaying it keeps an old task that fine-tuning forgets."""

import numpy as np
import pytest
import torch

from app.learning import ContinualLearner, EWCConfig, TaskData, TrainConfig
from app.learning.memory import RehearsalMemory
from app.learning.state import from_safetensors_bytes, to_safetensors_bytes
from app.learning.training import Trainer


def _conflicting_tasks(n_tasks: int, n: int = 120, d: int = 6):
    """Tasks whose label rule differs (the sign of a different coordinate), told apart by their last
    coordinate: one network can learn them all, but learning one moves the weights the others use."""
    rng = np.random.default_rng(0)
    tasks = []
    for k in range(n_tasks):
        x = rng.normal(size=(n, d)).astype(np.float32)
        x[:, -1] = k
        tasks.append(TaskData(x, (x[:, k] > 0).astype(int)))
    return tasks


def test_the_memory_is_bounded_balanced_and_stored_with_the_consolidation():
    learner = ContinualLearner.create("mlp", (6,), architecture_options={"hidden": [8], "memory_size": 31})
    for k, task in enumerate(_conflicting_tasks(3)):
        learner.learn_task(f"t{k}", task, strategy="replay", train_config=TrainConfig(epochs=1, min_steps=0))
        assert len(learner.memory) == 31  # filled to capacity from the first task on
    assert [len(y) for _, y in learner.memory.tasks.values()] == [11, 10, 10]
    x, y = learner.memory.tasks["t0"]
    assert x.shape == (11, 6) and set(y.tolist()) <= {0, 1}

    payload = to_safetensors_bytes(*learner.export_consolidation())
    reloaded = ContinualLearner.from_exports(learner.export_weights(), from_safetensors_bytes(payload))
    assert reloaded.memory.capacity == 31 and list(reloaded.memory.tasks) == ["t0", "t1", "t2"]
    for key, (x, y) in learner.memory.tasks.items():
        assert torch.equal(reloaded.memory.tasks[key][0], x) and torch.equal(reloaded.memory.tasks[key][1], y)
    assert reloaded.consolidation.entries.keys() == {"t0", "t1", "t2"}
    assert ContinualLearner.from_exports(learner.export_weights()).memory is None  # a serving copy carries none


def test_ewc_updates_keep_no_memory_and_a_ccll_model_refuses_memory_size():
    learner = ContinualLearner.create("mlp", (6,), architecture_options={"hidden": [8]})
    learner.learn_task("a", _conflicting_tasks(1)[0], train_config=TrainConfig(epochs=1, min_steps=0))
    assert learner.memory.is_empty
    assert not any(name.startswith("memory.") for name in learner.export_consolidation()[0])
    with pytest.raises(ValueError, match="memory_size are ewc options"):
        ContinualLearner.create("cnn", (1, 8, 8), family="ccll", architecture_options={"memory_size": 10})
    with pytest.raises(ValueError, match="memory_size must be"):
        ContinualLearner.create("mlp", (6,), architecture_options={"memory_size": -1})
    none = ContinualLearner.create("mlp", (6,), architecture_options={"memory_size": 0})
    with pytest.raises(ValueError, match="memory_size is 0"):
        none.learn_task("a", _conflicting_tasks(1)[0], strategy="replay")


def test_shrinking_a_task_share_keeps_a_prefix_of_its_samples():
    memory = RehearsalMemory(6)
    memory.add_task("a", torch.arange(10.0).unsqueeze(1), torch.arange(10), seed=0)
    first = memory.tasks["a"][1].clone()
    memory.add_task("b", torch.arange(10.0).unsqueeze(1), torch.arange(10), seed=1)
    assert torch.equal(memory.tasks["a"][1], first[:3]) and len(memory) == 6


@pytest.mark.parametrize("strategy", ["replay", "ewc_replay"])
def test_replaying_the_memory_keeps_an_old_task_that_finetuning_forgets(strategy):
    first, second = _conflicting_tasks(2, n=400)
    config = TrainConfig(epochs=6, min_steps=0)
    accuracy = {}
    for method in ("finetune", strategy):
        learner = ContinualLearner.create("mlp", (6,), architecture_options={"hidden": [32], "memory_size": 200})
        learner.learn_task("a", first, strategy=method, train_config=config)
        result = learner.learn_task("b", second, strategy=method, train_config=config, ewc_lambda=10.0)
        accuracy[method] = (learner.evaluate(first).accuracy, learner.evaluate(second).accuracy)
        assert result.strategy == method and (result.ewc_lambda is not None) == (method == "ewc_replay")
    assert accuracy[strategy][0] > accuracy["finetune"][0] + 0.15  # the old task is kept
    assert accuracy[strategy][1] > 0.8  # and the new one learnt


def test_a_replay_batch_is_half_new_half_memory_so_a_step_costs_a_plain_steps_gradients():
    config = TrainConfig(epochs=1, min_steps=0, batch_size=32)
    memory = RehearsalMemory(50)
    memory.add_task("old", torch.ones(50, 3), torch.ones(50, dtype=torch.long), seed=0)
    layer = torch.nn.Linear(3, 2)
    batches = []

    def forward(xb):
        batches.append((int((xb[:, 0] == 0).sum()), int((xb[:, 0] == 1).sum())))  # (new, replayed)
        return layer(xb)

    new_x, new_y = torch.zeros(100, 3), torch.zeros(100, dtype=torch.long)
    trainer = Trainer(
        forward,
        list(layer.parameters()),
        new_x,
        new_y,
        config,
        replay_batch=memory.sampler(config.replay_batch_size, seed=0),
    )
    trainer.run()
    assert trainer.steps_per_epoch == 7 and len(batches) == 7  # 100 new samples, 16 a step
    assert batches[:6] == [(16, 16)] * 6 and batches[6] == (4, 16)
    plain = Trainer(layer, list(layer.parameters()), new_x, new_y, config)
    assert plain.steps_per_epoch == 4  # without a memory the whole batch is new


def test_ewc_replay_auto_takes_replay_lambda_once_the_memory_holds_samples_and_searches_before():
    first, second, third = _conflicting_tasks(3)
    validation = {key: task for key, task in zip(("a", "b", "c"), (first, second, third), strict=True)}
    config = TrainConfig(epochs=1, min_steps=0)
    learner = ContinualLearner.create(
        "mlp", (6,), architecture_options={"hidden": [8], "memory_size": 30}, ewc=EWCConfig(replay_lambda=7.0)
    )
    learner.learn_task("a", first, strategy="ewc", train_config=config, validation=validation)
    searched = learner.learn_task("b", second, strategy="ewc_replay", train_config=config, validation=validation)
    assert searched.lambda_search is not None  # nothing in the memory yet (an ewc update came first): searched
    fixed = learner.learn_task("c", third, strategy="ewc_replay", train_config=config, validation=validation)
    assert fixed.lambda_search is None and fixed.ewc_lambda == 7.0
