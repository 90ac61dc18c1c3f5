"""``auto``: the default strategy, which chooses per update between ``ewc`` and ``ewc_replay``.

EWC keeps old tasks when a new task asks the same outputs something new (domain-incremental:
the same labels, other inputs), but it cannot add classes without erasing old ones: the new
task's loss pushes every old label's logit down and nothing in the loss defends them (van de
Ven et al. 2022, and this repository's split MNIST results in docs/safeguards.md). So:

* a task whose labels are all known to the model is learnt with ``ewc``, exactly as ``ewc``
  learns it (the same λ search, the same steps);
* a task that brings labels the model has never seen is learnt with ``ewc_replay``: half of
  every batch replayed from the rehearsal memory, and EWC's pull (``EWCConfig.replay_lambda``
  when λ is "auto", as ``ewc_replay`` does), for at least a plain update's ``min_steps``
  (``train_config``; epochs the user gave are kept exactly, as for every strategy).

Either way the task's samples join the rehearsal memory (bounded by the model's
``memory_size``, as for ``replay``), from the first task on, so the memory is there on the day
new classes arrive. One class rather than a choice made by the service: the rule reads only the
learner (its vocabulary and memory), so the library, the benchmarks and the service choose
alike, and the update's record says which it chose and why (``choice``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from app.learning.config import TrainConfig
from app.learning.strategies.base import Learner, StepHooks, Strategy, register
from app.learning.strategies.ewc import EWC
from app.learning.strategies.replay import EWCReplay, Replay


@register
class Auto(EWCReplay):
    """``ewc`` for tasks of known labels, ``ewc_replay`` for tasks that bring new ones; memory always filled."""

    name = "auto"
    uses_lambda = True

    def __init__(self, replaying: bool = False, choice: dict | None = None):
        self.replaying, self.choice = replaying, choice

    def check_applies(self, learner: Learner) -> None:
        EWC.check_applies(self, learner)  # a memory of size 0 is allowed: then it is ewc throughout

    def for_task(self, learner: Learner, task_labels: list) -> Strategy:
        new = [label for label in task_labels if label not in learner.labels]
        memory = learner.memory
        if not learner.task_keys:
            chosen, reason = "ewc", "the model's first task: nothing to protect yet"
        elif not new:
            chosen, reason = "ewc", "every label of the task is known to the model: EWC keeps the old tasks"
        elif memory.is_empty:
            chosen, reason = (
                "ewc",
                f"the task brings labels {new[:10]} the model has not seen, but its rehearsal memory is empty "
                f"(memory_size {memory.capacity}): without rehearsal old classes may be forgotten",
            )
        else:
            chosen, reason = (
                "ewc_replay",
                f"the task brings labels {new[:10]} the model has not seen: EWC alone cannot add classes "
                f"without erasing old ones, so {len(memory)} stored samples of earlier tasks are rehearsed",
            )
        return Auto(replaying=chosen == "ewc_replay", choice={"strategy": chosen, "reason": reason})

    def train_config(self, config: TrainConfig) -> TrainConfig:
        """A task that brings new classes gets a plain update's floor (``min_steps``), not the shorter
        ``replay_min_steps`` that suits rehearsal on tasks of known labels: its new classes must be told
        apart from every old one, which the old tasks' training never asked."""
        if self.replaying and config.replay_min_steps < config.min_steps:
            return replace(config, replay_min_steps=config.min_steps)
        return config

    def resolve_lambda(self, learner: Learner, requested: float | str | None) -> float | str:
        if self.replaying:
            return super().resolve_lambda(learner, requested)
        return EWC.resolve_lambda(self, learner, requested)

    def step_hooks(self, learner: Learner, network: nn.Module, ewc_lambda: float, config: TrainConfig) -> StepHooks:
        if self.replaying:
            return super().step_hooks(learner, network, ewc_lambda, config)
        return EWC.step_hooks(self, learner, network, ewc_lambda, config)

    def consolidate(
        self,
        learner: Learner,
        task_key: str,
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> dict:
        """The family's consolidation; then the task's share of the memory, when the model keeps one."""
        if learner.memory.capacity == 0:
            return EWC.consolidate(self, learner, task_key, x, y, config, on_chunk)
        return Replay.consolidate(self, learner, task_key, x, y, config, on_chunk)
