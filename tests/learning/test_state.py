import pytest
import torch

from app.learning.state import from_safetensors_bytes, to_safetensors_bytes


def test_round_trip_is_bit_exact():
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    data = to_safetensors_bytes(tensors, {"note": "x"})
    loaded, metadata = from_safetensors_bytes(data)
    assert metadata == {"note": "x"}
    assert all(torch.equal(tensors[k], loaded[k]) for k in tensors)


@pytest.mark.parametrize("payload", [b"", b"\x00" * 3, b"\xff" * 16, b"not safetensors at all, really"])
def test_anything_else_is_refused(payload):
    with pytest.raises(ValueError):
        from_safetensors_bytes(payload)
