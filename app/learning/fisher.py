"""Diagonal Fisher information from per-sample gradients.

    F_i = E_x E_{y ~ p(y|x)} [ (d log p(y|x) / d theta_i)^2 ]

is estimated as the mean, over samples, of *squared per-sample* gradients. Per-sample
gradients come from ``torch.func``: ``vmap(grad(log p))`` over a chunk of samples, so the
cost is a few batched backward passes while memory stays bounded by the chunk size.

Label modes (named for what they are):
* ``true``: the expectation over y under the model's own predictive distribution, exact
  over classes: sum_c p(c|x) g_c(x)^2 (one vmapped pass per class).
* ``empirical``: y is the given label: g_y(x)^2.

Two other estimators are kept for comparison only (tests and ``benchmarks/throughput.py``):
a per-sample Python loop (the slow reference the vmapped one must equal) and the common
shortcut of squaring the gradient of a *batch-mean* loss, which is biased: the square of a
mean is not the mean of squares, and it underestimates F by about the batch size.

The model is evaluated in eval mode (dropout off, BatchNorm on running statistics) and
restored to its former mode afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

Fisher = dict[str, torch.Tensor]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def diagonal_fisher(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    label_mode: str = "true",
    chunk_size: int = 128,
) -> Fisher:
    """Mean squared per-sample score of every trainable parameter, keyed by parameter name."""
    if label_mode not in ("true", "empirical"):
        raise ValueError(f"label_mode must be 'true' or 'empirical', got {label_mode!r}")
    if label_mode == "empirical" and y is None:
        raise ValueError("the empirical Fisher needs the labels y")
    if len(x) == 0:
        raise ValueError("the Fisher needs at least one sample")
    params = _trainable(model)
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def log_prob(p, sample, label):
        logits = functional_call(model, (p, buffers), (sample.unsqueeze(0),))
        return F.log_softmax(logits.float(), dim=-1)[0].gather(0, label.unsqueeze(0)).squeeze(0)

    per_sample_grad = vmap(grad(log_prob), in_dims=(None, 0, 0))
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    with _eval_mode(model):
        for start in range(0, len(x), chunk_size):
            xb = x[start : start + chunk_size]
            if label_mode == "empirical":
                grads = per_sample_grad(params, xb, y[start : start + chunk_size])
                for name, g in grads.items():
                    fisher[name] += g.pow(2).sum(0)
                continue
            with torch.no_grad():
                probs = F.softmax(model(xb).float(), dim=-1)
            for c in range(probs.shape[1]):
                labels = torch.full((len(xb),), c, dtype=torch.long, device=xb.device)
                grads = per_sample_grad(params, xb, labels)
                weight = probs[:, c]
                for name, g in grads.items():
                    fisher[name] += torch.einsum("b,b...->...", weight, g.pow(2))
    return {name: f / len(x) for name, f in fisher.items()}


def fisher_per_sample_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, label_mode: str = "true") -> Fisher:
    """Reference estimator: one backward pass per sample (and class). Slow; for tests and benchmarks."""
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    with _eval_mode(model):
        for i in range(len(x)):
            log_probs = F.log_softmax(model(x[i : i + 1]).float(), dim=-1)[0]
            classes = [int(y[i])] if label_mode == "empirical" else range(len(log_probs))
            for c in classes:
                weight = 1.0 if label_mode == "empirical" else float(log_probs[c].detach().exp())
                grads = torch.autograd.grad(log_probs[c], list(params.values()), retain_graph=True)
                for name, g in zip(params, grads):
                    fisher[name] += weight * g.pow(2)
    return {name: f / len(x) for name, f in fisher.items()}


def fisher_batch_mean_shortcut(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 64) -> Fisher:
    """The biased shortcut (square of the batch-mean gradient), kept only to measure its bias."""
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    n_batches = 0
    with _eval_mode(model):
        for start in range(0, len(x), batch_size):
            loss = F.cross_entropy(model(x[start : start + batch_size]).float(), y[start : start + batch_size])
            grads = torch.autograd.grad(loss, list(params.values()))
            for name, g in zip(params, grads):
                fisher[name] += g.pow(2)
            n_batches += 1
    return {name: f / n_batches for name, f in fisher.items()}
