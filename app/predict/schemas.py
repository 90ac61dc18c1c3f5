"""Prediction requests and answers: the service's own shape and the Open Inference Protocol v2."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "digits", "inputs": [[0.0, 0.5, 1.0, 0.25]], "top_k": 3},
                {"model": "calibrated", "inputs": [[[[0, 12, 255]]]], "task_id": 4, "version": 2},
            ]
        }
    )

    model: str
    inputs: list[Any] = Field(description="samples in the same form as the uploads: N nested lists of the input shape")
    version: int | None = Field(None, ge=1, description="a version number; default the serving version")
    task_id: int | None = Field(
        None, description="task-aware prediction (restricts to that task's labels); required for ccll"
    )
    top_k: int = Field(1, ge=1, le=1000)


class PredictionOut(BaseModel):
    label: int | str
    probability: float
    top_k: list[tuple[int | str, float]] | None = None
    prediction_id: str | None = Field(
        None, description="the id to send the true label with (POST /feedback); only when the model logs predictions"
    )


class PredictOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "digits",
                    "model_version": 2,
                    "task_id": None,
                    "predictions": [{"label": 7, "probability": 0.93, "top_k": [[7, 0.93], [1, 0.04], [9, 0.01]]}],
                }
            ]
        }
    )

    model: str
    model_version: int
    task_id: int | None
    predictions: list[PredictionOut]


class InferTensor(BaseModel):
    """One output tensor of the Open Inference Protocol v2 (KServe) JSON answer (app/predict/oip.py
    reads and writes the protocol's bodies; these schemas document them)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "digits",
                    "model_version": "2",
                    "id": "req-1",
                    "outputs": [
                        {"name": "label", "shape": [1], "datatype": "INT64", "data": [7]},
                        {"name": "probability", "shape": [1], "datatype": "FP32", "data": [0.93]},
                    ],
                }
            ]
        }
    )

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferTensor]


class ModelMetadataOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "digits",
                    "versions": ["1", "2"],
                    "platform": "pytorch",
                    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
                    "outputs": [
                        {"name": "label", "datatype": "INT64", "shape": [-1]},
                        {"name": "probability", "datatype": "FP32", "shape": [-1]},
                    ],
                }
            ]
        }
    )

    name: str
    versions: list[str]
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
