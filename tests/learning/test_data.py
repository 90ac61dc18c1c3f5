"""``as_samples``: the one check of raw samples against an input shape (learner and service alike)."""

import numpy as np
import pytest
import torch

from app.learning.data import as_samples


def test_lists_arrays_and_tensors_become_float_samples():
    for raw in ([[0, 1, 2, 3]], np.arange(4, dtype=np.uint8)[None], torch.arange(4)[None]):
        x = as_samples(raw, (4,))
        assert x.dtype == torch.float32 and x.tolist() == [[0.0, 1.0, 2.0, 3.0]]


def test_one_sample_and_flat_layouts_are_reshaped_by_their_number_of_values():
    assert as_samples([1.0, 2.0, 3.0, 4.0], (4,)).shape == (1, 4)  # one sample, no batch dimension
    assert as_samples(np.zeros((3, 1, 2, 2)), (1, 2, 2)).shape == (3, 1, 2, 2)
    assert as_samples(np.zeros((3, 4)), (1, 2, 2)).shape == (3, 1, 2, 2)  # flat samples for an image model
    assert as_samples(np.zeros((3, 1, 2, 2)), (4,)).shape == (3, 4)  # and the reverse
    assert as_samples(np.zeros((3, 2, 2)), (3, 2, 2)).shape == (1, 3, 2, 2)  # one multi-channel image


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (np.zeros((2, 5)), "shape"),
        ([[1.0, 2.0], [3.0]], "nested lists of numbers"),
        (np.array([["a", "b"]]), "numeric"),
        ([], "no samples"),
        ([[np.nan, 0.0]], "NaN"),
        ([[1e300, 0.0]], "NaN"),  # finite as float64, infinite as the float32 the model computes in
    ],
)
def test_what_a_model_cannot_read_is_refused_saying_why(raw, message):
    with pytest.raises(ValueError, match=message):
        as_samples(raw, (2,))
