"""TorchServe custom handler for the digits MLP (packed into the model archive with digits_mlp.py
and the weights by benchmarks/serving.py).

A request's body is ``{"inputs": [[64 floats], ...]}``; the answer is the hand-rolled endpoint's,
``{"label": L, "probability": P}`` for one sample (a list of those for several). With batching on,
TorchServe hands ``handle`` up to batchSize requests at once: they run as one forward pass.
"""

from __future__ import annotations

import json
import sys

import numpy as np


class DigitsHandler:
    def __init__(self):
        self.model = None
        self.initialized = False

    def initialize(self, context) -> None:
        model_dir = context.system_properties["model_dir"]
        if model_dir not in sys.path:
            sys.path.insert(0, model_dir)
        from digits_mlp import DigitsMLP

        self.model = DigitsMLP(model_dir)
        self.initialized = True

    def handle(self, data: list[dict], context) -> list:
        samples = []
        for request in data:
            body = request.get("body") if request.get("body") is not None else request.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            samples.append(np.asarray(body["inputs"], dtype=np.float32).reshape(-1, self.model.n_features))
        labels, probabilities = self.model.predict(np.concatenate(samples))
        answers, start = [], 0
        for rows in samples:
            one = [
                {"label": int(labels[i]), "probability": float(probabilities[i])}
                for i in range(start, start + len(rows))
            ]
            answers.append(one[0] if len(one) == 1 else one)
            start += len(rows)
        return answers


_service = DigitsHandler()


def handle(data, context):
    """The module-level entry TorchServe calls for a custom handler module."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
