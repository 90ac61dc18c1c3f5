"""The digits MLP as a KServe custom model on KServe's ModelServer, answering the V2 (Open
Inference Protocol) REST API: ``python kserve_server.py WEIGHTS_DIR HTTP_PORT GRPC_PORT``.

Input: the first tensor of the request, FP32 [n, 64]; outputs ``label`` INT64 and ``probability``
FP32, [n] each.
"""

from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits_mlp import DigitsMLP
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Digits(Model):
    def __init__(self, name: str, weights: str):
        super().__init__(name)
        self.weights = weights
        self.mlp: DigitsMLP | None = None
        self.load()

    def load(self) -> bool:
        self.mlp = DigitsMLP(self.weights)
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        labels, probabilities = self.mlp.predict(payload.inputs[0].as_numpy())
        label = InferOutput(name="label", shape=list(labels.shape), datatype="INT64")
        label.set_data_from_numpy(labels, binary_data=False)
        probability = InferOutput(name="probability", shape=list(probabilities.shape), datatype="FP32")
        probability.set_data_from_numpy(probabilities, binary_data=False)
        return InferResponse(
            model_name=self.name, response_id=payload.id or str(uuid.uuid4()), infer_outputs=[label, probability]
        )


def main() -> None:
    weights, http_port, grpc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # No log line per request, as retain runs (--no-access-log): latency logging off, and the
    # access and trace loggers that ModelServer configures held to warnings.
    server = ModelServer(
        http_port=http_port, grpc_port=grpc_port, enable_grpc=False, workers=1, enable_latency_logging=False
    )
    for logger in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    server.start([Digits("digits", weights)])


if __name__ == "__main__":
    main()
