"""Rehearsal: replay stored samples of old tasks while learning a new one (experience replay).

``replay`` keeps a bounded, per-task-balanced memory of training samples (``memory_size`` in
all, the model's option; ``app.learning.memory``) and fills half of every training batch of
later updates with samples drawn from it (``TrainConfig.replay_batch_size``; the other half is
the new task's), as Mammoth's ``er`` does with its buffer batch: a step costs what a plain
step costs, and an epoch of the new task takes twice the steps.
``ewc_replay`` does both: the replayed batches and EWC's pull towards the old anchors (λ
searched on validation as for ``ewc`` until the memory holds samples, then
``EWCConfig.replay_lambda``). Both belong to the EWC family (the same network and
consolidation), so a model can switch between ``ewc`` and them from one update to the next;
every task they learn is consolidated (Fisher + anchor) as any of the family's updates, and
its samples join the memory, which travels with the consolidation payload of the version.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from app.learning.config import TrainConfig
from app.learning.strategies.base import Learner, StepHooks, register
from app.learning.strategies.ewc import EWC
from app.learning.strategies.finetune import Finetune


@register
class Replay(Finetune):
    """The task loss on a batch half new, half replayed old samples, every class weighing the same
    (``class_balanced_weights``); no penalty."""

    name = "replay"

    def check_applies(self, learner: Learner) -> None:
        super().check_applies(learner)
        if learner.memory.capacity == 0:
            raise ValueError(f"strategy {self.name} needs a rehearsal memory: this model's memory_size is 0")

    def step_hooks(self, learner: Learner, network: nn.Module, ewc_lambda: float, config: TrainConfig) -> StepHooks:
        hooks = super().step_hooks(learner, network, ewc_lambda, config)
        if not learner.memory.is_empty:
            hooks["replay_batch"] = learner.memory.sampler(config.replay_batch_size, config.seed)
        return hooks

    def consolidate(
        self,
        learner: Learner,
        task_key: str,
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> dict:
        """The family's consolidation (Fisher + anchor), then the task's share of the memory."""
        recipe = super().consolidate(learner, task_key, x, y, config, on_chunk)
        learner.memory.add_task(task_key, x, y, seed=config.seed)
        return recipe


@register
class EWCReplay(Replay):
    """Replay with EWC's penalty. λ as ``ewc`` resolves it, except that "auto" with a memory to replay
    takes ``EWCConfig.replay_lambda`` without a search: the replayed half of every batch already puts the
    old tasks' loss into every step, and a search would double the cost of an update that rehearsal
    otherwise keeps at a plain update's (docs/benchmarks/forgetting.md, "Small and crowded tasks, and rehearsal")."""

    name = "ewc_replay"
    uses_lambda = True

    def resolve_lambda(self, learner: Learner, requested: float | str | None) -> float | str:
        value = EWC.resolve_lambda(self, learner, requested)
        return learner.ewc.replay_lambda if value == "auto" and not learner.memory.is_empty else value
