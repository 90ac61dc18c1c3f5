"""The networks a learner can grow: an MLP, a small CNN and ResNet-18, for any input shape.

Every model ends in ``head: nn.Linear`` over the label vocabulary, so a task that brings new
labels grows the head (``grow_head``) and leaves every old output row exactly as it was.
The default models have no BatchNorm: EWC protects parameters, not running statistics, so a
BatchNorm layer would drift with every task however large λ is (resnet18 keeps its
BatchNorm, as torchvision builds it; see ``app.learning.ewc_penalty``).

The convolutional models expose ``feature_blocks`` / ``features`` / ``feature_dim``, the
hooks CCLL calibrates (``app.learning.calibration``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("mlp", "cnn", "resnet18")


class MLP(nn.Module):
    """Flatten, then ReLU hidden layers (default 2x100), then the head."""

    def __init__(self, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (100, 100)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, int(size)), nn.ReLU()]
            width = int(size)
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvNet(nn.Module):
    """Shared shape of the conv models: blocks, global average pool, head."""

    feature_blocks: nn.ModuleList
    feature_dim: int
    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.feature_blocks:
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(ConvNet):
    """Three 3x3 conv blocks (conv-ReLU-conv-ReLU, max-pool between), no BatchNorm."""

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: Sequence[int] = (32, 64, 128)):
        super().__init__()
        in_channels = input_shape[0]
        blocks = []
        for i, width in enumerate(channels):
            pool = [nn.MaxPool2d(2)] if i > 0 else []
            blocks.append(
                nn.Sequential(
                    *pool,
                    nn.Conv2d(in_channels, width, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(width, width, 3, padding=1),
                    nn.ReLU(),
                )
            )
            in_channels = width
        self.feature_blocks = nn.ModuleList(blocks)
        self.feature_dim = in_channels
        self.head = nn.Linear(in_channels, n_classes)
        # He initialisation: without BatchNorm, PyTorch's default conv init shrinks the signal at
        # every one of the six layers, and SGD then barely moves the net off chance level.
        for module in self.feature_blocks.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class ResNet18(ConvNet):
    """torchvision's ResNet-18 (weights=None: nothing is downloaded) for any channel count.

    The stem takes the input's channels; for small images (< 64 px) it is the CIFAR-style
    3x3 stride-1 conv without max-pool, so 28x28 digits are not reduced to 1x1 too early.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        channels, height = input_shape[0], input_shape[1]
        if height < 64:
            stem = nn.Sequential(nn.Conv2d(channels, 64, 3, 1, 1, bias=False), net.bn1, net.relu)
        else:
            stem = nn.Sequential(nn.Conv2d(channels, 64, 7, 2, 3, bias=False), net.bn1, net.relu, net.maxpool)
        self.feature_blocks = nn.ModuleList([stem, net.layer1, net.layer2, net.layer3, net.layer4])
        self.feature_dim = 512
        self.head = nn.Linear(512, n_classes)


def build_model(architecture: str, input_shape: Sequence[int], n_classes: int, **options) -> nn.Module:
    """A fresh model; ``options`` are the architecture's own (``hidden`` for mlp, ``channels`` for cnn)."""
    input_shape = tuple(int(s) for s in input_shape)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if n_classes < 1:
        raise ValueError("a model needs at least one output class")
    if architecture == "mlp":
        unknown = set(options) - {"hidden"}
        if unknown:
            raise ValueError(f"unknown mlp options {sorted(unknown)}; mlp takes 'hidden' (list of layer sizes)")
        hidden = options.get("hidden", (100, 100))
        if not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ValueError(f"mlp option 'hidden' must be a list of positive integers, got {hidden!r}")
        return MLP(input_shape, n_classes, hidden)
    if len(input_shape) != 3:
        raise ValueError(f"{architecture} needs image inputs (C, H, W); got input shape {input_shape}")
    if architecture == "cnn":
        unknown = set(options) - {"channels"}
        if unknown:
            raise ValueError(f"unknown cnn options {sorted(unknown)}; cnn takes 'channels' (list of widths)")
        return SmallCNN(input_shape, n_classes, options.get("channels", (32, 64, 128)))
    if options:
        raise ValueError(f"resnet18 takes no options, got {sorted(options)}")
    return ResNet18(input_shape, n_classes)


@torch.no_grad()
def widened_linear(old: nn.Linear, n_classes: int) -> nn.Linear | None:
    """A copy of ``old`` with ``n_classes`` outputs, its rows exact and the new ones freshly initialised;
    None when it already has that many (one row copy for every head that grows)."""
    if n_classes < old.out_features:
        raise ValueError("a head can only grow")
    if n_classes == old.out_features:
        return None
    new = nn.Linear(old.in_features, n_classes).to(device=old.weight.device, dtype=old.weight.dtype)
    new.weight[: old.out_features] = old.weight
    new.bias[: old.out_features] = old.bias
    return new


@torch.no_grad()
def grow_head(model: nn.Module, n_classes: int) -> None:
    """Widen ``model.head`` to ``n_classes`` outputs, copying the old rows exactly.

    New rows get the usual Linear initialisation; their Fisher starts at zero (the
    consolidation pads it), so new outputs are free until a task that uses them is learnt.
    A network whose head is not ``model.head`` (a text model's) grows its own the same way.
    """
    own = getattr(model, "grow_head", None)
    if callable(own):
        own(n_classes)
        return
    old = model.head  # an imported model's head is wherever its source put it (``set_head``)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"the model's head is a {type(old).__name__}; only a Linear head can grow")
    new = widened_linear(old, n_classes)
    if new is None:
        return
    set_head = getattr(model, "set_head", None)
    if callable(set_head):
        set_head(new)
    else:
        model.head = new
