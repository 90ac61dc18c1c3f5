"""Hyper-parameters of an update, in one place, with defaults chosen from measurement.

The defaults are the ones the forgetting benchmark supports (docs/benchmarks/forgetting.md, "Choosing the
defaults"): SGD with momentum keeps old tasks far better under EWC than Adam, whose
per-coordinate step normalisation moves even parameters with tiny Fisher a full learning
rate per step. λ only has a meaning together with the Fisher recipe, so both live here and
are stored together with every version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Optimizer = Literal["sgd", "adam"]
LabelMode = Literal["empirical", "true"]
ConsolidationMode = Literal["separate", "online"]


@dataclass
class TrainConfig:
    """How one task is trained."""

    optimizer: Optimizer = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    epochs: int = 4
    # The budget's floor grows for small tasks: an update trains at least this many optimizer
    # steps, in whole epochs, whatever the task's size (at batch 64 a 3,600-sample task gets 6
    # epochs, 342 steps; a 1,300-sample task 16). docs/benchmarks/forgetting.md, "Small and crowded tasks".
    min_steps: int = 320
    # A replaying update's floor (rehearsal, half of every batch from the memory). Lower than
    # ``min_steps``: the replayed half puts the old tasks' loss into every step, so the update needs no
    # long new-task training to hold them, and an epoch of the new task already takes twice the steps.
    # With the floor at ``min_steps``, ewc_replay's small updates cost a large share of retraining on
    # every task jointly, which replay exists to avoid (docs/benchmarks/measurements.md;
    # docs/benchmarks/forgetting.md, "Small and crowded tasks").
    replay_min_steps: int = 0
    # Early stopping above the floor, on validation data: after the floor the update trains whole
    # epochs while the validation score of every learnt task improves, stops after ``patience``
    # epochs without improvement or at ``max_epochs_factor`` x the floor's epochs, and keeps the
    # best epoch's weights. ``patience`` 0: exactly the floor. The cap bounds an update with a λ
    # search at 3x a plain update's steps (search 2x, then at most 1x more for its winner).
    patience: int = 2
    max_epochs_factor: int = 2
    # 64, not 32, since the budget rule above: with it, batch 64 kept more of the old tasks on every
    # benchmark (benchmarks/results/defaults/; docs/benchmarks/forgetting.md, "Choosing the defaults").
    # Before the rule, 32 had been better.
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when present, else cpu
    mixed_precision: bool = True  # bf16 autocast; only ever on cuda

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be non-negative, got {self.min_steps}")
        if self.replay_min_steps < 0:
            raise ValueError(f"replay_min_steps must be non-negative, got {self.replay_min_steps}")
        if self.patience < 0:
            raise ValueError(f"patience must be non-negative, got {self.patience}")
        if self.max_epochs_factor < 1:
            raise ValueError(f"max_epochs_factor must be at least 1, got {self.max_epochs_factor}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    @property
    def replay_batch_size(self) -> int:
        """Replayed samples in a rehearsal batch: half of it, so replay costs no more per step."""
        return self.batch_size // 2

    def new_batch_size(self, replaying: bool = False) -> int:
        """New-task samples per batch: all of it, or what replay leaves."""
        return self.batch_size - self.replay_batch_size if replaying else self.batch_size

    def steps_per_epoch(self, n_samples: int, replaying: bool = False) -> int:
        return -(-n_samples // self.new_batch_size(replaying))

    def epochs_for(self, n_samples: int, replaying: bool = False) -> int:
        """The budget's floor for ``n_samples``: ``epochs``, or more to reach ``min_steps`` (``replay_min_steps``
        when replaying)."""
        min_steps = self.replay_min_steps if replaying else self.min_steps
        return max(self.epochs, -(-min_steps // self.steps_per_epoch(n_samples, replaying)))

    def max_epochs_for(self, n_samples: int, replaying: bool = False) -> int:
        """The budget's cap: the floor when early stopping is off, else ``max_epochs_factor`` x it."""
        floor = self.epochs_for(n_samples, replaying)
        return floor * self.max_epochs_factor if self.patience else floor

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FisherConfig:
    """The Fisher recipe: how the diagonal importance of every parameter is estimated.

    ``true``: expectation of the squared score under the model's own predictive distribution,
    exact over classes. ``empirical``: the squared score of the given labels. Either way the
    gradients are per sample and the Fisher is their mean of squares, so λ does not depend on
    the batch size or the number of samples.
    """

    label_mode: LabelMode = "true"
    # The cap: a task's Fisher is estimated on at most this many of its samples. 4000 is all of a
    # typical task: more samples measured better, and linear layers cost little.
    max_samples: int = 4000
    chunk_size: int = 128

    def __post_init__(self) -> None:
        if self.label_mode not in ("empirical", "true"):
            raise ValueError(f"fisher label_mode must be 'empirical' or 'true', got {self.label_mode!r}")
        if self.max_samples < 1 or self.chunk_size < 1:
            raise ValueError("fisher max_samples and chunk_size must be at least 1")

    @classmethod
    def from_dict(cls, values: dict) -> FisherConfig:
        """Inverse of ``asdict``; reads versions stored when the cap was called ``n_samples`` too."""
        values = dict(values)
        if "n_samples" in values:
            values.setdefault("max_samples", values.pop("n_samples"))
        return cls(**values)


