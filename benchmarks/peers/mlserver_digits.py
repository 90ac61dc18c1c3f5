"""MLServer custom runtime for the digits MLP (copied into the model folder with digits_mlp.py and
the weights by benchmarks/serving.py; model-settings.json names ``mlserver_digits.DigitsRuntime``).

Input: the first tensor of an Open Inference Protocol request, FP32 [n, 64]; outputs ``label`` INT64
and ``probability`` FP32, [n] each. Adaptive batching (max_batch_size / max_batch_time in
model-settings.json) merges requests along the first axis before ``predict``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

HERE = Path(__file__).resolve().parent


class DigitsRuntime(MLModel):
    async def load(self) -> bool:
        # The inference pool's worker process imports this module without the model folder on its path.
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        from digits_mlp import DigitsMLP

        uri = self.settings.parameters.uri if self.settings.parameters and self.settings.parameters.uri else "."
        self._mlp = DigitsMLP(Path(uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        samples = NumpyCodec.decode_input(payload.inputs[0])
        labels, probabilities = self._mlp.predict(samples)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output("label", labels),
                NumpyCodec.encode_output("probability", probabilities),
            ],
        )
