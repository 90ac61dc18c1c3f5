"""A task's data as the library sees it: raw samples and raw labels (ints or strings).

Labels stay in the user's vocabulary (``3``, ``"cat"``) at the library boundary; the learner
maps them to output rows. Inputs stay raw too; the learner applies its fixed input scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

Label = int | str


@dataclass
class TaskData:
    x: np.ndarray | torch.Tensor  # N x *input_shape, any real dtype
    y: Sequence[Label] | np.ndarray | torch.Tensor  # N raw labels

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)


def plain_label(label) -> Label:
    """A JSON-safe label: numpy/torch integers become ``int``, strings ``str``; anything else is refused."""
    if isinstance(label, torch.Tensor):
        label = label.item()
    if isinstance(label, (bool, np.bool_)):
        raise ValueError(f"labels must be integers or strings, got the boolean {label!r}")
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, (str, np.str_)):
        return str(label)
    if isinstance(label, (float, np.floating)) and float(label).is_integer():
        return int(label)
    raise ValueError(f"labels must be integers or strings, got {label!r}")


def plain_labels(y) -> list[Label]:
    if isinstance(y, (np.ndarray, torch.Tensor)):
        y = y.tolist()
    return [plain_label(label) for label in y]


def unique_in_order(labels: Sequence[Label]) -> list[Label]:
    """Distinct labels, sorted when they are all of one kind (stable vocabularies across runs)."""
    distinct = set(labels)
    try:
        return sorted(distinct)
    except TypeError:  # ints and strings mixed
        return sorted(distinct, key=lambda label: (isinstance(label, str), str(label)))
