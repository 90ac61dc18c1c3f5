import json

import numpy as np
import pytest
import torch

from app.learning import ContinualLearner, EWCConfig, TaskData, TrainConfig, TrainingStopped

FAST = TrainConfig(epochs=2, batch_size=64)


def _learner(**kwargs):
    return ContinualLearner.create("mlp", (1, 28, 28), input_scale=1 / 255, **kwargs)


def test_ewc_retains_the_first_task_better_than_fine_tuning(pmnist_tasks):
    (train0, val0, test0), (train1, val1, test1) = pmnist_tasks
    retained = {}
    for strategy in ("finetune", "ewc"):
        learner = _learner()
        learner.learn_task("0", train0, train_config=FAST)
        initial = learner.evaluate(test0).accuracy
        learner.learn_task("1", train1, strategy=strategy, ewc_lambda=1000.0, train_config=FAST)
        retained[strategy] = learner.evaluate(test0).accuracy / initial
        assert learner.evaluate(test1).accuracy > 0.5  # the new task is learnt either way
    assert retained["ewc"] > retained["finetune"] + 0.05, retained


def test_auto_lambda_records_candidates_recipe_and_validation(pmnist_tasks):
    (train0, val0, _), (train1, val1, _) = pmnist_tasks
    learner = _learner(ewc=EWCConfig(lambda_candidates=(1.0, 100.0)))
    learner.learn_task("0", train0, validation={"0": val0}, train_config=TrainConfig(epochs=1))
    val0_before = learner.evaluate(val0).accuracy
    result = learner.learn_task("1", train1, validation={"0": val0, "1": val1}, train_config=TrainConfig(epochs=1))
    assert result.ewc_lambda in (1.0, 100.0)
    # the winner is the candidate trained the full budget; the ranking itself is tested in test_budget.py
    assert max(result.lambda_search, key=lambda entry: entry["steps"])["lambda"] == result.ewc_lambda
    for entry in result.lambda_search:
        drop = val0_before - entry["per_task"]["0"]
        assert entry["worst_old_task_drop"] == drop
        assert entry["keeps_old_tasks"] == (drop <= learner.ewc.max_old_task_drop)
    assert result.fisher_recipe["label_mode"] == "true"
    cap = EWCConfig().fisher.max_samples  # the recipe says how many samples the Fisher really saw
    assert result.fisher_recipe["max_samples"] == cap
    assert result.fisher_recipe["n_samples"] == min(len(train1.y), cap)
    assert set(result.validation_before) == {"0"} and set(result.validation_after) == {"0", "1"}
    assert learner.updates[-1]["ewc_lambda"] == result.ewc_lambda


def test_string_labels_grow_the_vocabulary_and_task_aware_prediction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    learner = ContinualLearner.create("mlp", (4,), architecture_options={"hidden": [8]})
    learner.learn_task("a", TaskData(x, np.where(x[:, 0] > 0, "cat", "dog")), train_config=TrainConfig(epochs=1))
    learner.learn_task("b", TaskData(x, np.where(x[:, 1] > 0, "emu", "dog")), train_config=TrainConfig(epochs=1))
    assert learner.labels == ["cat", "dog", "emu"]
    assert all(p.label in ("cat", "dog") for p in learner.predict(x[:10], task_key="a"))
    top = learner.predict(x[:2], top_k=5)[0].top_k
    assert len(top) == 3 and sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)


