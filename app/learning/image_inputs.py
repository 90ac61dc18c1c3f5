"""How an imported model's inputs are prepared: part of the model record, applied the same way
in training, evaluation and serving (``ContinualLearner._inputs`` is the one place inputs pass).

Images sent as uint8 are scaled to [0, 1] first (torchvision's convention, and retain's own
``input_scale``), then resized when, and only when, ``resize`` is set (never silently), then
standardised channel by channel with ``mean`` / ``std`` (the weights' own statistics: given by
the user, or defaulted from the timm / Hugging Face preprocessor configuration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize (optional) and per-channel standardisation of already scaled float inputs."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: tuple[int, int] | None = None

    @classmethod
    def from_options(cls, options: dict | None, input_shape: Sequence[int]) -> ImagePreprocessing:
        """From a model's options (``mean``, ``std``, ``resize``), checked against the input shape."""
        options = dict(options or {})
        mean, std, resize = options.get("mean"), options.get("std"), options.get("resize")
        channels = int(input_shape[0]) if len(input_shape) == 3 else None
        for name, values in (("mean", mean), ("std", std)):
            if values is None:
                continue
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(f"{name} must be a list of numbers, one per channel, got {values!r}")
            if channels is None or len(values) != channels:
                raise ValueError(f"{name} needs one value per channel of image inputs {tuple(input_shape)}")
        if (mean is None) != (std is None):
            raise ValueError("give mean and std together")
        if std is not None and not all(v > 0 for v in std):
            raise ValueError(f"std must be positive, got {std!r}")
        if resize is not None:
            if isinstance(resize, int):
                resize = [resize, resize]
            if not (isinstance(resize, (list, tuple)) and len(resize) == 2 and all(isinstance(v, int) for v in resize)):
                raise ValueError(f"resize must be [height, width] (or one size), got {resize!r}")
            if channels is None or min(resize) < 1:
                raise ValueError("resize applies to image inputs (C, H, W) and needs positive sizes")
        return cls(
            mean=tuple(float(v) for v in mean) if mean is not None else None,
            std=tuple(float(v) for v in std) if std is not None else None,
            resize=(int(resize[0]), int(resize[1])) if resize is not None else None,
        )

    @property
    def is_identity(self) -> bool:
        return self.mean is None and self.resize is None

    def model_input_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape the network sees (after ``resize``)."""
        shape = tuple(int(s) for s in input_shape)
        return (shape[0], *self.resize) if self.resize is not None else shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: a batch of scaled float samples."""
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False, antialias=True)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def as_dict(self) -> dict:
        return {key: list(value) for key, value in asdict(self).items() if value is not None}
