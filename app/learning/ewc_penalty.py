"""Elastic Weight Consolidation: remember which parameters mattered, and pull them back.

After task t the learner stores the diagonal Fisher F_t and the anchor weights theta*_t.
While learning a later task the loss is

    L(theta) = L_new(theta) + lambda/2 * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2

Two consolidation modes:
* ``separate`` (Kirkpatrick et al. 2017): one (F_t, theta*_t) pair per past task; memory
  grows with the number of tasks.
* ``online`` (Schwarz et al. 2018): F <- gamma * F + F_t and theta* <- theta_t; one pair,
  constant memory.

The training step never builds an autograd graph for the penalty. Expanding the square,
the penalty's gradient is lambda * (S * theta - B) with S = sum_t F_t and B = sum_t F_t * theta*_t,
both precomputed when a task is consolidated. A training run asks once for a step hook
(``proximal_step`` for SGD, ``penalty_gradient`` for Adam) that applies the penalty with
fused in-place ``torch._foreach_*`` passes over the parameters, whatever the number of tasks.

Parameters are keyed by name. When the head grows, stored tensors are zero-padded: new
output rows have zero Fisher, so they are free until a task that uses them is consolidated.

Normalisation buffers (BatchNorm running statistics) are *not* protected: they are not
parameters, have no Fisher, and move with every task's data. The default models (mlp, cnn)
therefore have no BatchNorm; resnet18 keeps torchvision's BatchNorm and its old tasks can
drift through those statistics even at large lambda.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]


def _nothing() -> None:
    """The step hook when there is nothing to consolidate against."""


def pad_to(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zero-pad ``tensor`` along its leading dimension to ``shape`` (a grown head)."""
    if tensor.shape == shape:
        return tensor
    if tensor.shape[1:] != shape[1:] or tensor.shape[0] > shape[0]:
        raise ValueError(f"cannot pad a consolidated tensor of shape {tuple(tensor.shape)} to {tuple(shape)}")
    padded = tensor.new_zeros(shape)
    padded[: tensor.shape[0]] = tensor
    return padded


