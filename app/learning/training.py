"""Training one task: mini-batch SGD/Adam on the task loss, plus the EWC pull when there is one.

``Trainer`` runs a given number of *steps* and can be resumed, because the λ search trains
several candidates a little, keeps the best, and continues them (successive halving) rather
than starting over. ``train_with_early_stopping`` is the budget rule: the floor
(``TrainConfig.epochs_for``), then one epoch at a time while a validation score improves, up
to a cap, keeping the best epoch's weights. A progress callback and a stop check run on every
batch, so a job shows live progress and stops within one batch of being asked to.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from app.learning import distributed
from app.learning.config import TrainConfig
from app.learning.memory import ReplaySampler


class TrainingStopped(Exception):
    """Raised inside training when its stop check turns true. Why it was asked to stop (a user's
    cancel, a shutdown, a lost lease) is the caller's to know; training only stops."""


class TrainingDiverged(ValueError):
    """Raised inside training when the loss or the weights stop being finite numbers: the update is
    worthless from there on, so it stops at once and nothing it produced may be stored."""

    def __init__(self, epoch: int, loss: float):
        self.epoch, self.loss = epoch, loss
        super().__init__(f"training diverged at epoch {epoch} (loss {loss:g}); lower `lr` or check the features' scale")


@dataclass
class Progress:
    """One progress report of an update (``fraction`` covers the whole update)."""

    phase: str  # "train" | "lambda_search" | "fisher" | "evaluate"
    fraction: float
    epoch: int
    epochs: int
    loss: float | None
    samples_per_second: float | None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    return resolved


FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")


