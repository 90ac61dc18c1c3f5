import sys
from pathlib import Path

import pytest
import torch

from app.learning.fisher import diagonal_fisher
from app.learning.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the reference estimators live there
from baselines import fisher_batch_mean_shortcut, fisher_per_sample_loop


@pytest.mark.parametrize("traced", [True, False], ids=["factored-linear", "vmap-only"])
@pytest.mark.parametrize("label_mode", ["true", "empirical"])
@pytest.mark.parametrize("architecture, shape", [("mlp", (12,)), ("cnn", (1, 8, 8))])
def test_vmapped_fisher_equals_the_per_sample_loop(label_mode, architecture, shape, traced):
    options = {"hidden": [10]} if architecture == "mlp" else {"channels": [4, 4]}
    model = build_model(architecture, shape, 4, **options)
    x, y = torch.randn(23, *shape), torch.randint(0, 4, (23,))
    fast = diagonal_fisher(
        model,
        x,
        y,
        label_mode=label_mode,
        chunk_size=5,  # chunks of uneven size
        traced=traced,
    )
    slow = fisher_per_sample_loop(model, x, y, label_mode=label_mode)
    assert fast.keys() == slow.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], atol=1e-5, rtol=1e-4)


def test_fisher_restores_training_mode_and_is_nonnegative():
    model = build_model("mlp", (12,), 3, hidden=[8]).train()
    fisher = diagonal_fisher(model, torch.randn(10, 12))
    assert model.training
    assert all((f >= 0).all() for f in fisher.values())


def test_batch_mean_shortcut_underestimates_the_fisher():
    model = build_model("mlp", (12,), 3, hidden=[8])
    x, y = torch.randn(256, 12), torch.randint(0, 3, (256,))
    exact = sum(f.sum() for f in diagonal_fisher(model, x, y, label_mode="empirical").values())
    shortcut = sum(f.sum() for f in fisher_batch_mean_shortcut(model, x, y, batch_size=64).values())
    assert shortcut < exact / 4


def test_empirical_fisher_needs_labels():
    model = build_model("mlp", (12,), 3)
    with pytest.raises(ValueError, match="labels"):
        diagonal_fisher(model, torch.randn(4, 12), label_mode="empirical")


class _SharedLayer(torch.nn.Module):
    """One Linear applied twice: its per-sample gradient is a sum of two outer products, which
    does not factor, so the estimator must take the vmap path for it (and the shortcut for the
    wide head, which holds most of the parameters)."""

    def __init__(self):
        super().__init__()
        self.shared = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 12)

    def forward(self, x):
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


def test_a_linear_layer_used_twice_still_gets_its_exact_per_sample_fisher():
    model = _SharedLayer()
    x = torch.randn(17, 6)
    fast = diagonal_fisher(model, x, chunk_size=8)
    slow = fisher_per_sample_loop(model, x)
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], atol=1e-5, rtol=1e-4)


class _ConvThenWideDense(torch.nn.Module):
    """A small conv block under a wide dense layer: the conv goes through vmap, the dense layers
    through the factored shortcut, in the same estimate."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.dense = torch.nn.Linear(2 * 6 * 6, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.dense(torch.relu(self.conv(x)).flatten(1))))


@pytest.mark.parametrize("label_mode", ["true", "empirical"])
def test_mixed_vmap_and_factored_layers_equal_the_per_sample_loop(label_mode):
    model = _ConvThenWideDense()
    x, y = torch.randn(19, 1, 6, 6), torch.randint(0, 4, (19,))
    fast = diagonal_fisher(model, x, y, label_mode=label_mode, chunk_size=7)
    slow = fisher_per_sample_loop(model, x, y, label_mode=label_mode)
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], atol=1e-5, rtol=1e-4)


def test_progress_is_reported_after_every_chunk():
    model = build_model("mlp", (12,), 3, hidden=[8])
    reports = []
    diagonal_fisher(
        model, torch.randn(25, 12), chunk_size=10, on_chunk=lambda done, total: reports.append((done, total))
    )
    assert reports == [(10, 25), (20, 25), (25, 25)]


@pytest.mark.parametrize("label_mode", ["true", "empirical"])
@pytest.mark.parametrize("trainable", ["all", "lora", "last:1", "head"])
def test_a_text_models_fisher_comes_from_one_batched_pass_and_equals_the_per_sample_loop(
    tiny_text_model, trainable, label_mode, monkeypatch
):
    """Linear layers on sequences, embeddings (a token twice in a text, padding) and layer norms: the
    traced estimate equals one backward pass per sample and class, and takes no per-sample loop."""
    from tiny_text_model import topic_task

    from app.learning import ContinualLearner
    from app.learning import fisher as fisher_module

    learner = ContinualLearner.from_text_directory(tiny_text_model, {"max_length": 32, "trainable": trainable})
    with torch.no_grad():  # LoRA starts with one factor of each adapter at zero, which zeroes the other's gradient
        for name, p in learner.network.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    texts, labels = topic_task(["sport", "business"], 8)
    texts[0] = "goal goal goal " + texts[0]  # one id at several positions: summed before it is squared
    x, y = learner.text_source.encode(texts + ["win"]), torch.tensor([i % 2 for i in range(len(texts) + 1)])
    slow = fisher_per_sample_loop(learner.network, x, y, label_mode=label_mode)

    def no_loop(*_args, **_kwargs):
        raise AssertionError("the per-sample loop ran")

    monkeypatch.setattr(fisher_module, "_add_fisher_by_loop", no_loop)
    fast = diagonal_fisher(learner.network, x, y, label_mode=label_mode, chunk_size=7)
    assert fast.keys() == slow.keys()
    if trainable == "lora":  # the token embeddings' adapter is traced too
        assert any("lora_embedding_A" in name for name in fast) and any("lora_embedding_B" in name for name in fast)
    scale = max(float(f.abs().max()) for f in slow.values())
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], atol=1e-6 * scale, rtol=1e-4)
