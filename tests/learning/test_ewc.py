import pytest
import torch

from app.learning.ewc_penalty import Consolidation
from app.learning.models import build_model, grow_head


def _random_fisher(model):
    return {n: torch.rand_like(p) for n, p in model.named_parameters()}


def _anchor(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_penalty_is_zero_at_the_anchor():
    model = build_model("mlp", (6,), 3, hidden=[5])
    consolidation = Consolidation("separate")
    consolidation.consolidate("a", _random_fisher(model), _anchor(model))
    assert abs(consolidation.penalty(model, 10.0).item()) < 1e-4


@pytest.mark.parametrize("mode", ["separate", "online"])
def test_penalty_gradient_is_lambda_fisher_times_displacement(mode):
    model = build_model("mlp", (6,), 3, hidden=[5])
    consolidation = Consolidation(mode, gamma=0.7)
    fishers, anchors = [], []
    for key in ("a", "b"):
        fishers.append(_random_fisher(model))
        anchors.append(_anchor(model))
        consolidation.consolidate(key, fishers[-1], anchors[-1])
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    lam = 3.0
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    consolidation.penalty_gradient(model, lam)()
    autograd = torch.autograd.grad(consolidation.penalty(model, lam), list(model.parameters()))
    for (name, p), g in zip(model.named_parameters(), autograd, strict=True):
        if mode == "separate":
            expected = sum(lam * f[name] * (p.detach() - a[name]) for f, a in zip(fishers, anchors, strict=True))
        else:  # one pair: F = gamma * F_a + F_b, anchor = theta_b
            expected = lam * (0.7 * fishers[0][name] + fishers[1][name]) * (p.detach() - anchors[1][name])
        torch.testing.assert_close(p.grad, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g, expected, atol=1e-4, rtol=1e-3)


def test_online_update_follows_the_formula_and_keeps_constant_memory():
    model = build_model("mlp", (6,), 3, hidden=[5])
    consolidation = Consolidation("online", gamma=0.5)
    f1, f2 = _random_fisher(model), _random_fisher(model)
    consolidation.consolidate("a", f1, _anchor(model))
    size = consolidation.nbytes()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    consolidation.consolidate("b", f2, _anchor(model))
    entry = consolidation.entries["online"]
    assert list(consolidation.entries) == ["online"]
    assert consolidation.nbytes() == size
    torch.testing.assert_close(entry["fisher"]["head.weight"], 0.5 * f1["head.weight"] + f2["head.weight"])
    torch.testing.assert_close(entry["anchor"]["head.weight"], model.head.weight.detach())


def test_grown_head_gets_zero_fisher_for_new_rows():
    model = build_model("mlp", (6,), 3, hidden=[5])
    consolidation = Consolidation("separate")
    consolidation.consolidate("a", _random_fisher(model), _anchor(model))
    grow_head(model, 5)
    consolidation.match_shapes(model)
    fisher = consolidation.entries["a"]["fisher"]["head.weight"]
    assert fisher.shape == (5, 5) and torch.all(fisher[3:] == 0)


def test_tensors_round_trip():
    model = build_model("mlp", (6,), 3, hidden=[5])
    consolidation = Consolidation("separate")
    consolidation.consolidate("1", _random_fisher(model), _anchor(model))
    consolidation.consolidate("2", _random_fisher(model), _anchor(model))
    again = Consolidation.from_tensors(consolidation.tensors(), "separate", 1.0, ["1", "2"])
    assert float(again.penalty(model, 2.0)) == pytest.approx(float(consolidation.penalty(model, 2.0)))


def test_proximal_step_shrinks_towards_the_anchor_for_any_lambda():
    model = build_model("mlp", (6,), 3, hidden=[5])
    consolidation = Consolidation("separate")
    fisher = _random_fisher(model)
    anchor = _anchor(model)
    consolidation.consolidate("a", fisher, anchor)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    lr, lam = 0.1, 1e6  # a gradient step would explode at this lambda
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    consolidation.proximal_step(model, lam, lr)()
    for name, p in model.named_parameters():
        expected = (before[name] + lr * lam * fisher[name] * anchor[name]) / (1 + lr * lam * fisher[name])
        torch.testing.assert_close(p.detach(), expected)
        assert ((p - anchor[name]).abs() <= (before[name] - anchor[name]).abs() + 1e-6).all()
