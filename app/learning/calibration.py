"""CCLL: a frozen CNN base recalibrated per task by tiny spatial and channel-wise modules.

Singh et al., "Calibrating CNNs for Lifelong Learning" (NeurIPS 2020). The convolutional
base learns the first task and is then frozen; every task owns a spatial calibration
module (SCM) and a channel-wise calibration module (CCM) after every conv block, plus its
own classifier. Nothing shared changes after the first task, and nothing a task owns is
touched by later tasks, so an old task's predictions stay bit-for-bit the same: CCLL does
not forget, at the price of needing the task at prediction time.

Choices this implementation makes (the paper leaves them open or we adapt to our models):

* Placement: one SCM+CCM after every entry of the base's ``feature_blocks`` (docs/architecture.md,
  "CCLL network contract").
  The paper calibrates after every conv layer; a block here may hold several convs (a
  ResNet stage), so per-task growth is smaller than the paper's for the same α, β.
* CCM gate: the batch-normalised 1×1 group-conv response goes through a sigmoid before it
  scales the channels, as in SE-style channel recalibration (and the authors' own earlier
  depthwise-1×1 + BN + sigmoid recalibration); GAP → group conv → BN → multiply, as the
  CCM is usually summarised, leaves the non-linearity out, but a raw BN output used as a
  multiplier is unbounded and flips channels' signs.
* The first task has calibration modules too, trained together with the base: the base
  then learns features *through* calibration, and the second task starts from exactly the
  first task's function (modules are copied) instead of from an untrained calibration.
* SCM starts at zero weight (an exact identity: the map plus zero), so adding it to a
  fresh base perturbs nothing.
* α, β that do not divide a block's channel count are refused with a ValueError naming
  the block; there is no silent fallback, because it would change the method's capacity.
* Frozen base = ``requires_grad=False`` *and* eval mode forever (``train()`` is overridden):
  BatchNorm running statistics in the base (resnet18) would otherwise drift with every
  later task and change old tasks' outputs.
* After a task is trained its BatchNorm statistics are recomputed with the final weights
  (``refresh_statistics``, "precise BN"): running averages taken during a short training
  lag far behind the pooled channel means a CCM normalises, and eval-mode gates then
  differ from the trained ones (see that method).
* A CCM's BatchNorm sees one value per channel per sample (after pooling); a training
  batch of one sample cannot be normalised by its own statistics, so it uses the running
  ones (without updating them) instead of failing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from app.learning.models import ConvNet

__all__ = ["SpatialCalibration", "ChannelCalibration", "CalibrationModule", "CalibratedNetwork"]


def _groups(channels: int, per_group: int, name: str, where: str) -> int:
    """Number of groups for a group conv with ``per_group`` channels each, or a clear error."""
    if isinstance(per_group, bool) or not isinstance(per_group, int) or per_group < 1:
        raise ValueError(f"{name} must be a positive integer, got {per_group!r}")
    if channels % per_group:
        divisors = [d for d in range(1, channels + 1) if channels % d == 0]
        raise ValueError(
            f"{name}={per_group} does not divide the {channels} channels of {where}; "
            f"{name} is the number of channels per group and must divide every calibrated "
            f"block's channel count (valid for this block: {divisors})"
        )
    return channels // per_group


class SpatialCalibration(nn.Module):
    """SCM: ``M + GroupConv3x3(M)`` with α channels per group (C/α groups, C outputs).

    Adds a learnt spatial correction to every channel; α trades parameters (9·C·α) for
    how many neighbouring channels each correction may mix.
    """

    def __init__(self, channels: int, alpha: int = 1, where: str = "the activation map"):
        super().__init__()
        groups = _groups(channels, alpha, "alpha", where)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=groups, bias=False)
        nn.init.zeros_(self.conv.weight)  # identity at start: M + 0

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        return activation + self.conv(activation)


class ChannelCalibration(nn.Module):
    """CCM: ``M ⊙ sigmoid(BN(GroupConv1x1(GAP(M))))`` with β channels per group.

    One multiplier per channel and sample, computed from the map's own channel means, so
    a task can switch the base's channels up or down.
    """

    def __init__(self, channels: int, beta: int = 1, where: str = "the activation map"):
        super().__init__()
        groups = _groups(channels, beta, "beta", where)
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(F.adaptive_avg_pool2d(activation, 1))  # N x C x 1 x 1
        if self.training and pooled.shape[0] == 1:
            # One value per channel cannot be batch-normalised: use the running statistics.
            normed = F.batch_norm(
                pooled,
                self.norm.running_mean,
                self.norm.running_var,
                self.norm.weight,
                self.norm.bias,
                False,
                0.0,
                self.norm.eps,
            )
        else:
            normed = self.norm(pooled)
        return activation * torch.sigmoid(normed)


class CalibrationModule(nn.Sequential):
    """The calibration one task applies after one block: SCM, then CCM."""

    def __init__(self, channels: int, alpha: int, beta: int, where: str):
        super().__init__(SpatialCalibration(channels, alpha, where), ChannelCalibration(channels, beta, where))


def _block_channels(block: nn.Module, index: int) -> int:
    """Output channels of a conv block: those of its last Conv2d (resnet downsample included)."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"feature block {index} has no Conv2d; CCLL calibrates convolutional blocks only")
    return convs[-1].out_channels


