"""Rehearsal: replay stored samples of old tasks while learning a new one (experience replay).

``replay`` keeps a bounded, per-task-balanced memory of training samples (``memory_size`` in
all, the model's option; ``app.learning.memory``) and appends a batch drawn from it to every
training batch of later updates, as Mammoth's ``er`` and Avalanche's ``ReplayPlugin`` do.
``ewc_replay`` does both: the replayed batches and EWC's pull towards the old anchors (λ
searched on validation as for ``ewc``). Both belong to the EWC family (the same network and
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
    """The task loss on the new batch plus a replayed batch of old samples; no penalty."""

    name = "replay"

    def check_applies(self, learner: Learner) -> None:
        super().check_applies(learner)
        if learner.memory.capacity == 0:
            raise ValueError(f"strategy {self.name} needs a rehearsal memory: this model's memory_size is 0")

    def step_hooks(self, learner: Learner, network: nn.Module, ewc_lambda: float, config: TrainConfig) -> StepHooks:
        hooks = super().step_hooks(learner, network, ewc_lambda, config)
        if not learner.memory.is_empty:
            hooks["replay_batch"] = learner.memory.sampler(config.batch_size, config.seed)
        return hooks

    def consolidate(self, learner: Learner, task_key: str, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                    on_chunk: Callable[[int, int], None] | None = None) -> dict:
        """The family's consolidation (Fisher + anchor), then the task's share of the memory."""
        recipe = super().consolidate(learner, task_key, x, y, config, on_chunk)
        learner.memory.add_task(task_key, x, y, seed=config.seed)
        return recipe


@register
class EWCReplay(Replay):
    """Replay with EWC's penalty: λ as ``ewc`` resolves it (searched on validation when "auto")."""

    name = "ewc_replay"
    uses_lambda = True
    resolve_lambda = EWC.resolve_lambda
