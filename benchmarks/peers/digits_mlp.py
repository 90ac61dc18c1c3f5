"""The digits MLP that every peer serves, rebuilt in plain torch from the safetensors file that
benchmarks/serving.py exports from retain's serving version (so each peer runs the same weights and
scales its inputs as retain does: ``(x · scale − mean) / std``).

Peers import this from their own virtual environment: it needs only torch, numpy and safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

WEIGHTS = "digits.safetensors"


class DigitsMLP:
    """Linear/ReLU layers as retain's MLP stacks them; `predict` answers labels and probabilities."""

    def __init__(self, directory: str | Path, threads: int = 1):
        torch.set_num_threads(threads)
        path = Path(directory) / WEIGHTS
        tensors = load_file(path)
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata()
        self.input_scale = float(metadata["input_scale"])
        self.labels = np.asarray(json.loads(metadata["labels"]), dtype=np.int64)
        layers: list[torch.nn.Module] = []
        count = int(metadata["layers"])
        for i in range(count):
            weight, bias = tensors[f"layer{i}.weight"], tensors[f"layer{i}.bias"]
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
            linear.load_state_dict({"weight": weight, "bias": bias})
            layers.append(linear)
            if i < count - 1:
                layers.append(torch.nn.ReLU())
        self.network = torch.nn.Sequential(*layers).eval()
        self.n_features = int(tensors["layer0.weight"].shape[1])
        # retain standardizes float inputs per feature with statistics fitted on the first task
        self.mean, self.std = tensors.get("input.mean"), tensors.get("input.std")

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: (n, features) -> labels (n,) int64 and the top probability (n,) float32."""
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(-1, self.n_features))
        with torch.inference_mode():
            inputs = inputs * self.input_scale
            if self.mean is not None:
                inputs = (inputs - self.mean) / self.std
            probabilities = torch.softmax(self.network(inputs), dim=-1)
            probability, index = probabilities.max(dim=-1)
        return self.labels[index.numpy()], probability.numpy()
