"""Text datasets: a ``text`` and a ``label`` column as CSV, JSON Lines or Parquet, parsed with limits as
rows arrive and stored as UTF-8 bytes and offsets (no pickle); a text file for a numeric model (and a
new built-in model) is a 422 naming both kinds of input, and nothing is stored."""

import csv
import io
import json

import pytest
from data_files import FORM, digits, flat, parquet_bytes, stored
from safetensors.torch import load

from app.datasets.parsing import parse_dataset
from app.datasets.storage import dataset_to_bytes, evaluation_payload, splits_from_bytes
from app.datasets.text import TextSamples
from app.errors import InvalidInput, PayloadTooLarge
from app.learning.text_source import TEXT_INPUT_SHAPE

ROWS = [(f'the cat sat on mat {i}, "quoted"\nand a second line é', "cat") for i in range(15)] + [
    (f"shares fell by {i} percent", "money") for i in range(15)
]
LIMITS = dict(max_bytes=1_000_000, max_samples=1000, test_fraction=0.2, validation_fraction=0.2, seed=0)


def csv_bytes(rows, header=("text", "label")) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def jsonl_bytes(rows) -> bytes:
    return "\n".join(json.dumps({"text": text, "label": label}) for text, label in rows).encode()


def text_parquet(rows) -> bytes:
    return parquet_bytes({"text": [text for text, _ in rows], "label": [label for _, label in rows]})


FORMATS = {"csv": ("t.csv", csv_bytes), "jsonl": ("t.jsonl", jsonl_bytes), "parquet": ("t.parquet", text_parquet)}


@pytest.mark.parametrize("format", FORMATS)
def test_each_format_parses_to_texts_and_round_trips_through_storage(format):
    name, encode = FORMATS[format]
    parsed = parse_dataset(name, encode(ROWS), **LIMITS)
    assert (parsed.format, parsed.input_shape, parsed.labels) == (format, TEXT_INPUT_SHAPE, ["cat", "money"])
    assert parsed.n_train + parsed.n_validation + parsed.n_test == len(ROWS)
    splits = splits_from_bytes(dataset_to_bytes(parsed))
    every = {(text, label) for split in splits.values() for text, label in zip(split.x, split.y, strict=True)}
    assert every == set(ROWS)  # texts come back exactly (newlines, quotes, accents), with their labels
    trimmed = splits_from_bytes(evaluation_payload(dataset_to_bytes(parsed)))
    assert len(trimmed["train"].x) == 0 and list(trimmed["test"].x) == list(splits["test"].x)


def test_stored_dataset_holds_plain_tensors_only():
    payload = dataset_to_bytes(parse_dataset("t.csv", csv_bytes(ROWS), **LIMITS))
    tensors = load(payload)  # safetensors: plain tensors by construction
    assert {key.split(".", 1)[1] for key in tensors} == {"text_bytes", "text_offsets", "label_index"}


def test_text_samples_index_like_an_array():
    texts = TextSamples.of(["a", "", "ünï", "last"])
    assert len(texts) == 4 and texts[2] == "ünï" and texts[-1] == "last"
    assert texts[[3, 0]].tolist() == ["last", "a"]


REFUSED = {
    "too long": ("t.csv", csv_bytes([("x" * 51, "a"), ("y", "b")] * 5), PayloadTooLarge, "RETAIN_MAX_TEXT_CHARS"),
    "empty text": ("t.csv", csv_bytes([("  ", "a"), ("y", "b")] * 5), InvalidInput, "line 2 has an empty text"),
    "extra column": ("t.csv", csv_bytes([("a", "b", 1)], ("text", "label", "n")), InvalidInput, "exactly"),
    "jsonl not json": ("t.jsonl", b'{"text": "a", "label": "b"}\n{oops', InvalidInput, "line 2 is not JSON"),
    "jsonl no label": ("t.jsonl", b'{"text": "a"}\n', InvalidInput, "line 1 must be an object"),
    "jsonl text not str": ("t.jsonl", b'{"text": 3, "label": "b"}\n', InvalidInput, "must be a string"),
    "too many": ("t.jsonl", jsonl_bytes([("short", "a")] * 1001), PayloadTooLarge, "more than 1000 samples"),
    "parquet too long": ("t.parquet", text_parquet([("x" * 51, "a")] * 4), PayloadTooLarge, "RETAIN_MAX_TEXT_CHARS"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_bad_text_files_are_refused_with_the_limit(case):
    name, data, error, words = REFUSED[case]
    with pytest.raises(error, match=words):
        parse_dataset(name, data, **LIMITS, max_text_chars=50)


def test_text_for_a_numeric_model_is_a_422_naming_both_and_nothing_stored(client, database_url, settings):
    samples = digits((0, 1), per_class=20)
    table = {"a": flat(samples).reshape(40, -1)[:, 10] / 255.0, "label": [label for label, _ in samples]}
    first = client.post("/tasks", data={"model": "vec", **FORM}, files={"file": ("d.parquet", parquet_bytes(table))})
    assert first.status_code == 202, first.text
    before = stored(database_url, settings.artifact_uri)
    answer = client.post("/tasks", data={"model": "vec", "epochs": "1"}, files={"file": ("t.csv", csv_bytes(ROWS))})
    assert answer.status_code == 422
    assert "takes numeric vectors" in answer.text and "holds text" in answer.text
    assert stored(database_url, settings.artifact_uri) == before


def test_text_for_a_new_built_in_model_is_a_422(client, database_url, settings):
    before = stored(database_url, settings.artifact_uri)
    answer = client.post("/tasks", data={"model": "new", **FORM}, files={"file": ("t.jsonl", jsonl_bytes(ROWS))})
    assert answer.status_code == 422 and "holds text" in answer.text and "source hf" in answer.text
    assert stored(database_url, settings.artifact_uri) == before