def make_optimizer(parameters: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD, as torch's fused kernel where its device has one: one kernel updates every
    parameter, where the default loops over them tensor by tensor, op by op (the same update;
    ``benchmarks/optimizer_step.py`` measures the step)."""
    fused = all(p.device.type in FUSED_OPTIMIZER_DEVICES and p.is_floating_point() for p in parameters) or None
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, fused=fused)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, fused=fused)


StepCallback = Callable[[float, int], None]  # (batch loss, batch size)


def class_balanced_weights(new_targets: torch.Tensor, replayed_targets: torch.Tensor, new_share: float) -> torch.Tensor:
    """A loss weight per class (indexed by target) that gives every class of a rehearsal batch the
    same expected total weight; the weighted loss of an average batch keeps its scale (mean weight 1).

    A rehearsal batch is ``new_share`` the task's samples and the rest replayed ones. When the task
    brings one new class, that class alone gets half of every step's gradient and the old classes
    share the other half, and the model learns to answer the newest class (recency bias, Wu et al.
    2019, "Large Scale Incremental Learning"). Weighted, the batch trains as a class-balanced joint
    batch. The weights come from the expected composition (the task's and the memory's class
    frequencies), not from each batch's counts, whose noise would weigh a class's two samples in one
    batch as much as ten in the next.
    """
    n_classes = int(max(new_targets.max(), replayed_targets.max())) + 1
    share = new_share * torch.bincount(new_targets, minlength=n_classes) / len(new_targets)
    share = share + (1 - new_share) * torch.bincount(replayed_targets, minlength=n_classes) / len(replayed_targets)
    present = share > 0
    weights = torch.zeros(n_classes, device=share.device)
    weights[present] = 1 / (int(present.sum()) * share[present])
    return weights


class TrainingRandomness:
    """The random stream of one training run's forward passes (dropout), seeded by the run's seed.

    Dropout draws from torch's global generator, whose state depends on whatever ran before in the
    process, so the same task on the same weights would train differently from one process to the
    next. A trainer swaps its own stream in while it trains (``torch.random.fork_rng``) and keeps
    where it got to, so a run is reproducible, resuming by steps draws what one run would, and the
    global generator is left as it was."""

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        self.state = torch.Generator(device=device).manual_seed(seed).get_state()

    @contextmanager
    def active(self) -> Iterator[None]:
        on_cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if on_cuda else [], device_type="cuda"):
            self._set(self.state)
            try:
                yield
            finally:
                self.state = self._get()

    def _get(self) -> torch.Tensor:
        return torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.get_rng_state()

    def _set(self, state: torch.Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)


class Trainer:
    """Mini-batch training of ``parameters`` through ``forward`` on (x, y), resumable by steps.

    The EWC penalty enters one of two ways (see ``app.learning.ewc_penalty``): ``add_penalty_gradient``
    runs after the task loss's backward pass and adds the penalty's gradient to ``.grad``
    (Adam); ``after_step`` runs after the optimizer step and applies the penalty's proximal
    step (SGD).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        parameters: Sequence[nn.Parameter],
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        add_penalty_gradient: Callable[[], None] | None = None,
        after_step: Callable[[], None] | None = None,
        replay_batch: ReplaySampler | None = None,
    ):
        if len(x) == 0:
            raise ValueError("cannot train on an empty dataset")
        self.forward, self.parameters = forward, list(parameters)
        self.x, self.y, self.config = x, y, config
        self.add_penalty_gradient, self.after_step = add_penalty_gradient, after_step
        self.replay_batch = replay_batch  # rehearsal: its samples fill half of every batch
        self.optimizer = make_optimizer(self.parameters, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._random = TrainingRandomness(config.seed, x.device)
        replaying = replay_batch is not None
        self.batch_size = config.new_batch_size(replaying)  # new-task samples per batch
        self.steps_per_epoch = config.steps_per_epoch(len(x), replaying)
        self.epochs = config.epochs_for(
            len(x), replaying
        )  # the floor: at least config.epochs; more when the task is small
        self.max_epochs = config.max_epochs_for(len(x), replaying)  # the cap early stopping may reach
        self.total_steps = self.steps_per_epoch * self.epochs
        self.class_weights: torch.Tensor | None = None  # rehearsal: every class of a batch weighs the same
        if replay_batch is not None:
            new_share = self.batch_size / (self.batch_size + replay_batch.batch_size)
            self.class_weights = class_balanced_weights(y, replay_batch.targets, new_share)
        self.steps_done = 0
        self._order: torch.Tensor | None = None
        self.last_loss = float("nan")
        use_amp = config.mixed_precision and x.device.type == "cuda"
        self._autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext

    @property
    def epoch(self) -> int:
        return min(self.steps_done // self.steps_per_epoch + 1, self.epochs)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        position = self.steps_done % self.steps_per_epoch
        if position == 0 or self._order is None:
            self._order = torch.randperm(len(self.x), generator=self.generator).to(self.x.device)
        index = self._order[position * self.batch_size : (position + 1) * self.batch_size]
        return self.x[index], self.y[index]

    def run(
        self,
        n_steps: int | None = None,
        on_step: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> float:
        """Train ``n_steps`` more steps (default: to the end); return the last batch loss."""
        end = self.total_steps if n_steps is None else min(self.total_steps, self.steps_done + n_steps)
        with self._random.active():
            self._run_until(end, on_step, should_stop)
        self.check_finite()
        return self.last_loss

    def _run_until(self, end: int, on_step: StepCallback | None, should_stop: Callable[[], bool] | None) -> None:
        while self.steps_done < end:
            if should_stop is not None and should_stop():
                raise TrainingStopped("training was asked to stop")
            xb, yb = self._batch()
            if self.replay_batch is not None:  # rehearsal: the same draw on every rank, then sharded with the batch
                replay_x, replay_y = self.replay_batch()
                xb, yb = torch.cat([xb, replay_x]), torch.cat([yb, replay_y])
            n_batch = len(xb)
            xb, yb = distributed.shard(xb, yb)  # across N processes: this rank's share of the batch
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=xb.device)
            if len(xb):  # a rank's share of a last, short batch may be empty: it adds zero gradients
                with self._autocast():
                    logits = self.forward(xb).float()
                if self.class_weights is None:
                    loss = F.cross_entropy(logits, yb)
                else:  # the weighted mean, not F.cross_entropy(weight=), which divides by each batch's weight
                    loss = (F.cross_entropy(logits, yb, reduction="none") * self.class_weights[yb]).mean()
                loss.backward()
            distributed.average_gradients(self.parameters, len(xb), n_batch)  # a no-op in one process
            if self.add_penalty_gradient is not None:
                self.add_penalty_gradient()
            self.optimizer.step()
            if self.after_step is not None:
                self.after_step()
            self.steps_done += 1
            self.last_loss = float(loss.detach())  # read for progress anyway: checking it costs no extra sync
            if not math.isfinite(self.last_loss):
                raise TrainingDiverged(self.epoch, self.last_loss)
            if on_step is not None:
                on_step(self.last_loss, len(xb))

    def check_finite(self) -> None:
        """A non-finite gradient with a finite loss turns the weights non-finite; the next step's loss
        shows it, and this check (once per ``run``, one sync) catches it after the last step."""
        if self.parameters and not bool(torch.stack([p.detach().isfinite().all() for p in self.parameters]).all()):
            raise TrainingDiverged(self.epoch, float("nan"))

    def add_epoch(self) -> None:
        """Allow one more epoch (early stopping, up to ``max_epochs``)."""
        if self.epochs >= self.max_epochs:
            raise ValueError(f"the budget's cap is {self.max_epochs} epochs")
        self.epochs += 1
        self.total_steps += self.steps_per_epoch


def train_with_early_stopping(
    trainer: Trainer,
    network: nn.Module,
    score: Callable[[nn.Module], tuple],
    patience: int,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Train ``trainer`` to its floor, then early stopping on validation: one more epoch at a time while
    ``score(network)`` (higher is better; validation data only) improves, until ``patience`` epochs bring
    no improvement or the cap ``trainer.max_epochs`` is reached; the weights of the best epoch are kept
    (``network``'s parameters and buffers restored). Returns the number of epochs of the weights kept."""
    trainer.run(on_step=on_step, should_stop=should_stop)
    if patience < 1 or trainer.epochs >= trainer.max_epochs:
        return trainer.epochs
    best, best_epochs = score(network), trainer.epochs
    best_state = copy.deepcopy(network.state_dict())
    waited = 0
    while waited < patience and trainer.epochs < trainer.max_epochs:
        trainer.add_epoch()
        trainer.run(on_step=on_step, should_stop=should_stop)
        current = score(network)
        if current > best:
            best, best_epochs, waited = current, trainer.epochs, 0
            best_state = copy.deepcopy(network.state_dict())
        else:
            waited += 1
    if best_epochs != trainer.epochs:
        network.load_state_dict(best_state)
    return best_epochs


class ThroughputMeter:
    """Samples per second over a sliding window, for progress reports."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self.events: list[tuple[float, int]] = []

    def add(self, n_samples: int) -> float | None:
        now = time.perf_counter()
        self.events.append((now, n_samples))
        while len(self.events) > 2 and now - self.events[0][0] > self.window:
            self.events.pop(0)
        elapsed = now - self.events[0][0]
        if elapsed <= 0:
            return None
        return sum(n for _, n in self.events[1:]) / elapsed
