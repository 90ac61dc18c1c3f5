"""Safetensors (de)serialisation: the only format artifacts are written in (never pickle)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load as _load_bytes
from safetensors.torch import save as _save_bytes


def to_safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Serialise tensors (moved to cpu, made contiguous) with string metadata in the header."""
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return _save_bytes(cpu, metadata=metadata)


def from_safetensors_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Inverse of ``to_safetensors_bytes``; raises ``ValueError`` on anything but safetensors."""
    if len(data) < 8:
        raise ValueError("not a safetensors payload (too short)")
    header_size = int.from_bytes(data[:8], "little")
    if header_size <= 0 or 8 + header_size > len(data):
        raise ValueError("not a safetensors payload (bad header size)")
    try:
        header = json.loads(data[8 : 8 + header_size])
        tensors = _load_bytes(data)
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(f"not a valid safetensors payload: {error}") from error
    return tensors, dict(header.get("__metadata__") or {})
