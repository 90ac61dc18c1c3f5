"""Choosing λ per update by successive halving on validation data.

The same λ means different things for different models, Fisher recipes and task pairs, so
users should not have to guess it. Each candidate starts from the same weights; all are
trained for a short share of the steps, the better half (by mean validation accuracy over
every learnt task, among those that keep every old task) continues, and so on until one
candidate has trained the full budget. Its weights *are* the update (no retraining), so the
whole search costs

    n * T/2^(R-1) + ... + 1 * T/2  ≈  2 T   for 4-5 candidates (T = one plain update's steps),

within the 3x budget the service allows. Test data is never seen here.

The score cannot trade an old task away for the new one: a candidate that drops any old
task's validation accuracy by more than ``max_drop`` below its accuracy before the update is
ranked after every candidate that does not, whatever its mean (a constrained mean). When no
candidate keeps within the bound, the one that drops least wins; the learner then warns that
the model may lack the capacity for its tasks (``capacity_warning``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Candidate = TypeVar("Candidate")


@dataclass
class SearchEntry(Generic[Candidate]):
    value: float
    state: Candidate
    steps: int = 0
    score: float | None = None
    per_task: dict[str, float] = field(default_factory=dict)
    worst_drop: float = 0.0  # the largest fall of an old task's validation accuracy at the last score

    def keeps_old_tasks(self, max_drop: float) -> bool:
        return self.worst_drop <= max_drop


def worst_drop(before: dict[str, float], after: dict[str, float]) -> float:
    """The largest fall of an old task's accuracy from ``before`` to ``after`` (0 with none to fall)."""
    return max([before[key] - after[key] for key in before if key in after], default=0.0)


def constrained_score(per_task: dict[str, float], before: dict[str, float], max_drop: float) -> tuple[bool, float]:
    """The constrained mean, as a sortable pair (higher is better): whether every old task kept within
    ``max_drop`` of ``before``, then the mean validation accuracy if so, else minus the worst drop."""
    drop = worst_drop(before, per_task)
    if drop <= max_drop:
        return True, sum(per_task.values()) / max(1, len(per_task))
    return False, -drop


def successive_halving(
    values: Sequence[float],
    start: Callable[[float], Candidate],
    advance: Callable[[Candidate, int], None],
    score: Callable[[Candidate], dict[str, float]],
    total_steps: int,
    before: dict[str, float] | None = None,
    max_drop: float = 1.0,
) -> tuple[SearchEntry, list[SearchEntry]]:
    """Return the winner (trained ``total_steps``) and every candidate's last validation scores.

    ``start(λ)`` makes a candidate, ``advance(c, n)`` trains it n more steps, ``score(c)``
    returns each learnt task's validation accuracy; ``before`` is each old task's validation
    accuracy before the update, and ``max_drop`` the fall from it that ranks a candidate last.
    """
    before = before or {}

    def rank(entry: SearchEntry) -> tuple[bool, float]:
        return constrained_score(entry.per_task, before, max_drop)

    if not values:
        raise ValueError("the lambda search needs at least one candidate")
    entries = [SearchEntry(value=v, state=start(v)) for v in values]
    rounds = math.ceil(math.log2(len(entries))) + 1 if len(entries) > 1 else 1
    alive = entries
    for r in range(rounds):
        target = max(1, total_steps // 2 ** (rounds - 1 - r)) if r < rounds - 1 else total_steps
        for entry in alive:
            advance(entry.state, target - entry.steps)
            entry.steps = target
            entry.per_task = score(entry.state)
            entry.score = sum(entry.per_task.values()) / max(1, len(entry.per_task))
            entry.worst_drop = worst_drop(before, entry.per_task)
        if r < rounds - 1:
            alive = sorted(alive, key=rank, reverse=True)[: math.ceil(len(alive) / 2)]
    winner = max(alive, key=rank)
    return winner, entries


def search_cost(n_candidates: int) -> float:
    """Training cost of a search relative to one plain update (for reports and tests)."""
    rounds = math.ceil(math.log2(n_candidates)) + 1 if n_candidates > 1 else 1
    alive, done, cost = n_candidates, 0.0, 0.0
    for r in range(rounds):
        target = 1 / 2 ** (rounds - 1 - r)
        cost += alive * (target - done)
        done = target
        alive = math.ceil(alive / 2)
    return cost