@dataclass
class EWCConfig:
    """How earlier tasks are consolidated and how strongly they are protected."""

    consolidation: ConsolidationMode = "separate"
    gamma: float = 1.0  # online mode's decay of the old Fisher: F <- gamma * F + F_t
    ewc_lambda: float | Literal["auto"] = "auto"
    default_lambda: float = 1000.0  # used when auto has no validation data to choose with
    lambda_candidates: tuple[float, ...] = (10.0, 100.0, 1000.0, 10000.0)
    # ewc_replay's λ for "auto" once its memory holds samples: no search (docs/concepts.md, "Strategies").
    replay_lambda: float = 10.0
    # λ search: a candidate that drops an old task's validation accuracy by more than this
    # (absolute) ranks after every candidate that does not; when none keeps within it, the update
    # carries a capacity warning.
    max_old_task_drop: float = 0.02
    # When even the candidate that drops least loses more than this on an old task, the update
    # says the model may lack the capacity for its tasks (UpdateResult.capacity_warning).
    capacity_warning_drop: float = 0.05
    fisher: FisherConfig = field(default_factory=FisherConfig)

    def __post_init__(self) -> None:
        if self.consolidation not in ("separate", "online"):
            raise ValueError(f"consolidation must be 'separate' or 'online', got {self.consolidation!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.replay_lambda < 0:
            raise ValueError(f"replay_lambda must be non-negative, got {self.replay_lambda}")
        if self.ewc_lambda != "auto" and float(self.ewc_lambda) < 0:
            raise ValueError(f"ewc_lambda must be non-negative or 'auto', got {self.ewc_lambda}")
        for name in ("max_old_task_drop", "capacity_warning_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if isinstance(self.fisher, dict):
            self.fisher = FisherConfig.from_dict(self.fisher)
        self.lambda_candidates = tuple(float(c) for c in self.lambda_candidates)

    def recipe(self, n_samples_used: int | None = None) -> dict:
        """What λ means: stored next to every λ the service chooses. ``n_samples`` is how many
        samples the Fisher was estimated on (at most ``max_samples``, the task's size otherwise)."""
        return {
            "label_mode": self.fisher.label_mode,
            "n_samples": self.fisher.max_samples if n_samples_used is None else n_samples_used,
            "max_samples": self.fisher.max_samples,
            "scaling": "mean over samples of squared per-sample gradients of log p(y|x)",
            "half_convention": "penalty = lambda/2 * sum_i F_i (theta_i - anchor_i)^2",
            "consolidation": self.consolidation,
            "penalty_step": "proximal after each SGD step; gradient added to .grad with Adam",
            "gamma": self.gamma,
        }

    def as_dict(self) -> dict:
        return asdict(self)
