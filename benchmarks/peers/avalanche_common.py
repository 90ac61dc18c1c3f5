"""What the Avalanche peers share: the strategies as retain's update trains, the head, the streams, accuracy.

Avalanche (avalanche-lib, the reference continual-learning library) runs in its own environment,
``bash benchmarks/peers/setup.sh avalanche``, layered on retain's: the peer scripts import retain's
benchmark code for the same data split and the same pretrained model, so both libraries start from
the same weights.

* The head: the pretrained classifier becomes an ``avalanche.models.IncrementalClassifier`` with the
  pretrained rows copied and their units marked active. Avalanche grows it when an experience brings
  new classes, old rows exact and new rows at ``nn.Linear``'s initialisation: what retain's
  ``widened_linear`` does. Its masking (units of classes not seen yet answer -1000) is Avalanche's
  default and is kept.
* The base task: retain's import records the base data as task 0 without training on it (Fisher,
  replay memory). Here it is experience 0, "trained" for 0 epochs: the strategy's after-experience
  step still runs, so EWC computes its importances at the pretrained weights and Replay fills its
  buffer with base samples.
* BatchNorm: retain freezes an imported model's BatchNorm statistics by default
  (``freeze_batchnorm``); Avalanche trains them. Both are run (``batchnorm`` = ``frozen`` | ``train``).
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from collections.abc import Sequence

import torch
from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import ClassificationDataset
from avalanche.models import IncrementalClassifier
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.supervised import EWC, Naive, Replay
from torch import nn

STRATEGIES = ("naive", "ewc", "replay")
# Avalanche 0.6's own notices, once per experience: its Replay plugin calls a storage method it
# deprecated, and an EvaluationPlugin without loggers (these runs time the training bare) warns.
warnings.filterwarnings("ignore", message="Call to deprecated function update", category=DeprecationWarning)
warnings.filterwarnings("ignore", message="No loggers specified")


class FrozenBatchNorm(nn.Module):
    """The network with its BatchNorm layers kept in eval mode while it trains, as retain's imported
    networks are: the statistics stay those of the pretrained model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> FrozenBatchNorm:
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def incremental_head(old: nn.Linear) -> IncrementalClassifier:
    """An IncrementalClassifier holding ``old``'s rows, its classes active (the pretrained ones)."""
    head = IncrementalClassifier(old.in_features, initial_out_features=old.out_features)
    with torch.no_grad():
        head.classifier.weight.copy_(old.weight)
        head.classifier.bias.copy_(old.bias)
        head.active_units[:] = 1
    return head


def classification_dataset(x: torch.Tensor, y: Sequence[int]) -> ClassificationDataset:
    """Tensors as an Avalanche classification dataset (targets and task label 0 on every sample)."""
    targets = [int(v) for v in y]
    data = torch.utils.data.TensorDataset(x, torch.tensor(targets))
    return ClassificationDataset(
        [data],
        data_attributes=[
            DataAttribute(targets, "targets"),
            DataAttribute([0] * len(targets), "targets_task_labels", use_in_getitem=True),
        ],
    )


def stream(train: ClassificationDataset, test: ClassificationDataset, classes_per_experience: list[int]):
    """Class-incremental experiences in label order: experience k holds the next ``classes_per_experience[k]``."""
    return class_incremental_benchmark(
        {"train": train, "test": test},
        class_order=list(range(sum(classes_per_experience))),
        num_classes_per_exp=classes_per_experience,
    )


def add_replay_batch_argument(parser) -> None:
    parser.add_argument(
        "--replay-batch",
        choices=("retain", "avalanche"),
        default="retain",
        help="retain: Replay's batch is retain's, --batch-size samples in all, half of them replayed "
        "(TrainConfig.replay_batch_size); avalanche: Avalanche's Replay as shipped, --batch-size new samples "
        "and as many replayed, twice the batch",
    )


def strategy(name: str, model: nn.Module, optimizer, args, epochs: int):
    """Avalanche's Naive, EWC or Replay with retain's update settings, no loggers or metrics (timed bare)."""
    common = dict(
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=args.batch_size,
        train_epochs=epochs,
        eval_mb_size=256,
        device="cpu",
        evaluator=EvaluationPlugin(loggers=[]),
    )
    if name == "naive":
        return Naive(model=model, optimizer=optimizer, **common)
    if name == "ewc":
        return EWC(model=model, optimizer=optimizer, ewc_lambda=args.ewc_lambda, **common)
    if name == "replay" and args.replay_batch == "avalanche":
        return Replay(model=model, optimizer=optimizer, mem_size=args.memory_size, **common)
    if name == "replay":  # Replay's own plugin, with retain's batch
        replayed = args.batch_size // 2
        plugin = ReplayPlugin(mem_size=args.memory_size, batch_size=args.batch_size - replayed, batch_size_mem=replayed)
        return Naive(model=model, optimizer=optimizer, plugins=[plugin], **common)
    raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: Sequence[int], batch_size: int = 256) -> float:
    """Top-1 over every output of the head (all classes, class-incremental)."""
    model.eval()
    targets = torch.tensor([int(v) for v in y])
    correct = 0
    for start in range(0, len(targets), batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(1) == targets[start : start + batch_size]).sum())
    return correct / len(targets)


def timed_train(learner, experience) -> float:
    started = time.perf_counter()
    learner.train(experience, eval_streams=[])
    return time.perf_counter() - started


def machine() -> dict:
    import avalanche

    return {
        "avalanche": avalanche.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }
