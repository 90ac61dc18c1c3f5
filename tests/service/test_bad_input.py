"""Each bad upload gets its 4xx with a message, and nothing stored changes."""

import io

import numpy as np
import pytest
from sqlalchemy import create_engine, text

TABLES = ("models", "datasets", "tasks", "jobs", "model_versions", "accuracy")


def counts(url):
    engine = create_engine(url)
    with engine.connect() as connection:
        result = {t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}
    engine.dispose()
    return result


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


GOOD_X = np.random.default_rng(0).random((40, 6)).astype(np.float32)
GOOD_Y = np.arange(40) % 2
NAN_X = GOOD_X.copy()
NAN_X[3, 2] = np.nan

CASES = {
    "non-finite": (npz(x=NAN_X, y=GOOD_Y), "d.npz", {}, 422, "nan"),
    "single class": (npz(x=GOOD_X, y=np.zeros(40, dtype=np.int64)), "d.npz", {}, 422, "class"),
    "unknown format": (b"\x00\x01garbage", "d.bin", {}, 415, "format"),
    "pickled array": (npz(x=GOOD_X, y=np.array([object()] * 40, dtype=object)), "d.npz", {}, 415, "pickle"),
    "too big": (npz(x=np.zeros((30_000, 1), dtype=np.float32), y=np.arange(30_000) % 2), "d.npz", {}, 413, "limit"),
    "bad strategy": (npz(x=GOOD_X, y=GOOD_Y), "d.npz", {"strategy": "magic"}, 422, "strategy"),
    "bad lambda": (npz(x=GOOD_X, y=GOOD_Y), "d.npz", {"ewc_lambda": "-3"}, 422, "ewc_lambda"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_upload_is_refused_and_nothing_changes(client, database_url, case):
    data, filename, fields, status, words = CASES[case]
    before = counts(database_url)
    answer = client.post("/tasks", data={"model": "b", **fields}, files={"file": (filename, data)})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"].lower()
    assert counts(database_url) == before


def test_wrong_shape_for_an_existing_model(client, database_url):
    ok = client.post("/tasks", data={"model": "b"}, files={"file": ("d.npz", npz(x=GOOD_X, y=GOOD_Y))})
    assert ok.status_code == 202, ok.text
    before = counts(database_url)
    wrong = client.post("/tasks", data={"model": "b"}, files={"file": ("d.npz", npz(x=GOOD_X[:, :3], y=GOOD_Y))})
    assert wrong.status_code == 422 and "shape" in wrong.json()["detail"]
    assert counts(database_url) == before


def test_unknown_ids_are_404(client):
    for path in ("/tasks/12345", "/tasks/12345/accuracy", "/jobs/12345", "/models/nope", "/models/nope/versions",
                 "/models/nope/accuracy", "/v2/models/nope"):
        assert client.get(path).status_code == 404, path
    assert client.post("/predict", json={"model": "nope", "inputs": [[0.0]]}).status_code == 404
