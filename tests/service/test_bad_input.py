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
    for path in (
        "/tasks/12345",
        "/tasks/12345/accuracy",
        "/jobs/12345",
        "/models/nope",
        "/models/nope/versions",
        "/models/nope/accuracy",
        "/v2/models/nope",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post("/predict", json={"model": "nope", "inputs": [[0.0]]}).status_code == 404


def npz_compressed(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


HUGE_X = GOOD_X.astype(np.float64)
HUGE_X[0, 0] = 1e300
MANY_LABELS = (np.random.default_rng(1).random((1002, 2)).astype(np.float32), np.arange(1002))

# each over a limit of the settings fixture's (5 MB uploads) or the defaults; the answer names the limit
LIMIT_CASES = {
    "labels per task": (npz(x=MANY_LABELS[0], y=MANY_LABELS[1]), {}, 422, "max_labels_per_task"),
    "layer width": (
        npz(x=GOOD_X, y=GOOD_Y),
        {"architecture_options": '{"hidden": [30000, 30000]}'},
        422,
        "max_layer_width",
    ),
    "layer count": (
        npz(x=GOOD_X, y=GOOD_Y),
        {"architecture_options": '{"hidden": [' + "8, " * 40 + "8]}"},
        422,
        "max_layers",
    ),
    "nested options": (npz(x=GOOD_X, y=GOOD_Y), {"architecture_options": "[" * 2000 + "]" * 2000}, 422, "nested"),
    "long options": (npz(x=GOOD_X, y=GOOD_Y), {"architecture_options": " " * 5000 + "{}"}, 422, "the limit is 4096"),
    "epochs": (npz(x=GOOD_X, y=GOOD_Y), {"epochs": str(10**12)}, 422, "max_epochs"),
    "batch size": (npz(x=GOOD_X, y=GOOD_Y), {"batch_size": str(10**30)}, 422, "max_batch_size"),
    "huge values": (npz(x=HUGE_X, y=GOOD_Y), {}, 422, "max_abs_value"),
    "NUL in name": (npz(x=GOOD_X, y=GOOD_Y), {"name": "a\x00b"}, 422, "printable"),
    "long name": (npz(x=GOOD_X, y=GOOD_Y), {"name": "n" * 201}, 422, "200"),
    "control in model": (npz(x=GOOD_X, y=GOOD_Y), {"model": "b\x01"}, 422, "printable"),
    "npz bomb": (npz_compressed(x=np.zeros((2, 1_400_000)), y=np.arange(2)), {}, 413, "decompress"),
    "csv field": (b"a,label\n" + b"1" * 200_000 + b",0\n", {}, 422, "131072"),
}


def artifacts(settings) -> list:
    from pathlib import Path

    return sorted(Path(settings.artifact_uri).rglob("*"))


@pytest.mark.parametrize("case", LIMIT_CASES)
def test_over_a_limit_is_refused_naming_it_and_nothing_is_stored(client, database_url, settings, case):
    data, fields, status, words = LIMIT_CASES[case]
    before, stored = counts(database_url), artifacts(settings)
    name = "d.csv" if data.startswith(b"a,label") else "d.npz"
    answer = client.post("/tasks", data={"model": "b", **fields}, files={"file": (name, data)})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"], answer.text
    assert counts(database_url) == before and artifacts(settings) == stored


def test_a_body_over_the_limit_is_refused_before_it_is_read(client, settings, database_url):
    before = counts(database_url)
    declared = client.post(
        "/tasks",
        content=b"x",
        headers={
            "Content-Length": str(settings.max_upload_bytes * 2),
            "Content-Type": "multipart/form-data; boundary=b",
        },
    )
    assert declared.status_code == 413 and "max_upload_bytes" in declared.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams, refused once past the limit
        for _ in range(settings.max_upload_bytes // 65536 + 10):
            yield b"0" * 65536

    streamed = client.post("/tasks", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413 and "max_upload_bytes" in streamed.json()["detail"]
    big_predict = client.post(
        "/predict", content=b" " * (settings.max_request_bytes + 1), headers={"Content-Type": "application/json"}
    )
    assert big_predict.status_code == 413 and "max_request_bytes" in big_predict.json()["detail"]
    assert counts(database_url) == before


def test_the_queue_quota_of_a_model_answers_429_with_retry_after(settings, api_client, database_url):
    with api_client(settings.model_copy(update={"max_queued_per_model": 1})) as quota_client:
        upload = {"file": ("d.npz", npz(x=GOOD_X, y=GOOD_Y))}
        assert quota_client.post("/tasks", data={"model": "q"}, files=upload).status_code == 202
        before = counts(database_url)
        refused = quota_client.post("/tasks", data={"model": "q"}, files=upload)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "max_queued_per_model" in refused.json()["detail"]
        assert counts(database_url) == before


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/1735115829204124434432",
        "/tasks/1735115829204124434432",
        "/jobs?limit=-35159948992443288911872",
        "/tasks?after_id=99999999999999999999999",
    ],
)
def test_integers_past_64_bits_are_422(client, path):
    assert client.get(path).status_code == 422
    if path.startswith("/jobs/"):
        assert client.post(f"{path}/cancel").status_code == 422


def test_labels_per_model_are_capped_across_its_tasks(settings, api_client, database_url):
    with api_client(settings.model_copy(update={"max_labels_per_model": 3})) as capped:
        first = capped.post("/tasks", data={"model": "l"}, files={"file": ("d.npz", npz(x=GOOD_X, y=GOOD_Y))})
        assert first.status_code == 202, first.text
        before = counts(database_url)
        more = capped.post("/tasks", data={"model": "l"}, files={"file": ("d.npz", npz(x=GOOD_X, y=GOOD_Y + 2))})
        assert more.status_code == 422 and "4 distinct labels" in more.json()["detail"]
        assert "max_labels_per_model" in more.json()["detail"]
        assert counts(database_url) == before
