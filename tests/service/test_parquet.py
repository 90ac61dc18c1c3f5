"""Parquet through the API and a real worker: numeric feature columns, and an image column stored as
Hugging Face datasets store it ({"bytes", "path"} structs, ClassLabel names in the schema metadata).
Bad tables are 4xx answers naming the column, and nothing is stored."""

import json

import numpy as np
import pyarrow as pa
import pytest
from data_files import FORM, digits, encode, flat, parquet_bytes, stored


def post(client, data: bytes, model="tab", **fields):
    return client.post("/tasks", data={"model": model, **FORM, **fields}, files={"file": ("t.parquet", data)})


def numeric_columns(samples) -> dict:
    x = flat(samples).reshape(len(samples), -1).astype(np.float32) / 255
    return {**{f"px{j}": x[:, j] for j in range(x.shape[1])}, "label": [label for label, _ in samples]}


def test_numeric_columns_are_taught_and_predicted(client, settings, run_worker_once):
    answer = post(client, parquet_bytes(numeric_columns(digits((0, 1), per_class=40))))
    assert answer.status_code == 202, answer.text
    dataset = answer.json()["dataset"]
    assert (dataset["format"], dataset["input_shape"], dataset["labels"]) == ("parquet", [64], [0, 1])
    run_worker_once()
    assert client.get(f"/jobs/{answer.json()['job_id']}").json()["status"] == "succeeded"

    unseen = digits((0, 1), per_class=10, offset=60)
    inputs = (flat(unseen).reshape(20, -1) / 255).tolist()
    predictions = client.post("/predict", json={"model": "tab", "inputs": inputs}).json()["predictions"]
    assert sum(p["label"] == label for p, (label, _) in zip(predictions, unseen, strict=True)) >= 16


def hf_image_table(samples, names=("zero", "one")) -> bytes:
    """As `datasets.Dataset.to_parquet` writes an Image() column and a ClassLabel label."""
    features = {"image": {"_type": "Image"}, "label": {"names": list(names), "_type": "ClassLabel"}}
    return parquet_bytes(
        {
            "image": [{"bytes": encode(image), "path": f"{i}.png"} for i, (_, image) in enumerate(samples)],
            "label": np.asarray([label for label, _ in samples], dtype=np.int64),
        },
        metadata={b"huggingface": json.dumps({"info": {"features": features}}).encode()},
    )


def test_hugging_face_image_column_is_decoded_with_class_names(client, settings, run_worker_once):
    answer = post(client, hf_image_table(digits((0, 1), per_class=40)), model="hf")
    assert answer.status_code == 202, answer.text
    dataset = answer.json()["dataset"]
    assert dataset["input_shape"] == [1, 8, 8] and dataset["labels"] == ["one", "zero"]
    run_worker_once()
    assert client.get(f"/jobs/{answer.json()['job_id']}").json()["status"] == "succeeded"
    unseen = digits((0, 1), per_class=10, offset=60)
    predictions = client.post("/predict", json={"model": "hf", "inputs": [im[None].tolist() for _, im in unseen]})
    names = {0: "zero", 1: "one"}
    assert (
        sum(p["label"] == names[label] for p, (label, _) in zip(predictions.json()["predictions"], unseen, strict=True))
        >= 16
    )


HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TWO = digits((0, 1), per_class=10)
LABELS = [label for label, _ in TWO]
GOOD_FEATURES = {"a": np.linspace(0, 1, 20), "b": np.arange(20.0)}
BAD = {
    "missing label column": ({**GOOD_FEATURES, "target": LABELS}, 422, ["'label' column", "target"]),
    "non-numeric features": ({**GOOD_FEATURES, "colour": ["red"] * 20, "label": LABELS}, 422, ["'colour'", "string"]),
    "missing feature values": ({"a": [None] + [1.0] * 19, "label": LABELS}, 422, ["'a'", "missing"]),
    "infinite feature": ({"a": [np.inf] + [1.0] * 19, "label": LABELS}, 422, ["'a'", "infinite"]),
    "no features": ({"label": LABELS}, 422, ["no feature columns"]),
    "regression target": ({**GOOD_FEATURES, "label": np.linspace(0, 1, 20)}, 422, ["non-integer"]),
    "corrupt image bytes": (
        {"image": [{"bytes": b"\x89PNG broken", "path": "x.png"}] * 20, "label": LABELS},
        422,
        ["row 0 of column 'image'", "corrupt"],
    ),
    "image by path only": (
        {"image": pa.array([{"bytes": None, "path": "/etc/passwd"}] * 20, type=HF_IMAGE), "label": LABELS},
        422,
        ["row 0", "'/etc/passwd'", "never opened"],
    ),
    "image and features": (
        {"image": [{"bytes": encode(im), "path": None} for _, im in TWO], "a": np.ones(20), "label": LABELS},
        422,
        ["'image'", "other feature columns"],
    ),
    "mixed image sizes": (
        {"image": [encode(im if i else np.pad(im, 1)) for i, (_, im) in enumerate(TWO)], "label": LABELS},
        422,
        ["10x10", "8x8"],
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_tables_are_refused_naming_the_column_and_nothing_is_stored(client, database_url, settings, case):
    columns, status, words = BAD[case]
    before = stored(database_url, settings.artifact_uri)
    answer = post(client, parquet_bytes(columns))
    assert answer.status_code == status, answer.text
    assert all(word in answer.json()["detail"] for word in words), answer.json()["detail"]
    assert stored(database_url, settings.artifact_uri) == before


@pytest.fixture
def small_client(settings, api_client):
    """The API with a 50 kB upload limit, so the decoded-size limit is its floor: 1 MiB."""
    with api_client(settings.model_copy(update={"max_upload_bytes": 50_000})) as test_client:
        yield test_client


def test_rows_and_decoded_sizes_are_limited_before_the_data_is_held(client, small_client, database_url, settings):
    before = stored(database_url, settings.artifact_uri)
    rows = settings.max_upload_samples + 1
    answer = post(client, parquet_bytes({"a": np.zeros(rows, dtype=np.float32), "label": np.arange(rows) % 2}))
    assert answer.status_code == 413 and f"the limit is {settings.max_upload_samples}" in answer.json()["detail"]

    # 2000 x 150 float32 features (1.2 MB) from a file of a few kB: refused from its shape, before reading
    wide = parquet_bytes({**{f"c{j}": np.zeros(2000) for j in range(150)}, "label": np.arange(2000) % 2})
    assert len(wide) < 50_000
    answer = post(small_client, wide)
    assert answer.status_code == 413 and "2000 rows of 150 features" in answer.json()["detail"], answer.text

    # one 100 kB label repeated on every row: dictionary-encoded it is tiny, decoded 200 MB
    bomb = parquet_bytes({"a": np.zeros(2000), "label": ["x" * 100_000] * 2000})
    assert len(bomb) < 50_000
    answer = post(small_client, bomb)
    assert answer.status_code == 413 and "column 'label' decodes to more than" in answer.json()["detail"], answer.text
    assert stored(database_url, settings.artifact_uri) == before


def test_damaged_parquet_is_refused(client, database_url, settings):
    data = parquet_bytes({"a": np.arange(20.0), "label": LABELS})
    broken = data[:4] + b"\x00" * 30 + data[34:]
    answer = post(client, broken)
    assert answer.status_code in (415, 422) and answer.json()["detail"], answer.text


def test_a_cut_off_parquet_file_is_named_as_such(client):
    data = parquet_bytes({"a": np.arange(20.0), "label": LABELS})
    answer = post(client, data[: len(data) // 2])
    assert answer.status_code == 415 and "not a whole Parquet file" in answer.json()["detail"], answer.text
