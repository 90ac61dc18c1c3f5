"""A task's data as the library sees it: raw samples and raw labels (ints or strings).

Labels stay in the user's vocabulary (``3``, ``"cat"``) at the library boundary; the learner
maps them to output rows. Inputs stay raw too; the learner applies its fixed input scaling.
``as_samples`` is the one check of raw samples against a model's input shape: the learner runs
it on everything it trains on or predicts, and the service on a request before it loads a model.
"""

from __future__ import annotations

import math
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


def as_samples(x, input_shape: Sequence[int]) -> torch.Tensor:
    """Raw samples -> an N x *input_shape float32 tensor, or a ValueError saying what is wrong.

    Takes numpy arrays, tensors and nested lists of numbers. One sample without the batch
    dimension, or samples whose values are laid out flat for an image model (or the reverse),
    are reshaped: the number of values per sample decides, so nothing is guessed.
    """
    input_shape = tuple(map(int, input_shape))
    if isinstance(x, torch.Tensor):
        x = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype != np.float32 and not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"inputs must be numeric, got dtype {x.dtype}")
    else:
        try:
            x = np.asarray(x, dtype=np.float64)
        except (ValueError, TypeError) as error:
            raise ValueError(f"inputs must be nested lists of numbers of one shape: {error}") from error
    if x.ndim == 0 or math.prod(x.shape) == 0:
        raise ValueError("inputs holds no samples")
    if tuple(x.shape[1:]) != input_shape:
        if tuple(x.shape) == input_shape:
            x = x.reshape(1, *input_shape)  # one sample
        elif x.ndim >= 2 and math.prod(x.shape[1:]) == math.prod(input_shape):
            x = x.reshape(len(x), *input_shape)
        else:
            raise ValueError(
                f"each sample must have shape {list(input_shape)}; got samples of shape {list(x.shape[1:])}"
            )
    if isinstance(x, np.ndarray):
        # checked and converted in numpy: on the small batches of serving, torch's per-op dispatch
        # cost several times the work itself
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            with np.errstate(over="ignore"):  # past float32's range is infinite, refused just below
                x = np.ascontiguousarray(x, dtype=np.float32)
        if not x.flags.writeable:
            x = x.copy()  # torch warns on (and must not write through) read-only arrays
        if not np.isfinite(x).all():
            raise ValueError("inputs hold non-finite values (NaN or infinity)")
        return torch.from_numpy(x)
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("inputs hold non-finite values (NaN or infinity)")
    return x
