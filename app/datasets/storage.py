"""Parsed datasets as safetensors artifacts: what POST /tasks stores and the worker reads back.

The raw upload is never kept: only the checked arrays of each split (samples as
uploaded, labels as indices) plus the label vocabulary in the header metadata. The
worker turns them back into ``TaskData`` with the user's own labels.

Once a task is learnt, later updates need only its validation and test splits (λ search, the
forgetting gate and the accuracy table), never its training data: ``evaluation_payload`` is the
same payload with the training split emptied, stored once per task and read instead of the
whole dataset (``app.registry.consolidation``).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from app.datasets.parsing import SPLITS, ParsedDataset
from app.datasets.text import TextSamples
from app.learning import TaskData
from app.learning.state import from_safetensors_bytes, to_safetensors_bytes

FORMAT = "retain-dataset/1"


def dataset_to_bytes(dataset: ParsedDataset) -> bytes:
    tensors = {}
    for name in SPLITS:
        split = dataset.splits[name]
        if isinstance(split.x, TextSamples):  # UTF-8 bytes and offsets: plain tensors, nothing to unpickle
            tensors[f"{name}.text_bytes"] = torch.from_numpy(split.x.data.copy())
            tensors[f"{name}.text_offsets"] = torch.from_numpy(split.x.offsets)
        else:
            tensors[f"{name}.x"] = torch.from_numpy(np.ascontiguousarray(split.x))
        tensors[f"{name}.label_index"] = torch.from_numpy(np.ascontiguousarray(split.label_index, dtype=np.int64))
    metadata = {
        "retain": json.dumps(
            {
                "format": FORMAT,
                "source_format": dataset.format,
                "source_sha256": dataset.sha256,
                "input_shape": list(dataset.input_shape),
                "labels": dataset.labels,
            }
        )
    }
    return to_safetensors_bytes(tensors, metadata)


def splits_from_bytes(data: bytes) -> dict[str, TaskData]:
    """``{"train", "validation", "test"}`` -> TaskData with raw samples and the user's labels."""
    tensors, metadata = from_safetensors_bytes(data)
    meta = json.loads(metadata.get("retain", "{}"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} payload")
    labels = meta["labels"]
    splits = {}
    for name in SPLITS:
        if f"{name}.text_bytes" in tensors:  # texts: the learner tokenizes them with the model's tokenizer
            x = TextSamples(tensors[f"{name}.text_bytes"].numpy(), tensors[f"{name}.text_offsets"].numpy()).tolist()
        else:
            x = tensors[f"{name}.x"].numpy()
        y = [labels[i] for i in tensors[f"{name}.label_index"].tolist()]
        splits[name] = TaskData(x=x, y=y)
    return splits


def store_dataset(store, dataset: ParsedDataset):
    """Write the parsed splits to the artifact store; returns the store's reference (uri, sha256, size)."""
    return store.put(dataset_to_bytes(dataset))


def load_dataset_splits(store, uri: str, sha256: str | None = None) -> dict[str, TaskData]:
    """The stored splits of one dataset row (``datasets.artifact_uri``), verified against its sha256."""
    return splits_from_bytes(store.get(uri, sha256) if sha256 is not None else store.get(uri))


def evaluation_payload(data: bytes) -> bytes:
    """A stored dataset's payload without its training samples (an empty train split), readable
    by ``splits_from_bytes`` like any other."""
    tensors, metadata = from_safetensors_bytes(data)
    for name in ("train.x", "train.label_index", "train.text_bytes"):
        if name in tensors:
            tensors[name] = tensors[name][:0]
    if "train.text_offsets" in tensors:
        tensors["train.text_offsets"] = tensors["train.text_offsets"][:1]
    return to_safetensors_bytes(tensors, metadata)
