"""The learner's input scaling and its safeguards: standardization fixed on the first task and saved
with the weights, constant features left alone, divergence stopped with the reason, and the auto
strategy's choice by the task's labels."""

import numpy as np
import pytest
import torch

from app.learning import ContinualLearner, InputScaling, TaskData, TrainConfig, TrainingDiverged

EXACT = {"min_steps": 0, "replay_min_steps": 0, "patience": 0}


def blobs(n: int, labels=(0, 1), scale: float = 100.0, offset: float = 500.0, seed: int = 0) -> TaskData:
    """Separable classes in raw units (hundreds), a constant third feature."""
    rng = np.random.default_rng(seed)
    y = rng.choice(labels, n)
    x = rng.normal(0, 1, (n, 3)) * scale + offset
    x[:, 0] += (np.asarray(y) - np.mean(labels)) * 2 * scale
    x[:, 2] = 7.0
    return TaskData(x.astype(np.float32), y)


def test_the_first_tasks_statistics_standardize_every_later_input_and_travel_with_the_weights():
    learner = ContinualLearner.create("mlp", (3,), architecture_options={"hidden": [8], "standardize": True})
    first = blobs(200)
    learner.learn_task("a", first, train_config=TrainConfig(epochs=2, **EXACT))
    scaling = learner.input_scaling
    raw = torch.as_tensor(first.x)
    assert torch.allclose(scaling.mean[:2], raw[:, :2].mean(0), rtol=1e-4)
    assert scaling.mean[2] == 0 and scaling.std[2] == 1  # constant: left as it is
    inputs = learner._inputs(first.x)
    assert inputs[:, :2].mean(0).abs().max() < 1e-3 and (inputs[:, :2].std(0, unbiased=False) - 1).abs().max() < 1e-3

    learner.learn_task("b", blobs(200, labels=(2, 3), offset=5000, seed=1), train_config=TrainConfig(epochs=1, **EXACT))
    assert torch.equal(learner.input_scaling.mean, scaling.mean)  # later tasks keep the first task's

    loaded = ContinualLearner.from_exports(learner.export_weights())
    assert torch.equal(loaded.input_scaling.mean, scaling.mean) and torch.equal(loaded.input_scaling.std, scaling.std)
    assert [p.label for p in loaded.predict(first.x[:20])] == [p.label for p in learner.predict(first.x[:20])]


def test_standardization_is_off_in_the_library_and_for_uint8_images():
    plain = ContinualLearner.create("mlp", (3,), architecture_options={"hidden": [8]})
    plain.learn_task("a", blobs(100), train_config=TrainConfig(epochs=1, lr=1e-6, **EXACT))
    assert not plain.input_scaling.standardized

    images = TaskData(np.random.default_rng(0).integers(0, 255, (40, 1, 4, 4), dtype=np.uint8), [0, 1] * 20)
    scaled = ContinualLearner.create("mlp", (1, 4, 4), architecture_options={"standardize": True}, input_scale=1 / 255)
    scaled.learn_task("a", images, train_config=TrainConfig(epochs=1, **EXACT))
    assert not scaled.input_scaling.standardized and scaled.input_scale == pytest.approx(1 / 255)

    with pytest.raises(ValueError, match="standardize must be true or false"):
        ContinualLearner.create("mlp", (3,), architecture_options={"standardize": "yes"})


def test_float_images_are_standardized_per_channel():
    scaling = InputScaling(standardize=True)
    x = torch.rand(50, 2, 4, 4) * torch.tensor([1.0, 300.0]).view(1, 2, 1, 1)
    scaling.fit(x.numpy(), x)
    assert scaling.mean.shape == (2, 1, 1)
    out = scaling(x)
    assert out.transpose(0, 1).reshape(2, -1).std(1, unbiased=False).sub(1).abs().max() < 1e-4


def test_training_that_diverges_stops_with_the_reason():
    learner = ContinualLearner.create("mlp", (3,), architecture_options={"hidden": [8]})  # raw, in the 1e16s
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch \d+ \(loss (nan|inf)\); lower `lr`"):
        learner.learn_task("a", blobs(200, scale=1e15, offset=1e16), train_config=TrainConfig(epochs=3, **EXACT))


def test_auto_replays_only_for_tasks_that_bring_new_labels():
    learner = ContinualLearner.create("mlp", (3,), architecture_options={"hidden": [8], "standardize": True})
    config = TrainConfig(epochs=1, **EXACT)
    chosen = []
    for key, task in (("a", blobs(80)), ("b", blobs(80, seed=1)), ("c", blobs(80, labels=(2, 3), seed=2))):
        result = learner.learn_task(key, task, strategy="auto", train_config=config)
        chosen.append(result.strategy_choice["strategy"])
        assert result.strategy == "auto"
    assert chosen == ["ewc", "ewc", "ewc_replay"]
    assert list(learner.memory.tasks) == ["a", "b", "c"]  # filled from the first task on
    assert result.replay_memory["samples"] == len(learner.memory) > 0 and result.replay_memory["bytes"] > 0
