"""Measuring what a learner knows: accuracy and loss on a task, and the continual-learning metrics.

R[i][j] is the accuracy on task j after learning task i (rows: updates, columns: tasks);
entries for tasks not yet learnt (j > i) are ``None``.

* average accuracy after the last update: mean_j R[T-1][j]
* backward transfer BWT (Lopez-Paz & Ranzato 2017): mean over j < T-1 of R[T-1][j] - R[j][j];
  negative BWT is forgetting
* forgetting of task j (Chaudhry et al. 2018): max over earlier updates l < T-1 of R[l][j]
  minus R[T-1][j]; the metric averages it over j < T-1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    n: int


@torch.no_grad()
def evaluate_logits(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> Evaluation:
    """Accuracy and mean cross-entropy of ``logits_fn`` on (x, y), in batches."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    correct, loss_sum = 0, 0.0
    for start in range(0, len(x), batch_size):
        logits = logits_fn(x[start : start + batch_size]).float()
        target = y[start : start + batch_size]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(-1) == target).sum())
    return Evaluation(accuracy=correct / len(x), loss=loss_sum / len(x), n=len(x))


def accuracy_matrix_metrics(matrix: Sequence[Sequence[float | None]]) -> dict:
    """Average accuracy, BWT and forgetting of an accuracy matrix R (square, lower triangle filled).

    Returns ``{"average_accuracy", "bwt", "forgetting", "forgetting_per_task"}``; BWT and
    forgetting are ``None`` with fewer than two tasks.
    """
    n = len(matrix)
    if n == 0:
        return {"average_accuracy": None, "bwt": None, "forgetting": None, "forgetting_per_task": []}
    last = matrix[-1]
    learnt = [a for a in last[:n] if a is not None]
    average = sum(learnt) / len(learnt) if learnt else None
    if n < 2:
        return {"average_accuracy": average, "bwt": None, "forgetting": None, "forgetting_per_task": []}
    bwt_terms, forgetting = [], []
    for j in range(n - 1):
        final, learnt_at = last[j], matrix[j][j]
        if final is None or learnt_at is None:
            continue
        bwt_terms.append(final - learnt_at)
        earlier = [a for a in (matrix[i][j] for i in range(j, n - 1)) if a is not None]
        forgetting.append(max(earlier) - final)
    return {
        "average_accuracy": average,
        "bwt": sum(bwt_terms) / len(bwt_terms) if bwt_terms else None,
        "forgetting": sum(forgetting) / len(forgetting) if forgetting else None,
        "forgetting_per_task": forgetting,
    }
