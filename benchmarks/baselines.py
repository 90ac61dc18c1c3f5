"""Baselines the library's methods are measured against; the service offers none of them.

* ``Joint``: the multi-task upper bound (fresh weights trained on every task seen so far),
  a strategy of the EWC family that keeps every task's training data in memory.
* ``fisher_per_sample_loop``: the slow reference the learner's vmapped Fisher must equal.
* ``fisher_batch_mean_shortcut``: the common shortcut of squaring the gradient of a batch-mean
  loss, kept to measure its bias (the square of a mean is not the mean of squares).

Used by ``forgetting.py``, ``throughput.py`` and the tests of ``app.learning.fisher``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from app.learning.fisher import Fisher, eval_mode
from app.learning.strategies import Finetune


class Joint(Finetune):
    """Every update trains from fresh weights on every task seen so far (the upper bound).

    It keeps each task's training samples, so one instance serves one learner for all of its
    tasks; it is not registered by name, since a continual learner must not keep old data.
    """

    name = "joint"

    def __init__(self) -> None:
        self.memory: list[tuple[torch.Tensor, list]] = []  # (inputs, labels) of every task learnt

    def check_applies(self, learner) -> None:
        super().check_applies(learner)
        if len(self.memory) != len(learner.task_keys):
            raise ValueError(
                "joint training needs every earlier task's data in memory: learn all tasks "
                "of this learner with the same Joint instance (benchmarks only)"
            )

    def prepare(self, learner, task_key: str, task_labels: list) -> int:
        """Grow the vocabulary as any update does, then start from fresh weights: the bound must
        not depend on what earlier updates left."""
        added = super().prepare(learner, task_key, task_labels)
        learner.build_network(n_classes=len(learner.labels))
        return added

    def training_set(self, learner, task_key: str, x: torch.Tensor, labels: list) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = [x] + [old_x for old_x, _ in self.memory]
        targets = labels + [label for _, old_labels in self.memory for label in old_labels]
        self.memory.append((x, labels))
        return torch.cat(inputs), learner.targets(targets)


def fisher_per_sample_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, label_mode: str = "true"
) -> Fisher:
    """Reference estimator: one backward pass per sample (and class). Slow; for tests and benchmarks."""
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    with eval_mode(model):
        for i in range(len(x)):
            log_probs = F.log_softmax(model(x[i : i + 1]).float(), dim=-1)[0]
            classes = [int(y[i])] if label_mode == "empirical" else range(len(log_probs))
            for c in classes:
                weight = 1.0 if label_mode == "empirical" else float(log_probs[c].detach().exp())
                grads = torch.autograd.grad(log_probs[c], list(params.values()), retain_graph=True)
                for name, g in zip(params, grads, strict=True):
                    fisher[name] += weight * g.pow(2)
    return {name: f / len(x) for name, f in fisher.items()}


def fisher_batch_mean_shortcut(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 64) -> Fisher:
    """The biased shortcut (square of the batch-mean gradient), kept only to measure its bias."""
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    n_batches = 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            loss = F.cross_entropy(model(x[start : start + batch_size]).float(), y[start : start + batch_size])
            grads = torch.autograd.grad(loss, list(params.values()))
            for name, g in zip(params, grads, strict=True):
                fisher[name] += g.pow(2)
            n_batches += 1
    return {name: f / n_batches for name, f in fisher.items()}
