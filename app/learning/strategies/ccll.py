"""CCLL (Singh et al. 2020): a conv base frozen after the first task, recalibrated per task.

Every task owns spatial and channel-wise calibration modules after each conv block and its
own classifier (``app.learning.calibration``). The first task trains the base together with
its modules; later tasks train only their own, so nothing an old task uses ever changes: CCLL
does not forget, and it needs the task at prediction time (outputs are per task). There is no
penalty and no Fisher; after training, the task's BatchNorm statistics are recomputed with its
final weights ("precise BN", ``CalibratedNetwork.refresh_statistics``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from app.learning.calibration import CalibratedNetwork
from app.learning.config import TrainConfig
from app.learning.strategies.base import Learner, Strategy, register


@register
class CCLL(Strategy):
    """Calibrating CNNs for Lifelong Learning; defines the ``ccll`` family."""

    name = family = "ccll"
    architectures = ("cnn", "resnet18")
    architecture_note = "it calibrates conv blocks"
    options = ("alpha", "beta")  # channels per group of the spatial / channel-wise calibration
    predicts_per_task = True

    def network_from(self, base: nn.Module, options: dict) -> nn.Module:
        return CalibratedNetwork(base, **options)

    def rebuild_network(self, learner: Learner) -> None:
        learner.build_network(n_classes=1)
        for key in learner.task_keys:
            learner.network.add_task(key, len(learner.task_labels[key]))

    def prepare(self, learner: Learner, task_key: str, task_labels: list) -> int:
        """Add the task's calibration modules and classifier (a second task freezes the base)."""
        if learner.network is None:
            learner.build_network(n_classes=1)
        return learner.network.add_task(task_key, len(task_labels))

    def trainable_parameters(self, learner: Learner, network: nn.Module, task_key: str) -> list[nn.Parameter]:
        """The first task trains the base with its modules; every later one only its own modules."""
        first_task = not learner.task_keys
        parameters = network.parameters() if first_task else calibrated(network).task_parameters(task_key)
        return [p for p in parameters if p.requires_grad]

    def train_forward(self, network: nn.Module, task_key: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: network(x, task_key)

    def consolidate(
        self,
        learner: Learner,
        task_key: str,
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> dict:
        learner.network.refresh_statistics(task_key, x.split(config.batch_size))
        return {}

    def logits(self, learner: Learner, network: nn.Module, x: torch.Tensor, task_key: str | None) -> torch.Tensor:
        return network(x, task_key)

    def parameter_counts(self, network: nn.Module) -> dict:
        return {**calibrated(network).parameter_counts(), "total": sum(p.numel() for p in network.parameters())}


def calibrated(network: nn.Module) -> CalibratedNetwork:
    """The network a CCLL learner holds (`network_from` builds it; the hooks are handed it as a Module)."""
    if not isinstance(network, CalibratedNetwork):
        raise TypeError(f"a ccll model's network is a CalibratedNetwork; got a {type(network).__name__}")
    return network
