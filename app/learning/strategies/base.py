"""The one interface every continual-learning strategy implements, and the registry of them by name.

A strategy is the kind of update a model gets. ``ContinualLearner.learn_task`` runs one fixed
loop and calls the strategy at its hook points (as Avalanche's training template calls its
plugins), so a strategy implements only what it changes:

1. ``prepare``: make room for the task in the network (grow a head, add modules);
   ``training_set``: the samples it trains on (the task's own; a replay method adds its memory);
2. ``trainable_parameters``, ``train_forward``, ``resolve_lambda`` and ``step_hooks``: what
   the training loop updates, through which forward pass, and what runs after each backward
   pass or optimizer step (EWC's pull towards its anchors);
3. ``consolidate``: what the next update needs once the task is trained;
4. for prediction and storage: ``logits``, ``parameter_counts``, ``export_state``/``load_state``.

Every strategy belongs to one model *family*: the kind of network and the state kept between
updates. A family is defined by the strategy it is named after (``ewc``, ``ccll``); the other
strategies of the family subclass it and share its network, logits and stored state, so a
model of a family can take an update of any of its strategies. A strategy also declares which
architectures it works with (CCLL calibrates conv blocks: cnn or resnet18 only). A new method
is one new class with ``@register``, as in Mammoth.

Hooks receive the learner (``app.learning.learner.ContinualLearner``, not imported here: it
imports this package): its network, vocabulary and ``ewc`` settings are what a strategy reads
and grows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypedDict

import torch
from torch import nn

from app.learning.config import TrainConfig
from app.learning.memory import ReplaySampler
from app.learning.models import ARCHITECTURES

Learner = Any  # an app.learning.learner.ContinualLearner


class StepHooks(TypedDict, total=False):
    """Keyword arguments of ``Trainer`` that a strategy fills."""

    add_penalty_gradient: Callable[[], None]  # after backward: the penalty's gradient (EWC with Adam)
    after_step: Callable[[], None]  # after the optimizer step (EWC's proximal step with SGD)
    replay_batch: ReplaySampler  # rehearsal: replayed samples appended to every batch


class Strategy:
    """One kind of update; see the module docstring for the order its hooks are called in."""

    name: ClassVar[str]
    family: ClassVar[str]
    architectures: ClassVar[tuple[str, ...]] = ARCHITECTURES  # the ones it works with; the first is the default
    architecture_note: ClassVar[str] = ""  # why only those, for the error message
    options: ClassVar[tuple[str, ...]] = ()  # architecture options this family reads (the rest go to the model)
    predicts_per_task: ClassVar[bool] = False  # outputs per task: prediction and scoring need the task
    uses_lambda: ClassVar[bool] = False  # whether λ weighs a penalty (recorded with the update only then)

    # ------------------------------------------------------------------ compatibility
    @classmethod
    def default_architecture(cls) -> str:
        return cls.architectures[0]

    @classmethod
    def check_architecture(cls, architecture: str) -> None:
        if architecture not in cls.architectures:
            note = f" ({cls.architecture_note})" if cls.architecture_note else ""
            raise ValueError(f"strategy {cls.name} needs architecture {' or '.join(cls.architectures)}{note}")

    def check_applies(self, learner: Learner) -> None:
        """Refuse, before anything changes, an update this learner cannot take."""
        if self.family != learner.family:
            raise ValueError(
                f"strategy {self.name!r} does not apply to a {learner.family} model "
                f"(allowed: {', '.join(strategy_names(learner.family))})"
            )
        if "imported" not in learner.architecture_options:  # an imported model brings its own architecture
            self.check_architecture(learner.architecture)

    # ------------------------------------------------------------------ the task's strategy
    choice: dict | None = None  # set by a strategy that chooses per task: {"strategy": ..., "reason": ...}

    def for_task(self, learner: Learner, task_labels: list) -> Strategy:
        """The strategy that learns a task of ``task_labels`` (before anything changes): itself; a
        strategy that chooses per task (``auto``) returns its choice, with ``choice`` saying why."""
        return self

    def train_config(self, config: TrainConfig) -> TrainConfig:
        """The training settings this task is learnt with: the caller's (a strategy may change its budget)."""
        return config

    # ------------------------------------------------------------------- the network
    def network_from(self, base: nn.Module, options: dict) -> nn.Module:
        """The family's network around a freshly built model, given the family's own ``options``."""
        return base

    def rebuild_network(self, learner: Learner) -> None:
        """A network of the shape the learner's exported weights have (before they are loaded)."""
        raise NotImplementedError

    # ------------------------------------------------------------- 1. prepare the task
    def prepare(self, learner: Learner, task_key: str, task_labels: list) -> int:
        """Make room for the task in ``learner.network`` (building it on the first task); return
        the number of parameters added."""
        raise NotImplementedError

    def training_set(
        self, learner: Learner, task_key: str, x: torch.Tensor, labels: list
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and target indices to train on: the task's own samples."""
        return x, learner.targets(labels, task_key)

    # ------------------------------------------------------------------------ 2. train
    def trainable_parameters(self, learner: Learner, network: nn.Module, task_key: str) -> list[nn.Parameter]:
        return [p for p in network.parameters() if p.requires_grad]

    def train_forward(self, network: nn.Module, task_key: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The logits the task loss is computed on while training ``task_key``."""
        return network

    def resolve_lambda(self, learner: Learner, requested: float | str | None) -> float | str:
        """The λ to train with (a number, or "auto" to search); 0 when there is no penalty."""
        return 0.0

    def step_hooks(self, learner: Learner, network: nn.Module, ewc_lambda: float, config: TrainConfig) -> StepHooks:
        """Keyword arguments for ``Trainer``: what runs after backward / after the optimizer step,
        and the replay batch appended to every training batch."""
        return {}

    # ------------------------------------------------------------------ 3. consolidate
    def consolidate(
        self,
        learner: Learner,
        task_key: str,
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> dict:
        """After training: keep what the next updates need; return the Fisher recipe ({} if none)."""
        return {}

    # ----------------------------------------------------------- prediction and state
    def logits(self, learner: Learner, network: nn.Module, x: torch.Tensor, task_key: str | None) -> torch.Tensor:
        """Logits of ``network`` over the vocabulary, or over ``task_key``'s labels only."""
        raise NotImplementedError

    def parameter_counts(self, network: nn.Module) -> dict:
        total = sum(p.numel() for p in network.parameters())
        return {"base": total, "per_task": {}, "total": total}

    def init_state(self, learner: Learner) -> None:
        """Give a new learner the state this family keeps between updates."""

    def export_state(self, learner: Learner) -> tuple[dict[str, torch.Tensor], dict]:
        """That state as tensors and JSON metadata (the consolidation payload)."""
        return {}, {"mode": None, "order": []}

    def load_state(self, learner: Learner, tensors: dict[str, torch.Tensor] | None, metadata: dict | None) -> None:
        """Inverse of ``export_state``; ``None`` when the payload was not loaded (a serving copy)."""


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its ``name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"a strategy named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def strategy_class(name: str) -> type[Strategy]:
    """The registered strategy called ``name``; ValueError naming the choices otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def strategy_names(family: str | None = None) -> tuple[str, ...]:
    """Registered strategies (of one family), in registration order."""
    return tuple(name for name, cls in _REGISTRY.items() if family is None or cls.family == family)


def family_names() -> tuple[str, ...]:
    """Model families: the strategies a family is named after."""
    return tuple(name for name, cls in _REGISTRY.items() if cls.family == name)


def family_strategy(family: str) -> Strategy:
    """The strategy that defines ``family``'s network, logits and state."""
    if family not in family_names():
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(family_names())}")
    return _REGISTRY[family]()


def options_of_other_families(family: str) -> dict[str, str]:
    """Option name -> the family that reads it, for every family but ``family``."""
    return {option: cls.family for cls in _REGISTRY.values() if cls.family != family for option in cls.options}
