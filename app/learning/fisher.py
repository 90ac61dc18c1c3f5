"""Diagonal Fisher information from per-sample gradients.

    F_i = E_x E_{y ~ p(y|x)} [ (d log p(y|x) / d theta_i)^2 ]

is estimated as the mean, over samples, of *squared per-sample* gradients. Per-sample
gradients come from ``torch.func``: ``vmap(grad(log p))`` over a chunk of samples, so the
cost is a few batched backward passes while memory stays bounded by the chunk size.
Fully connected layers skip the per-sample gradients altogether: their squares factor into
squared output gradients times squared inputs, summed over samples by one matrix product
(exact, same result; see ``diagonal_fisher``).

Label modes (named for what they are):
* ``true``: the expectation over y under the model's own predictive distribution, exact
  over classes: sum_c p(c|x) g_c(x)^2 (one vmapped pass per class).
* ``empirical``: y is the given label: g_y(x)^2.

Two other estimators it is measured against live in ``benchmarks/baselines.py``: a per-sample
Python loop (the slow reference this one must equal) and the common shortcut of squaring the
gradient of a *batch-mean* loss, which is biased (the square of a mean is not the mean of
squares: it underestimates F by about the batch size).

The model is evaluated in eval mode (dropout off, BatchNorm on running statistics) and
restored to its former mode afterwards.

Across N processes (``app.learning.distributed``) each rank takes a disjoint shard of the
samples and sums its squared scores; one all_reduce of the sums and the sample count makes the
mean over every sample: the single-process Fisher on the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from app.learning import distributed

Fisher = dict[str, torch.Tensor]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off, BatchNorm on running statistics) inside, the former mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _factorable_linears(model: nn.Module, params: dict[str, torch.Tensor], probe: torch.Tensor) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose per-sample squared gradients factor (see ``diagonal_fisher``):
    trainable weight, applied exactly once per forward, to a (batch, features) input."""
    calls: dict[str, list[int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and f"{name}.weight" in params:

            def record(_module, inputs, _output, name=name):
                calls.setdefault(name, []).append(inputs[0].dim())

            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for hook in hooks:
            hook.remove()
    modules = dict(model.named_modules())
    return {name: modules[name] for name, dims in calls.items() if dims == [2]}


def diagonal_fisher(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    label_mode: str = "true",
    chunk_size: int = 128,
    factor_linear: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Fisher:
    """Mean squared per-sample score of every trainable parameter, keyed by parameter name.

    Fully connected layers take an exact shortcut (Goodfellow 2015): sample b's gradient of
    ``nn.Linear`` weights is the outer product of the output gradient delta_b and the input
    a_b, so its square is delta_b^2 (x) a_b^2 and the sum over samples is one matrix product,
    sum_b w_b delta_b^2 a_b^2^T, with no per-sample gradient in memory. The deltas come from
    one batched backward pass per class (samples are independent in eval mode). Every other
    parameter (convolutions, calibration modules) takes the general path, ``vmap(grad)``. The
    shortcut costs a pass of its own, so it is taken only when fully connected layers hold at
    least half of the trainable parameters (an MLP, a CNN with a wide dense block), not for a
    small head. ``factor_linear=False`` sends everything through vmap (benchmarks compare them).
    ``on_chunk(done, total)`` is called after every chunk (progress of a long estimate).
    """
    if label_mode not in ("true", "empirical"):
        raise ValueError(f"label_mode must be 'true' or 'empirical', got {label_mode!r}")
    if label_mode == "empirical" and y is None:
        raise ValueError("the empirical Fisher needs the labels y")
    if len(x) == 0:
        raise ValueError("the Fisher needs at least one sample")
    probe = x[:1]  # a rank's shard may be empty (fewer samples than ranks); the probe never is
    x, *rest = distributed.shard(x, *([] if y is None else [y]))  # the identity in a single process
    y = rest[0] if rest else None
    empirical_labels = y if label_mode == "empirical" else None  # None: every class, by the model's probability
    params = _trainable(model)
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    with eval_mode(model):
        linears = _factorable_linears(model, params, probe) if factor_linear else {}
        factored = {f"{name}.{kind}" for name in linears for kind in ("weight", "bias") if f"{name}.{kind}" in params}
        if 2 * sum(params[name].numel() for name in factored) < sum(p.numel() for p in params.values()):
            linears, factored = {}, set()  # a small head: its vmapped gradients cost less than one more pass
        vmapped = {name: p for name, p in params.items() if name not in factored}
        constant = {name: p for name, p in params.items() if name in factored}

        def log_prob(p, sample, label):
            logits = functional_call(model, ({**constant, **p}, buffers), (sample.unsqueeze(0),))
            return F.log_softmax(logits.float(), dim=-1)[0].gather(0, label.unsqueeze(0)).squeeze(0)

        per_sample_grad = vmap(grad(log_prob), in_dims=(None, 0, 0))
        for start in range(0, len(x), chunk_size):
            xb = x[start : start + chunk_size]
            if linears:  # one forward serves the class probabilities and the factored layers
                traced = _LinearTrace(model, linears, xb)
                logits = traced.logits.detach()
            else:
                with torch.no_grad():
                    logits = model(xb).float()
            if empirical_labels is not None:
                classes = [(empirical_labels[start : start + chunk_size], torch.ones(len(xb), device=x.device))]
            else:
                probs = F.softmax(logits, dim=-1)
                classes = [
                    (torch.full((len(xb),), c, dtype=torch.long, device=x.device), probs[:, c])
                    for c in range(probs.shape[1])
                ]
            if vmapped:
                for labels, weight in classes:
                    for name, g in per_sample_grad(vmapped, xb, labels).items():
                        fisher[name] += torch.einsum("b,b...->...", weight, g.pow(2))
            if linears:
                traced.add_fisher(classes, fisher)
            if on_chunk is not None:
                on_chunk(min(start + chunk_size, len(x)), len(x))
    fisher, n_samples = distributed.all_reduce_sums(fisher, len(x))
    return {name: f / n_samples for name, f in fisher.items()}


class _LinearTrace:
    """One forward pass of a chunk with the inputs and outputs of the factored linear layers
    recorded, from which ``add_fisher`` accumulates their exact squared per-sample gradients."""

    def __init__(self, model: nn.Module, linears: dict[str, nn.Linear], xb: torch.Tensor):
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        hooks = [
            module.register_forward_hook(
                lambda _m, inputs, output, name=name: seen.__setitem__(name, (inputs[0], output))
            )
            for name, module in linears.items()
        ]
        try:
            with torch.enable_grad():
                self.logits = model(xb).float()
                self.log_probs = F.log_softmax(self.logits, dim=-1)
        finally:
            for hook in hooks:
                hook.remove()
        self.names = list(linears)
        self.outputs = [seen[name][1] for name in self.names]
        self.squared_inputs = [seen[name][0].detach().float().pow(2) for name in self.names]

    def add_fisher(self, classes: list[tuple[torch.Tensor, torch.Tensor]], fisher: Fisher) -> None:
        """fisher[W] += sum_b w_b delta_b^2 a_b^2^T and fisher[bias] += sum_b w_b delta_b^2, per label set."""
        for index, (labels, weight) in enumerate(classes):
            chosen = self.log_probs.gather(1, labels.unsqueeze(1)).sum()
            deltas = torch.autograd.grad(chosen, self.outputs, retain_graph=index < len(classes) - 1)
            for name, delta, a2 in zip(self.names, deltas, self.squared_inputs, strict=True):
                d2 = delta.float().pow(2) * weight.unsqueeze(1)
                fisher[f"{name}.weight"] += (d2.T @ a2).to(fisher[f"{name}.weight"].dtype)
                if f"{name}.bias" in fisher:
                    fisher[f"{name}.bias"] += d2.sum(0).to(fisher[f"{name}.bias"].dtype)
