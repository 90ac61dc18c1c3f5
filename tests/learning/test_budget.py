"""The training budget: a floor that grows for small tasks (``TrainConfig.min_steps``), then early
stopping on validation up to a cap; the λ search cannot trade an old task away for the new one, and an
update warns when every λ it tried lost an old task."""

import numpy as np
import torch

from app.learning import ContinualLearner, TaskData, TrainConfig
from app.learning.lambda_search import successive_halving
from app.learning.learner import capacity_warning
from app.learning.memory import ReplaySampler
from app.learning.training import Trainer, class_balanced_weights, train_with_early_stopping


def test_a_small_task_trains_at_least_min_steps_in_whole_epochs_and_a_large_one_its_epochs():
    config = TrainConfig(epochs=4, min_steps=320, batch_size=32)
    assert config.epochs_for(1295) == 8  # 41 steps an epoch: 8 epochs reach 320 steps
    assert config.epochs_for(3601) == 4  # 113 steps an epoch: 4 epochs already are 452
    assert TrainConfig(epochs=4, min_steps=0).epochs_for(100) == 4
    layer = torch.nn.Linear(2, 2)
    trainer = Trainer(layer, list(layer.parameters()), torch.zeros(100, 2), torch.zeros(100, dtype=torch.long), config)
    assert trainer.total_steps == 4 * 80 and trainer.epochs == 80


def test_a_replaying_update_has_its_own_floor():
    config = TrainConfig(epochs=4, min_steps=320, replay_min_steps=0, batch_size=64)
    # 32 new samples a step: 41 steps an epoch; the replay floor is just ``epochs``, not 8 epochs
    assert config.epochs_for(1295) == 16 and config.epochs_for(1295, replaying=True) == 4
    assert TrainConfig(epochs=4, replay_min_steps=320, batch_size=64).epochs_for(1295, replaying=True) == 8
    layer = torch.nn.Linear(2, 2)
    replay = ReplaySampler(torch.zeros(100, 2), torch.zeros(100, dtype=torch.long), batch_size=32, seed=0)
    trainer = Trainer(
        layer,
        list(layer.parameters()),
        torch.zeros(1295, 2),
        torch.zeros(1295, dtype=torch.long),
        config,
        replay_batch=replay,
    )
    assert (trainer.steps_per_epoch, trainer.epochs, trainer.max_epochs) == (41, 4, 8)


def test_rehearsal_weighs_every_class_of_a_batch_the_same():
    # one new class fills half of every batch; four old classes share the replayed half
    new, replayed = torch.full((50,), 4), torch.arange(4).repeat(25)
    weights = class_balanced_weights(new, replayed, new_share=0.5)
    assert torch.allclose(weights, torch.tensor([1.6, 1.6, 1.6, 1.6, 0.4]))
    share = torch.tensor([0.125, 0.125, 0.125, 0.125, 0.5])
    assert torch.allclose(share * weights, torch.full((5,), 0.2))  # each class: a fifth of the loss
    assert torch.isclose((share * weights).sum(), torch.tensor(1.0))  # an average batch keeps its scale
    # new and old classes as many and as frequent: the plain mean, unchanged
    assert torch.equal(class_balanced_weights(torch.tensor([2, 3]), torch.tensor([0, 1]), 0.5), torch.ones(4))


def test_the_search_ranks_a_candidate_that_drops_an_old_task_after_one_that_keeps_it():
    # λ=1 has the best mean but drops the old task by 0.10; λ=10 keeps it within the bound.
    quality = {1: {"old": 0.80, "new": 0.99}, 10: {"old": 0.89, "new": 0.85}, 100: {"old": 0.90, "new": 0.60}}
    start, advance = (lambda value: {"value": value}), (lambda candidate, n: None)

    def score(candidate):
        return quality[candidate["value"]]

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
    budget = first.train_config["budget"]  # 5 steps an epoch: a floor of 4 epochs, a cap of 8
    assert (budget["floor_epochs"], budget["max_epochs"]) == (4, 8) and first.capacity_warning is None
    assert 4 <= first.train_config["epochs_trained"] == budget["epochs_trained"] <= budget["epochs_run"] <= 8
    assert budget["steps_run"] == 5 * budget["epochs_run"]
    second = learner.learn_task("t1", tasks[1], validation=validation, train_config=config, ewc_lambda="auto")
    assert all({"worst_old_task_drop", "keeps_old_tasks"} <= set(entry) for entry in second.lambda_search)
    least = min(entry["worst_old_task_drop"] for entry in second.lambda_search)
    assert (second.capacity_warning is not None) == (least > learner.ewc.capacity_warning_drop)