def _count(parameters) -> int:
    return sum(p.numel() for p in parameters)


class CalibratedNetwork(nn.Module):
    """A shared conv base with per-task calibration modules and classifiers.

    The contract it keeps with the base network: docs/architecture.md, "CCLL network contract".

    ``base`` is a ``cnn``/``resnet18`` model from ``app.learning.models``: only its
    ``feature_blocks`` and ``feature_dim`` are used (its own ``head`` is not, and is not
    part of this module's state); every task has its own classifier instead.
    """

    base_frozen: torch.Tensor  # a registered buffer (see __init__)

    def __init__(self, base: nn.Module, alpha: int = 1, beta: int = 1):
        super().__init__()
        if not isinstance(base, ConvNet):
            raise ValueError(
                f"CCLL needs a convolutional base with `feature_blocks` (architecture cnn or resnet18); "
                f"got a {type(base).__name__}"
            )
        self.alpha, self.beta = alpha, beta
        self.blocks: nn.ModuleList = base.feature_blocks
        self.feature_dim = int(base.feature_dim)
        self.block_channels = [_block_channels(block, i) for i, block in enumerate(self.blocks)]
        for i, channels in enumerate(self.block_channels):  # fail at construction, not at the first task
            where = f"feature block {i}"
            _groups(channels, alpha, "alpha", where)
            _groups(channels, beta, "beta", where)
        self.calibrations = nn.ModuleDict()  # task_key -> ModuleList (one CalibrationModule per block)
        self.heads = nn.ModuleDict()  # task_key -> Linear(feature_dim, that task's classes)
        # A buffer, so that the frozen state travels with state_dict() / safetensors exports.
        self.register_buffer("base_frozen", torch.tensor(False))

    # ----------------------------------------------------------------------------- tasks
    @property
    def task_keys(self) -> list[str]:
        return list(self.heads.keys())

    def task_classes(self) -> dict[str, int]:
        """Classes of every task's classifier (what ``add_task`` needs to rebuild this network)."""
        return {key: head.out_features for key, head in self.heads.items() if isinstance(head, nn.Linear)}

    def add_task(self, task_key: str, n_classes: int) -> int:
        """Add a task's calibration modules and classifier; return the parameters added.

        The modules start as a copy of the previous task's (the paper's initialisation: the
        new task begins from the last function learnt); the first task's start fresh.
        Adding a second task freezes the base if that has not been done, and every earlier
        task's modules stop requiring gradients: from now on they can only be read.
        """
        if not isinstance(task_key, str) or not task_key or "." in task_key:
            raise ValueError(f"task_key must be a non-empty string without '.', got {task_key!r}")
        if task_key in self.heads:
            raise ValueError(f"task {task_key!r} already has calibration modules")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
        reference = next(self.blocks.parameters())
        if self.heads:
            self.freeze_base()
            for p in list(self.calibrations.parameters()) + list(self.heads.parameters()):
                p.requires_grad_(False)
            calibration = copy.deepcopy(self.calibrations[self.task_keys[-1]])
            for p in calibration.parameters():
                p.requires_grad_(True)
        else:
            calibration = nn.ModuleList(
                CalibrationModule(c, self.alpha, self.beta, f"feature block {i}")
                for i, c in enumerate(self.block_channels)
            )
        calibration = calibration.to(device=reference.device, dtype=reference.dtype)
        head = nn.Linear(self.feature_dim, n_classes).to(device=reference.device, dtype=reference.dtype)
        calibration.train(self.training)
        head.train(self.training)
        self.calibrations[task_key] = calibration
        self.heads[task_key] = head
        return self.parameter_counts()["per_task"][task_key]

    def task_parameters(self, task_key: str) -> list[nn.Parameter]:
        """The parameters only this task uses: its calibration modules and its classifier."""
        self._check_task(task_key)
        return list(self.calibrations[task_key].parameters()) + list(self.heads[task_key].parameters())

    def _check_task(self, task_key: str) -> None:
        if task_key not in self.heads:
            raise KeyError(f"unknown task {task_key!r}; CCLL predicts only for learnt tasks: {self.task_keys}")

    # ------------------------------------------------------------------------------ base
    @property
    def is_base_frozen(self) -> bool:
        return bool(self.base_frozen)

    def freeze_base(self) -> None:
        """Fix the shared base for good: no gradients, BatchNorm statistics in eval mode."""
        self.base_frozen.fill_(True)
        for p in self.blocks.parameters():
            p.requires_grad_(False)
        self.blocks.eval()

    def train(self, mode: bool = True) -> CalibratedNetwork:
        """Like ``nn.Module.train``, but a frozen base stays in eval mode (its BN stats must not move)."""
        super().train(mode)
        if self.is_base_frozen:
            self.blocks.eval()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.is_base_frozen:  # a loaded frozen network is frozen in every respect
            for p in self.blocks.parameters():
                p.requires_grad_(False)
            self.blocks.eval()

    @torch.no_grad()
    def refresh_statistics(self, task_key: str, batches: Iterable[torch.Tensor]) -> None:
        """Recompute the BatchNorm statistics of ``task_key`` exactly, with its final weights.

        Call once a task is trained ("precise BN", as ``torch.optim.swa_utils.update_bn``).
        A CCM normalises pooled channel means, whose spread across samples is tiny next to
        how far they move while the task trains; running averages taken along the way then
        lag so far behind that eval-mode gates differ from the trained ones: without the
        refresh a well-trained task can answer at chance level (docs/benchmarks/measurements.md).
        Only the newest task may be refreshed — an older task's outputs must never change — and the base's own
        BatchNorm (resnet18) is refreshed only while it is not yet frozen.
        """
        self._check_task(task_key)
        if task_key != self.task_keys[-1]:
            raise ValueError(
                f"only the newest task ({self.task_keys[-1]!r}) can refresh its statistics; "
                f"changing task {task_key!r}'s would change its outputs"
            )
        batches = [b for b in batches if len(b) > 1]  # one sample has no batch statistics
        if not batches:
            raise ValueError("refreshing statistics needs at least one batch of two or more samples")
        modules = [self.calibrations[task_key]] + ([] if self.is_base_frozen else [self.blocks])
        norms = [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        was_training = self.training
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: every batch counts equally
        self.train()  # a frozen base stays in eval mode
        for batch in batches:
            self.features(batch, task_key)
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        self.train(was_training)

    # --------------------------------------------------------------------------- forward
    def features(self, x: torch.Tensor, task_key: str) -> torch.Tensor:
        """Blocks, each followed by this task's calibration; then global average pool."""
        self._check_task(task_key)
        calibrations = self.calibrations[task_key]
        assert isinstance(calibrations, nn.ModuleList)  # one CalibrationModule per block (add_task)
        for block, calibration in zip(self.blocks, calibrations, strict=True):
            x = calibration(block(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor, task_key: str) -> torch.Tensor:
        """Logits over ``task_key``'s own classes."""
        features = self.features(x, task_key)  # checks the task first
        return self.heads[task_key](features)

    # ---------------------------------------------------------------------------- counts
    def parameter_counts(self) -> dict:
        """``{"base": shared conv parameters, "per_task": {task_key: calibration + classifier}}``."""
        return {
            "base": _count(self.blocks.parameters()),
            "per_task": {key: _count(self.task_parameters(key)) for key in self.task_keys},
        }