class Consolidation:
    """The Fisher and anchors of every consolidated task, and the penalty they define."""

    def __init__(self, mode: str = "separate", gamma: float = 1.0):
        if mode not in ("separate", "online"):
            raise ValueError(f"consolidation mode must be 'separate' or 'online', got {mode!r}")
        self.mode = mode
        self.gamma = gamma
        # task_key -> {"fisher": {...}, "anchor": {...}}; online mode keeps the single key "online".
        self.entries: dict[str, dict[str, Tensors]] = {}
        self._importance: Tensors = {}  # S = sum_t F_t
        self._pull: Tensors = {}  # B = sum_t F_t * anchor_t

    @property
    def is_empty(self) -> bool:
        return not self.entries

    def consolidate(self, task_key: str, fisher: Tensors, anchor: Tensors) -> None:
        """Store task ``task_key``'s Fisher and anchor (online: fold them into the running pair)."""
        fisher = {n: f.detach().clone() for n, f in fisher.items()}
        anchor = {n: a.detach().clone() for n, a in anchor.items() if n in fisher}
        if self.mode == "online" and "online" in self.entries:
            old = self.entries["online"]
            self._pad_entry(old, {n: f.shape for n, f in fisher.items()})
            fisher = {n: self.gamma * old["fisher"][n] + f if n in old["fisher"] else f for n, f in fisher.items()}
        key = "online" if self.mode == "online" else task_key
        self.entries[key] = {"fisher": fisher, "anchor": anchor}
        self._rebuild()

    def _pad_entry(self, entry: dict[str, Tensors], shapes: dict[str, torch.Size]) -> None:
        for part in ("fisher", "anchor"):
            for name, tensor in entry[part].items():
                if name in shapes:
                    entry[part][name] = pad_to(tensor, shapes[name])

    def match_shapes(self, model: nn.Module) -> None:
        """Zero-pad every stored tensor to the model's current parameter shapes (after a head grows)."""
        shapes = {n: p.shape for n, p in model.named_parameters()}
        for entry in self.entries.values():
            self._pad_entry(entry, shapes)
        self._rebuild()

    def _rebuild(self) -> None:
        """Precompute S and B, so a training step pays for the penalty whatever the number of tasks."""
        importance: Tensors = {}
        pull: Tensors = {}
        for entry in self.entries.values():
            for name, f in entry["fisher"].items():
                a = entry["anchor"][name]
                importance[name] = importance[name] + f if name in importance else f.clone()
                pull[name] = pull[name] + f * a if name in pull else f * a
        self._importance, self._pull = importance, pull

    def to(self, device: torch.device | str) -> Consolidation:
        for entry in self.entries.values():
            for part in entry.values():
                for name in part:
                    part[name] = part[name].to(device)
        self._rebuild()
        return self

    # -------------------------------------------------------------------------- penalty
    def _aligned(self, model: nn.Module) -> tuple[list[nn.Parameter], list[torch.Tensor], list[torch.Tensor]]:
        named = dict(model.named_parameters())
        names = [n for n in self._importance if n in named and named[n].requires_grad]
        return [named[n] for n in names], [self._importance[n] for n in names], [self._pull[n] for n in names]

    def penalty(self, model: nn.Module, ewc_lambda: float) -> torch.Tensor:
        """lambda/2 * sum_t sum_i F_t,i (theta_i - anchor_t,i)^2, differentiable (for tests and reports).

        Summed entry by entry rather than from S, B and C: the expanded form cancels large
        terms and loses float32 precision near the anchor.
        """
        named = dict(model.named_parameters())
        total = torch.zeros((), device=next(model.parameters()).device)
        for entry in self.entries.values():
            for name, f in entry["fisher"].items():
                if name in named and named[name].requires_grad:
                    total = total + (f * (named[name] - entry["anchor"][name]).pow(2)).sum()
        return 0.5 * ewc_lambda * total

    def penalty_gradient(self, model: nn.Module, ewc_lambda: float) -> Callable[[], None]:
        """A step hook for gradient-based optimizers (Adam): ``grad += lambda * (S * theta - B)``,
        the penalty's exact gradient, with no autograd graph and no allocation per step."""
        params, importance, pull = self._aligned(model)
        if ewc_lambda == 0 or not params:
            return _nothing

        @torch.no_grad()
        def add() -> None:
            grads = [p.grad for p in params if p.grad is not None]
            if len(grads) != len(params):
                raise RuntimeError("the EWC gradient needs every consolidated parameter's .grad; run backward first")
            torch._foreach_addcmul_(grads, importance, [p.detach() for p in params], value=ewc_lambda)
            torch._foreach_add_(grads, pull, alpha=-ewc_lambda)

        return add

    def proximal_step(self, model: nn.Module, ewc_lambda: float, lr: float) -> Callable[[], None]:
        """A step hook for SGD, run after each optimizer step: the penalty's exact proximal step
        theta <- (theta + lr*lambda*B) / (1 + lr*lambda*S).

        A gradient step on the penalty diverges once lr * lambda * F exceeds 2 (2(1 + momentum)
        with momentum) on any coordinate, whereas this implicit step moves each weight towards
        its Fisher-weighted anchor B/S by a fraction w = lr*lambda*S / (1 + lr*lambda*S) in [0, 1)
        for every lambda, and has the same fixed points as the penalised loss. Written as
        theta <- lerp(theta, B/S, w) with both precomputed here, a training step pays one fused
        in-place pass and allocates nothing. (Where S = 0, B = 0 too and w = 0: no pull.)
        """
        params, importance, pull = self._aligned(model)
        if ewc_lambda == 0 or not params:
            return _nothing
        scale = lr * ewc_lambda
        weight = [scale * s / (1.0 + scale * s) for s in importance]
        target = [
            torch.where(s > 0, b / s.clamp_min(torch.finfo(s.dtype).tiny), 0.0)
            for s, b in zip(importance, pull, strict=True)
        ]
        weights = [p.detach() for p in params]

        @torch.no_grad()
        def step() -> None:
            torch._foreach_lerp_(weights, target, weight)

        return step

    # ---------------------------------------------------------------------------- state
    def tensors(self) -> Tensors:
        """Flat name -> tensor map for safetensors: ``{task}.fisher.{param}`` / ``{task}.anchor.{param}``."""
        return {
            f"{key}.{part}.{name}": tensor
            for key, entry in self.entries.items()
            for part, tensors in entry.items()
            for name, tensor in tensors.items()
        }

    @classmethod
    def from_tensors(cls, tensors: Tensors, mode: str, gamma: float, order: list[str]) -> Consolidation:
        """Inverse of ``tensors``; ``order`` lists the entry keys in consolidation order."""
        consolidation = cls(mode, gamma)
        for key in order:
            entry: dict[str, Tensors] = {"fisher": {}, "anchor": {}}
            for flat, tensor in tensors.items():
                entry_key, part, name = flat.split(".", 2)
                if entry_key == key:
                    entry[part][name] = tensor
            consolidation.entries[key] = entry
        consolidation._rebuild()
        return consolidation

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())