def _scripted(scores: list[float], network: torch.nn.Module, seen: list[dict]):
    """A validation score that reads ``scores`` one epoch at a time and remembers the weights it scored."""

    def score(net) -> tuple[bool, float]:
        assert net is network
        seen.append({k: v.clone() for k, v in network.state_dict().items()})
        return True, scores[len(seen) - 1]

    return score


def _small_trainer(config: TrainConfig) -> tuple[torch.nn.Module, Trainer]:
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    network = torch.nn.Linear(4, 2)
    return network, Trainer(network, list(network.parameters()), x, y, config)


def test_early_stopping_keeps_the_best_validation_epoch_and_stops_after_patience():
    config = TrainConfig(epochs=2, min_steps=0, batch_size=16, patience=2, max_epochs_factor=4)  # floor 2, cap 8
    network, trainer = _small_trainer(config)
    seen: list[dict] = []
    # scored at epochs 2 (the floor), 3, 4, 5: epoch 3 is best, 4 and 5 bring nothing: stop after 5
    kept = train_with_early_stopping(trainer, network, _scripted([0.5, 0.7, 0.6, 0.7], network, seen), patience=2)
    assert kept == 3 and trainer.epochs == 5 and trainer.steps_done == 5 * 4
    assert all(torch.equal(network.state_dict()[k], seen[1][k]) for k in seen[1])  # epoch 3's weights restored
    assert not torch.equal(seen[1]["weight"], seen[3]["weight"])  # which differ from the last epoch's


def test_early_stopping_stops_at_the_cap_and_patience_zero_trains_the_floor_exactly():
    config = TrainConfig(epochs=2, min_steps=0, batch_size=16, patience=2, max_epochs_factor=2)  # floor 2, cap 4
    network, trainer = _small_trainer(config)
    seen: list[dict] = []
    kept = train_with_early_stopping(trainer, network, _scripted([0.1, 0.2, 0.3, 0.4, 0.5], network, seen), patience=2)
    assert kept == trainer.epochs == 4 and len(seen) == 3  # always improving: the cap ends it
    network, trainer = _small_trainer(TrainConfig(epochs=2, min_steps=0, batch_size=16, patience=0))
    assert trainer.max_epochs == 2
    assert train_with_early_stopping(trainer, network, lambda net: (True, 0.0), patience=0) == 2
    assert trainer.steps_done == 2 * 4


def test_without_validation_an_update_trains_the_floor():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4)).astype(np.float32)
    learner = ContinualLearner.create("mlp", (4,), architecture_options={"hidden": [8]})
    result = learner.learn_task(
        "t0", TaskData(x, (x[:, 0] > 0).astype(int)), train_config=TrainConfig(epochs=1, min_steps=20, batch_size=32)
    )
    assert result.train_config["budget"]["epochs_run"] == result.train_config["epochs_trained"] == 4


def test_progress_counts_the_epochs_early_stopping_adds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    learner = ContinualLearner.create("mlp", (4,), architecture_options={"hidden": [8]})
    reports = []
    result = learner.learn_task(
        "t0",
        TaskData(x[:160], y[:160]),
        validation={"t0": TaskData(x[160:], y[160:])},
        train_config=TrainConfig(epochs=2, min_steps=0, batch_size=32, patience=2),
        progress=reports.append,
    )
    train = [r for r in reports if r.phase == "train"]
    assert len(train) == 5 * result.train_config["budget"]["epochs_run"]  # 5 steps an epoch, floor and above
    assert all(r.epoch <= r.epochs for r in train) and train[-1].epochs == result.train_config["budget"]["epochs_run"]
