"""The digits MLP behind Triton through PyTriton, with dynamic batching, as PyTriton's docs bind a
Python function: ``python pytriton_server.py WEIGHTS_DIR HTTP_PORT GRPC_PORT METRICS_PORT``.

Input ``input-0`` FP32 [64] per sample; outputs ``label`` INT64 and ``probability`` FP32, [1] each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits_mlp import DigitsMLP
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    weights, http_port, grpc_port, metrics_port = sys.argv[1], *map(int, sys.argv[2:5])
    model = DigitsMLP(weights)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        labels, probabilities = model.predict(inputs["input-0"])
        return {"label": labels.reshape(-1, 1), "probability": probabilities.reshape(-1, 1)}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="digits",
            infer_func=infer,
            inputs=[Tensor(name="input-0", dtype=np.float32, shape=(model.n_features,))],
            outputs=[
                Tensor(name="label", dtype=np.int64, shape=(1,)),
                Tensor(name="probability", dtype=np.float32, shape=(1,)),
            ],
            config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=1000)),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
