"""CCLL network (app/learning/calibration.py): shapes, growth, validation, and no forgetting at all."""

import numpy as np
import pytest
import torch
from torch import nn

from app.learning.calibration import CalibratedNetwork, ChannelCalibration, SpatialCalibration
from app.learning.models import build_model


def _base(architecture: str, input_shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(architecture, input_shape, n_classes=2)


def _digits(mnist, pair: tuple[int, int], n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n real MNIST images of two digits (from the ``mnist_5k`` fixture), labels 0/1 within the task."""
    x, y = mnist
    index = np.flatnonzero(np.isin(y, pair))[offset : offset + n]
    images = torch.from_numpy(x[index]).float() / 255.0
    return images, torch.from_numpy((y[index] == pair[1]).astype(np.int64))


def _train(net: CalibratedNetwork, task_key: str, parameters, x, y, steps: int = 6) -> None:
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    net.train()
    for step in range(steps):
        batch = slice(step * 16 % len(x), step * 16 % len(x) + 16)
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x[batch], task_key), y[batch]).backward()
        optimizer.step()


def _calibration_parameter_count(channels: list[int], alpha: int, beta: int) -> int:
    # SCM 3x3 group conv: C*alpha*9; CCM 1x1 group conv: C*beta; CCM BatchNorm: 2C.
    return sum(c * alpha * 9 + c * beta + 2 * c for c in channels)


@pytest.mark.parametrize("architecture", ["cnn", "resnet18"])
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 32, 32)])
def test_logits_have_each_tasks_own_classes(architecture, input_shape):
    net = CalibratedNetwork(_base(architecture, input_shape), alpha=1, beta=1)
    net.add_task("a", 2)
    net.add_task("b", 5)
    net.eval()
    x = torch.randn(3, *input_shape)
    assert net(x, "a").shape == (3, 2)
    assert net(x, "b").shape == (3, 5)
    assert net.features(x, "a").shape == (3, net.feature_dim)


@pytest.mark.parametrize("architecture", ["cnn", "resnet18"])
def test_old_task_logits_are_bit_identical_after_a_new_task_is_trained(architecture, mnist_5k):
    net = CalibratedNetwork(_base(architecture, (1, 28, 28)), alpha=2, beta=1)
    x_a, y_a = _digits(mnist_5k, (0, 1), 64)
    x_b, y_b = _digits(mnist_5k, (2, 3), 64)
    x_test, _ = _digits(mnist_5k, (0, 1), 32, offset=64)

    net.add_task("a", 2)
    _train(net, "a", [p for p in net.parameters() if p.requires_grad], x_a, y_a)  # base + task a
    net.refresh_statistics("a", x_a.split(16))
    net.freeze_base()
    net.eval()
    with torch.no_grad():
        logits_a = net(x_test, "a").clone()
    base_state = {k: v.clone() for k, v in net.blocks.state_dict().items()}
    calibration_b_start = [p.detach().clone() for p in net.calibrations["a"].parameters()]

    net.add_task("b", 2)
    _train(net, "b", net.task_parameters("b"), x_b, y_b)
    net.refresh_statistics("b", x_b.split(16))
    net.eval()
    with torch.no_grad():
        logits_a_after = net(x_test, "a")

    assert torch.equal(logits_a_after, logits_a)
    # The frozen base, BatchNorm running statistics included, did not move at all ...
    for key, value in net.blocks.state_dict().items():
        assert torch.equal(value, base_state[key]), key
    # ... while task b really learnt: its calibration left the copy it started from.
    moved = [
        not torch.equal(p, start)
        for p, start in zip(net.calibrations["b"].parameters(), calibration_b_start, strict=True)
    ]
    assert any(moved)


def test_frozen_base_stays_in_eval_mode_when_the_network_trains():
    net = CalibratedNetwork(_base("resnet18", (3, 32, 32)))
    net.add_task("a", 2)
    net.freeze_base()
    net.train()
    base_norms = [m for m in net.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
    assert base_norms and not any(m.training for m in base_norms)
    assert not any(p.requires_grad for p in net.blocks.parameters())
    assert net.calibrations["a"].training  # the task's own modules do train


def test_a_new_task_starts_from_the_previous_tasks_calibration_and_freezes_it(mnist_5k):
    net = CalibratedNetwork(_base("cnn", (1, 28, 28)), alpha=1, beta=1)
    net.add_task("a", 2)
    x, y = _digits(mnist_5k, (4, 5), 32)
    _train(net, "a", [p for p in net.parameters() if p.requires_grad], x, y, steps=2)
    net.add_task("b", 2)  # adding a second task freezes the base
    assert net.is_base_frozen
    net.eval()
    with torch.no_grad():
        assert torch.equal(net.features(x, "b"), net.features(x, "a"))
    assert all(p.requires_grad for p in net.task_parameters("b"))
    assert not any(p.requires_grad for p in net.task_parameters("a"))


@pytest.mark.parametrize("architecture", ["cnn", "resnet18"])
def test_parameters_added_per_task_are_calibrations_plus_a_classifier(architecture):
    net = CalibratedNetwork(_base(architecture, (3, 32, 32)), alpha=2, beta=1)
    added = net.add_task("a", 10)
    expected = _calibration_parameter_count(net.block_channels, 2, 1) + net.feature_dim * 10 + 10
    assert added == expected
    assert net.add_task("b", 10) == expected
    counts = net.parameter_counts()
    assert counts["per_task"] == {"a": expected, "b": expected}
    assert counts["base"] == sum(p.numel() for p in net.blocks.parameters())
    # The paper's point: a task costs a small fraction of the base.
    assert expected < 0.1 * counts["base"]


def test_capacity_grows_with_alpha():
    base_channels = CalibratedNetwork(_base("resnet18", (3, 32, 32))).block_channels
    small = CalibratedNetwork(_base("resnet18", (3, 32, 32)), alpha=1).add_task("a", 2)
    large = CalibratedNetwork(_base("resnet18", (3, 32, 32)), alpha=4).add_task("a", 2)
    assert large - small == 9 * 3 * sum(base_channels)


@pytest.mark.parametrize(
    ("alpha", "beta", "message"),
    [
        (3, 1, "alpha=3 does not divide"),
        (1, 7, "beta=7 does not divide"),
        (0, 1, "alpha must be a positive integer"),
        (1, 1.5, "beta must be a positive integer"),
    ],
)
def test_alpha_or_beta_that_do_not_fit_a_block_are_refused_clearly(alpha, beta, message):
    with pytest.raises(ValueError, match=message) as error:
        CalibratedNetwork(_base("cnn", (1, 28, 28)), alpha=alpha, beta=beta)
    if "divide" in message:
        assert "feature block" in str(error.value)


def test_group_modules_refuse_channels_that_do_not_split():
    with pytest.raises(ValueError, match="alpha=4 does not divide the 6 channels"):
        SpatialCalibration(6, alpha=4)
    with pytest.raises(ValueError, match="beta=5 does not divide the 6 channels"):
        ChannelCalibration(6, beta=5)


def test_bad_task_keys_and_unknown_tasks_are_refused():
    net = CalibratedNetwork(_base("cnn", (1, 28, 28)))
    net.add_task("a", 2)
    with pytest.raises(ValueError, match="already has"):
        net.add_task("a", 2)
    with pytest.raises(ValueError, match="without '.'"):
        net.add_task("a.b", 2)
    with pytest.raises(ValueError, match="n_classes"):
        net.add_task("c", 0)
    with pytest.raises(KeyError, match="unknown task 'z'"):
        net(torch.randn(1, 1, 28, 28), "z")


def test_spatial_calibration_starts_as_identity():
    activation = torch.randn(2, 8, 5, 5)
    assert torch.equal(SpatialCalibration(8, alpha=2)(activation), activation)


def test_a_training_batch_of_one_sample_works(mnist_5k):
    net = CalibratedNetwork(_base("cnn", (1, 28, 28)))
    net.add_task("a", 2)
    net.freeze_base()
    net.train()
    x, y = _digits(mnist_5k, (0, 1), 1)
    nn.functional.cross_entropy(net(x, "a"), y).backward()
    assert all(p.grad is not None for p in net.calibrations["a"].parameters())


def test_state_dict_rebuilds_an_identical_frozen_network(mnist_5k):
    net = CalibratedNetwork(_base("resnet18", (1, 28, 28)), alpha=2)
    x, y = _digits(mnist_5k, (6, 7), 32)
    net.add_task("a", 2)
    _train(net, "a", [p for p in net.parameters() if p.requires_grad], x, y, steps=2)
    net.add_task("b", 3)
    net.eval()

    copy = CalibratedNetwork(_base("resnet18", (1, 28, 28), seed=1), alpha=2)
    for key, n_classes in net.task_classes().items():
        copy.add_task(key, n_classes)
    copy.load_state_dict(net.state_dict())
    copy.train()
    assert copy.is_base_frozen and not any(m.training for m in copy.blocks.modules())
    copy.eval()
    with torch.no_grad():
        for key in ("a", "b"):
            assert torch.equal(copy(x, key), net(x, key))


def test_refreshed_statistics_are_the_exact_statistics_of_the_final_network(mnist_5k):
    net = CalibratedNetwork(_base("cnn", (1, 28, 28)), alpha=2)
    x, y = _digits(mnist_5k, (0, 1), 64)
    net.add_task("a", 2)
    _train(net, "a", [p for p in net.parameters() if p.requires_grad], x, y, steps=4)
    pooled = {}  # what each CCM's BatchNorm normalises, recorded from a training-mode pass
    norms = [m.norm for m in net.calibrations["a"].modules() if isinstance(m, ChannelCalibration)]
    hooks = [
        norm.register_forward_hook(lambda m, inputs, _: pooled.__setitem__(m, inputs[0].detach())) for norm in norms
    ]
    net.train()
    with torch.no_grad():
        net.features(x, "a")
    for hook in hooks:
        hook.remove()

    net.refresh_statistics("a", [x])
    for norm in norms:
        values = pooled[norm].flatten(1)
        torch.testing.assert_close(norm.running_mean, values.mean(0))
        torch.testing.assert_close(norm.running_var, values.var(0))
        assert norm.momentum == 0.1  # restored
    assert net.training


def test_refresh_touches_neither_older_tasks_nor_a_frozen_base(mnist_5k):
    net = CalibratedNetwork(_base("resnet18", (1, 28, 28)))
    x, _ = _digits(mnist_5k, (2, 3), 32)
    net.add_task("a", 2)
    net.add_task("b", 2)
    frozen = {k: v.clone() for k, v in net.blocks.state_dict().items()}
    task_a = {k: v.clone() for k, v in net.calibrations["a"].state_dict().items()}
    net.refresh_statistics("b", x.split(16))
    assert all(torch.equal(v, frozen[k]) for k, v in net.blocks.state_dict().items())
    assert all(torch.equal(v, task_a[k]) for k, v in net.calibrations["a"].state_dict().items())
    with pytest.raises(ValueError, match="only the newest task"):
        net.refresh_statistics("a", x.split(16))
    with pytest.raises(ValueError, match="two or more samples"):
        net.refresh_statistics("b", [x[:1]])


def test_a_trained_and_refreshed_task_classifies_held_out_digits(mnist_5k):
    net = CalibratedNetwork(_base("cnn", (1, 28, 28)))
    x, y = _digits(mnist_5k, (0, 1), 256)
    x_test, y_test = _digits(mnist_5k, (0, 1), 200, offset=256)
    net.add_task("a", 2)
    _train(net, "a", [p for p in net.parameters() if p.requires_grad], x, y, steps=16)
    net.refresh_statistics("a", x.split(64))
    net.eval()
    with torch.no_grad():
        accuracy = (net(x_test, "a").argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.9
