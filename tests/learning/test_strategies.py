"""The strategy registry: every strategy declares its family and the architectures it works with,
and a new method is one registered class that the learner runs through the same hooks."""

import numpy as np
import pytest
import torch

from app.learning import ContinualLearner, TaskData, TrainConfig, register, strategy_class, strategy_names
from app.learning.strategies import Finetune, base, family_names


def test_every_strategy_declares_its_family_and_default_architecture():
    assert strategy_names() == ("ewc", "finetune", "replay", "ewc_replay", "auto", "ccll")
    assert {name: strategy_class(name).family for name in strategy_names()} == {
        "ewc": "ewc",
        "finetune": "ewc",
        "replay": "ewc",
        "ewc_replay": "ewc",
        "auto": "ewc",
        "ccll": "ccll",
    }
    assert family_names() == ("ewc", "ccll")
    assert strategy_names("ewc") == ("ewc", "finetune", "replay", "ewc_replay", "auto")
    assert strategy_class("ewc").default_architecture() == "mlp"
    assert strategy_class("ccll").default_architecture() == "cnn"
    with pytest.raises(ValueError, match="unknown strategy 'joint'"):  # a benchmark baseline, not offered
        strategy_class("joint")


def test_ccll_needs_a_conv_architecture_wherever_it_is_asked():
    strategy_class("ccll").check_architecture("resnet18")
    with pytest.raises(ValueError, match="ccll needs architecture cnn or resnet18"):
        strategy_class("ccll").check_architecture("mlp")
    with pytest.raises(ValueError, match="cnn or resnet18"):
        ContinualLearner.create("mlp", (1, 8, 8), family="ccll")
    with pytest.raises(ValueError, match="unknown model family 'finetune'"):  # a strategy, not a family
        ContinualLearner.create("mlp", (4,), family="finetune")
    with pytest.raises(ValueError, match="alpha are ccll options"):
        ContinualLearner.create("cnn", (1, 8, 8), architecture_options={"alpha": 2})


def test_a_new_strategy_is_one_registered_class(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # registered for this test only

    @register
    class HeadOnly(Finetune):
        """Fine-tune the head alone: the body stays as the first task left it."""

        name = "head_only"

        def trainable_parameters(self, learner, network, task_key):
            return list(network.head.parameters())

    assert strategy_names("ewc") == ("ewc", "finetune", "replay", "ewc_replay", "auto", "head_only")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    learner = ContinualLearner.create("mlp", (4,), architecture_options={"hidden": [8]})
    learner.learn_task("a", TaskData(x, (x[:, 0] > 0).astype(int)), train_config=TrainConfig(epochs=1))
    body = {name: p.clone() for name, p in learner.network.body.named_parameters()}
    head = learner.network.head.weight.clone()
    result = learner.learn_task(
        "b", TaskData(x, (x[:, 1] > 0).astype(int)), strategy="head_only", train_config=TrainConfig(epochs=1)
    )
    assert result.strategy == "head_only" and result.ewc_lambda is None
    assert all(torch.equal(p, body[name]) for name, p in learner.network.body.named_parameters())
    assert not torch.equal(learner.network.head.weight, head)
    assert learner.consolidation.entries.keys() == {"a", "b"}  # the family's consolidation, inherited
