"""EWC (Kirkpatrick et al. 2017): learn the new task, pulled back towards what mattered for the old ones.

    L(θ) = L_new(θ) + λ/2 Σ_t Σ_i F_t,i (θ_i − θ*_t,i)²

The family it names keeps one network whose head spans the whole label vocabulary (a task
bringing new labels grows it) and, between updates, the consolidation: every task's diagonal
Fisher F_t and anchor weights θ*_t (``app.learning.ewc_penalty``; ``separate`` or ``online`` mode).
The penalty never enters the autograd graph: with SGD its exact proximal step runs after each
optimizer step (stable for every λ), with Adam its closed-form gradient λ·(S·θ − B) is added
to ``.grad`` (Mammoth's ``ewc_on``). After the task, its Fisher is estimated on a seeded sample
of its training data, at most ``FisherConfig.max_samples``.

The family's state also holds a rehearsal memory (``app.learning.memory``), which only the
replay strategies fill and read; its size is the model's ``memory_size`` option (an
architecture option the family reads, default ``DEFAULT_MEMORY_SIZE``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from app.learning.config import TrainConfig
from app.learning.ewc_penalty import Consolidation
from app.learning.fisher import diagonal_fisher
from app.learning.memory import PREFIX as MEMORY_PREFIX
from app.learning.memory import RehearsalMemory
from app.learning.models import ARCHITECTURES, grow_head
from app.learning.strategies.base import Learner, StepHooks, Strategy, register
from app.learning.text_source import TEXT_ARCHITECTURE

DEFAULT_MEMORY_SIZE = 1000  # samples a replay model keeps in all (docs/concepts.md, "Strategies")
DEFAULT_TEXT_MEMORY_BYTES = 64 * 1024 * 1024  # a text model's memory: at most this many bytes of token ids


def _count(network: nn.Module | None) -> int:
    return 0 if network is None else sum(p.numel() for p in network.parameters())


@register
class EWC(Strategy):
    """Elastic Weight Consolidation; defines the ``ewc`` family (vocabulary head + consolidation)."""

    name = family = "ewc"
    uses_lambda = True
    architectures = (*ARCHITECTURES, TEXT_ARCHITECTURE)  # text models are imported, never built from scratch
    options = ("memory_size", "memory_bytes")  # the rehearsal memory's capacity in samples and bytes (replay)

    def check_applies(self, learner: Learner) -> None:
        super().check_applies(learner)
        if learner.consolidation is None:
            raise ValueError("this learner was loaded without its consolidation (Fisher and anchors); it cannot learn")

    def rebuild_network(self, learner: Learner) -> None:
        learner.build_network(n_classes=len(learner.labels))

    def prepare(self, learner: Learner, task_key: str, task_labels: list) -> int:
        """Grow the head for the task's new labels; their Fisher starts at zero (padded), so they are free."""
        before = _count(learner.network)
        learner.labels += [label for label in task_labels if label not in learner.labels]
        if learner.network is None:
            learner.build_network(n_classes=len(learner.labels))
        else:
            grow_head(learner.network, len(learner.labels))
            learner.consolidation.match_shapes(learner.network)
        return _count(learner.network) - before

    def resolve_lambda(self, learner: Learner, requested: float | str | None) -> float | str:
        """The λ asked for (the learner's default when None); 0 while nothing is consolidated."""
        if learner.consolidation.is_empty:
            return 0.0
        value = learner.ewc.ewc_lambda if requested is None else requested
        if value != "auto" and (not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"ewc_lambda must be a non-negative number or 'auto', got {value!r}")
        return value

    def step_hooks(self, learner: Learner, network: nn.Module, ewc_lambda: float, config: TrainConfig) -> StepHooks:
        if ewc_lambda == 0:
            return {}
        if config.optimizer == "sgd":  # implicit step: stable for every λ (see Consolidation.proximal_step)
            return {"after_step": learner.consolidation.proximal_step(network, ewc_lambda, config.lr)}
        return {"add_penalty_gradient": learner.consolidation.penalty_gradient(network, ewc_lambda)}

    @torch.no_grad()
    def consolidate(
        self,
        learner: Learner,
        task_key: str,
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> dict:
        """Store the task's Fisher, estimated on a seeded sample of its training data, with its anchor."""
        fisher_config = learner.ewc.fisher
        generator = torch.Generator().manual_seed(config.seed)
        index = torch.randperm(len(x), generator=generator)[: fisher_config.max_samples].to(x.device)
        chunk_size = fisher_config.chunk_size
        if learner.is_text:  # a chunk keeps every layer's activations, as a training batch does: no more
            chunk_size = min(chunk_size, config.batch_size)
        with torch.enable_grad():
            fisher = diagonal_fisher(
                learner.network,
                x[index],
                y[index],
                label_mode=fisher_config.label_mode,
                chunk_size=chunk_size,
                on_chunk=on_chunk,
            )
        anchor = {name: p.detach() for name, p in learner.network.named_parameters()}
        learner.consolidation.consolidate(task_key, fisher, anchor)
        return learner.ewc.recipe(len(index))

    def logits(self, learner: Learner, network: nn.Module, x: torch.Tensor, task_key: str | None) -> torch.Tensor:
        logits = network(x)
        if task_key is None:
            return logits
        columns = torch.tensor(
            [learner.labels.index(label) for label in learner.task_labels[task_key]], device=logits.device
        )
        return logits.index_select(1, columns)

    def init_state(self, learner: Learner) -> None:
        learner.consolidation = Consolidation(learner.ewc.consolidation, learner.ewc.gamma)
        learner.memory = RehearsalMemory(_memory_size(learner), _memory_bytes(learner))

    def export_state(self, learner: Learner) -> tuple[dict[str, torch.Tensor], dict]:
        consolidation = learner.consolidation
        if consolidation is None:
            return super().export_state(learner)
        tensors = consolidation.tensors()
        metadata = {"mode": consolidation.mode, "gamma": consolidation.gamma, "order": list(consolidation.entries)}
        if learner.memory is not None and not learner.memory.is_empty:
            tensors |= learner.memory.tensors()
            metadata["memory"] = learner.memory.metadata()
        return tensors, metadata

    def load_state(self, learner: Learner, tensors: dict[str, torch.Tensor] | None, metadata: dict | None) -> None:
        if tensors is None:
            learner.consolidation = learner.memory = None
            return
        if metadata is None:
            raise ValueError("an EWC consolidation needs its metadata (mode, gamma, order) with its tensors")
        consolidated = {name: t for name, t in tensors.items() if not name.startswith(MEMORY_PREFIX)}
        learner.consolidation = Consolidation.from_tensors(
            consolidated, metadata["mode"], metadata["gamma"], metadata["order"]
        )
        learner.memory = (
            RehearsalMemory.from_tensors(tensors, metadata["memory"])
            if "memory" in metadata
            else RehearsalMemory(_memory_size(learner), _memory_bytes(learner))
        )


def _memory_size(learner: Learner) -> int:
    size = learner.architecture_options.get("memory_size", DEFAULT_MEMORY_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"memory_size must be a non-negative whole number of samples, got {size!r}")
    return size


def _memory_bytes(learner: Learner) -> int | None:
    """The memory's bound in bytes: the option ``memory_bytes``, else ``DEFAULT_TEXT_MEMORY_BYTES`` for
    text models (whose samples are ``max_length`` token ids each), else none (samples bound it)."""
    size = learner.architecture_options.get("memory_bytes")
    if size is None:
        return DEFAULT_TEXT_MEMORY_BYTES if getattr(learner, "text_source", None) is not None else None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"memory_bytes must be a non-negative whole number of bytes, got {size!r}")
    return size
