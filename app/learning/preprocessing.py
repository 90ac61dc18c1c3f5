"""How raw samples become network inputs: the one place a learner scales its inputs.

``InputScaling`` is ``(x · scale − mean) / std``, per feature of a vector (per channel of an
image), fixed once and then applied to
every input of the model alike: training, validation, the λ search, the Fisher estimate, the
rehearsal memory, serving and OIP (all go through ``ContinualLearner._inputs``). ``scale`` is
1/255 for models whose first task was sent as uint8 (images), 1 otherwise. ``mean``/``std`` are
set by ``fit`` on the model's first task when ``standardize`` is on and that task is not uint8:
SGD at the default learning rate diverges or stalls on raw features in the hundreds (prices,
counts, pixel values sent as floats), and per-feature standardization is what puts them on the
scale the defaults are tuned for. A feature constant over the first task (std 0, or within float
rounding of it) is left as it is: there is no spread to divide by. Later tasks keep the first
task's statistics, so the EWC anchors and the rehearsal memory stay meaningful.

A model whose preprocessing is declared (an imported pretrained network with its own mean and
std) builds its ``InputScaling`` with those values and ``standardize=False``: ``fit`` then
changes nothing. The statistics travel with the weights (``preprocessing.mean`` /
``preprocessing.std`` in the weights payload), so every copy of a version scales identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

PREFIX = "preprocessing."
CONSTANT_TOLERANCE = 1e-6  # a feature whose std is below this share of (1 + |mean|) counts as constant


def is_uint8(x) -> bool:
    """Whether raw samples were sent as uint8 (images): they are scaled by 1/255, never standardized."""
    if isinstance(x, torch.Tensor):
        return x.dtype == torch.uint8
    return isinstance(x, np.ndarray) and x.dtype == np.uint8


@dataclass
class InputScaling:
    """Raw samples -> network inputs: ``(x · scale − mean) / std`` (mean/std per feature, when set)."""

    scale: float = 1.0
    standardize: bool = False  # fit mean/std on the first task (float inputs only)
    mean: torch.Tensor | None = field(default=None, repr=False)  # (D,) or (C, 1, 1), float32
    std: torch.Tensor | None = field(default=None, repr=False)  # the same shape; 1 on constant features

    @property
    def standardized(self) -> bool:
        return self.mean is not None

    def fit(self, raw, samples: torch.Tensor) -> None:
        """Fix mean/std from the first task: ``raw`` as sent (its dtype decides), ``samples`` its
        checked float tensor (``as_samples``). Nothing when standardization is off or the task is uint8."""
        self.mean = self.std = None
        if not self.standardize or is_uint8(raw) or len(samples) == 0:
            return
        values = samples.detach().to("cpu", torch.float64) * self.scale
        # vectors per feature; images per channel (the statistics broadcast over height and width)
        dims = (0,) if values.ndim == 2 else (0, *range(2, values.ndim))
        mean = values.mean(dim=dims, keepdim=True)[0]
        std = values.std(dim=dims, unbiased=False, keepdim=True)[0]
        constant = std <= CONSTANT_TOLERANCE * (1 + mean.abs())
        self.mean = torch.where(constant, torch.zeros_like(mean), mean).to(torch.float32)
        self.std = torch.where(constant, torch.ones_like(std), std).to(torch.float32)

    def __call__(self, samples: torch.Tensor) -> torch.Tensor:
        """Checked float samples (already on their device) -> what the network takes."""
        x = samples * self.scale if self.scale != 1.0 else samples
        if self.mean is None or self.std is None:
            return x
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return (x - self.mean) / self.std

    # ----------------------------------------------------------------------- state
    def metadata(self) -> dict:
        return {"scale": self.scale, "standardize": self.standardize, "standardized": self.standardized}

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.mean is None or self.std is None:
            return {}
        return {f"{PREFIX}mean": self.mean.detach().cpu(), f"{PREFIX}std": self.std.detach().cpu()}

    @classmethod
    def from_state(cls, metadata: dict, tensors: dict[str, torch.Tensor], input_scale: float) -> InputScaling:
        """Inverse of ``metadata``/``tensors``; exports written before standardization carry only
        ``input_scale`` (no metadata): they scale as they always did."""
        scaling = cls(scale=float(metadata.get("scale", input_scale)), standardize=bool(metadata.get("standardize")))
        if f"{PREFIX}mean" in tensors:
            scaling.mean = tensors[f"{PREFIX}mean"].to(torch.float32)
            scaling.std = tensors[f"{PREFIX}std"].to(torch.float32)
        return scaling