def test_save_and_load_round_trip_is_exact(tmp_path, pmnist_tasks):
    (train0, _, test0), (train1, _, _) = pmnist_tasks
    learner = _learner()
    learner.learn_task("0", TaskData(train0.x[:300], train0.y[:300]), train_config=TrainConfig(epochs=1))
    learner.save(tmp_path)
    loaded = ContinualLearner.load(tmp_path)
    for (name, a), (_, b) in zip(
        learner.network.state_dict().items(), loaded.network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert loaded.consolidation.tensors().keys() == learner.consolidation.tensors().keys()
    for name, tensor in learner.consolidation.tensors().items():
        assert torch.equal(tensor, loaded.consolidation.tensors()[name])
    assert loaded.labels == learner.labels and loaded.input_scale == learner.input_scale
    # the loaded learner continues exactly as the original would
    config = TrainConfig(epochs=1)
    subset = TaskData(train1.x[:200], train1.y[:200])
    learner.learn_task("1", subset, ewc_lambda=10.0, train_config=config)
    loaded.learn_task("1", subset, ewc_lambda=10.0, train_config=config)
    assert torch.equal(learner.logits(learner._inputs(test0.x[:20])), loaded.logits(loaded._inputs(test0.x[:20])))


def test_exports_written_before_the_renames_still_load():
    """Stored versions say "strategy" for the family and "n_samples" for the Fisher's cap."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    learner = ContinualLearner.create("mlp", (4,), architecture_options={"hidden": [8]})
    learner.learn_task("a", TaskData(x, (x[:, 0] > 0).astype(int)), train_config=TrainConfig(epochs=1))
    tensors, metadata = learner.export_weights()
    meta = json.loads(metadata["retain"])
    meta["strategy"] = meta.pop("family")
    meta["ewc"]["fisher"]["n_samples"] = meta["ewc"]["fisher"].pop("max_samples")
    old = ContinualLearner.from_exports((tensors, {"retain": json.dumps(meta)}), learner.export_consolidation())
    assert old.family == "ewc" and old.ewc == learner.ewc
    assert torch.equal(old.logits(old._inputs(x)), learner.logits(learner._inputs(x)))


def test_serving_copy_without_consolidation_cannot_learn(tmp_path, pmnist_tasks):
    (train0, _, _), _ = pmnist_tasks
    learner = _learner()
    learner.learn_task("0", TaskData(train0.x[:100], train0.y[:100]), train_config=TrainConfig(epochs=1))
    learner.save(tmp_path)
    serving = ContinualLearner.load(tmp_path, with_consolidation=False)
    assert len(serving.predict(train0.x[:3])) == 3
    with pytest.raises(ValueError, match="consolidation"):
        serving.learn_task("1", TaskData(train0.x[:100], train0.y[:100]))


def test_progress_is_reported_and_the_stop_check_stops_training(pmnist_tasks):
    (train0, _, _), _ = pmnist_tasks
    reports = []
    learner = _learner()
    learner.learn_task(
        "0",
        TaskData(train0.x[:256], train0.y[:256]),
        progress=reports.append,
        train_config=TrainConfig(epochs=2, min_steps=0, batch_size=64),
    )
    train_reports = [r for r in reports if r.phase == "train"]
    assert len(train_reports) == 8  # one per batch: 256 / 64 * 2 epochs
    assert reports[-1].fraction == 1.0
    assert [r.fraction for r in reports] == sorted(r.fraction for r in reports)
    calls = []
    with pytest.raises(TrainingStopped):
        _learner().learn_task("0", train0, should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert len(calls) == 4


def test_bad_inputs_are_refused_with_clear_messages(pmnist_tasks):
    (train0, _, _), _ = pmnist_tasks
    learner = _learner()
    with pytest.raises(ValueError, match="shape"):
        learner.learn_task("0", TaskData(np.zeros((4, 10)), [0, 1, 0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        learner.learn_task("0", TaskData(np.full((2, 1, 28, 28), np.nan), [0, 1]))
    with pytest.raises(ValueError, match="not learnt any task"):
        learner.predict(train0.x[:1])
    with pytest.raises(ValueError, match="strategy"):
        learner.learn_task("0", train0, strategy="ccll")


def _digit_tasks(mnist, n_train: int = 96, n_test: int = 64) -> dict[str, tuple[TaskData, TaskData]]:
    """Three split-MNIST tasks (digits 0/1, 2/3, 4/5) of raw uint8 images: (train, test) each."""
    x, y = mnist
    tasks = {}
    for pair in ((0, 1), (2, 3), (4, 5)):
        index = np.flatnonzero(np.isin(y, pair))
        train, test = index[:n_train], index[n_train : n_train + n_test]
        tasks[f"{pair[0]}_{pair[1]}"] = (TaskData(x[train], y[train]), TaskData(x[test], y[test]))
    return tasks


def test_ccll_task_logits_are_bit_identical_after_learning_two_later_tasks(mnist_5k):
    tasks = _digit_tasks(mnist_5k)
    (first, (train0, test0)), *later = tasks.items()
    learner = ContinualLearner.create(
        "cnn", (1, 28, 28), family="ccll", input_scale=1 / 255, architecture_options={"channels": [8, 16], "alpha": 2}
    )
    config = TrainConfig(optimizer="adam", lr=1e-3, epochs=2, batch_size=32, device="cpu")
    learner.learn_task(first, train0, train_config=config)
    learner.network.eval()
    with torch.no_grad():
        logits = learner.logits(learner._inputs(test0.x), first).clone()
    predictions = learner.predict(test0.x, task_key=first, top_k=2)
    accuracy = learner.evaluate(test0, task_key=first).accuracy
    base = {name: t.clone() for name, t in learner.network.blocks.state_dict().items()}
    own = {name: t.clone() for name, t in learner.network.calibrations[first].state_dict().items()}

    for key, (train, _) in later:
        result = learner.learn_task(key, train, train_config=config)
        assert result.strategy == "ccll" and result.parameters_added > 0

    # the later tasks did train (their calibration moved away from the copy they started from) ...
    for key, _ in later:
        moved = [not torch.equal(t, own[name]) for name, t in learner.network.calibrations[key].state_dict().items()]
        assert any(moved), key
    # ... and task 0's function is exactly the same: base, its modules, its logits, predictions, accuracy
    assert all(torch.equal(t, base[name]) for name, t in learner.network.blocks.state_dict().items())
    learner.network.eval()
    with torch.no_grad():
        assert torch.equal(learner.logits(learner._inputs(test0.x), first), logits)
    assert learner.predict(test0.x, task_key=first, top_k=2) == predictions
    assert learner.evaluate(test0, task_key=first).accuracy == accuracy > 0.5
    assert learner.task_keys == list(tasks)


@pytest.mark.parametrize(
    "family, architecture", [("ewc", "mlp"), ("ccll", "cnn")], ids=["ewc-grows-its-head", "ccll-adds-a-classifier"]
)
def test_what_a_new_task_adds_is_drawn_alike_whatever_ran_before_in_the_process(mnist_5k, family, architecture):
    """A second task's new head rows (EWC) or new classifier (CCLL) come from the model's seed, not
    from torch's global generator: two learners whose processes drew differently end identical."""
    (first, (train0, _)), (second, (train1, _)), _ = _digit_tasks(mnist_5k).items()
    config = TrainConfig(optimizer="adam", lr=1e-3, epochs=1, batch_size=32, device="cpu")
    options = {"channels": [4, 8]} if architecture == "cnn" else {"hidden": [16]}
    learners = []
    for global_seed in (1, 2):
        learner = ContinualLearner.create(
            architecture, (1, 28, 28), family=family, input_scale=1 / 255, architecture_options=options
        )
        learner.learn_task(first, train0, train_config=config)
        torch.manual_seed(global_seed)  # a different history of the process before the second task
        learner.learn_task(second, train1, train_config=config)
        learners.append(learner.network.state_dict())
    assert learners[0].keys() == learners[1].keys()
    assert all(torch.equal(learners[0][name], learners[1][name]) for name in learners[0])
