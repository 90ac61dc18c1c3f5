"""POST /models: a model someone trained, imported as version 1; every refusal stores nothing."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save, save_file
from sqlalchemy import create_engine, text

from app.learning.models import build_model

SHAPE = (1, 8, 8)
TABLES = ("models", "datasets", "tasks", "jobs", "model_versions", "accuracy")


def counts(url) -> dict:
    engine = create_engine(url)
    with engine.connect() as connection:
        result = {t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}
    engine.dispose()
    return result


def artifacts(settings) -> list:
    from pathlib import Path

    return sorted(Path(settings.artifact_uri).rglob("*"))


def tiny_mlp(n_classes: int = 3):
    torch.manual_seed(0)
    return build_model("mlp", SHAPE, n_classes, hidden=[16]).eval()


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def model_labels(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(x).float() / 255).argmax(-1).numpy()


def post_import(client, weights: bytes, filename="model.safetensors", base: bytes | None = None, **fields):
    form = {"name": "imported", "source": "mlp", "options": json.dumps({"labels": [0, 1, 2], "hidden": [16]})}
    form.update(fields)
    files = {"file": (filename, weights)}
    if base is not None:
        files["base_data"] = ("base.npz", base)
    return client.post("/models", data=form, files=files)


def test_import_with_base_data_serves_the_weights_and_is_task_zero_then_learns_on(
    client, run_worker_once, wait_for_job
):
    model = tiny_mlp()
    x = np.random.default_rng(0).integers(0, 256, (300, *SHAPE), dtype=np.uint8)
    y = model_labels(model, x)
    assert len(set(y.tolist())) >= 2
    answer = post_import(
        client, save(model.state_dict()), base=npz(x=x, y=y), options=json.dumps({"labels": [0, 1, 2], "hidden": [16]})
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["strategy"] == "import" and body["status"] == "queued"
    assert run_worker_once() == 1
    job = wait_for_job(body["job_id"])
    assert job["status"] == "succeeded", job
    assert client.get("/models/imported").json()["serving_version"] == 1

    served = client.post("/predict", json={"model": "imported", "inputs": x[:20].tolist(), "top_k": 3}).json()
    with torch.no_grad():
        expected = model(torch.tensor(x[:20]).float() / 255).softmax(-1)
    assert [p["label"] for p in served["predictions"]] == expected.argmax(-1).tolist()
    np.testing.assert_allclose([p["probability"] for p in served["predictions"]], expected.max(-1).values, atol=1e-5)

    matrix = client.get("/models/imported/accuracy").json()
    assert len(matrix["rows"]) == 1
    assert client.get(f"/tasks/{body['id']}/accuracy").json()["history"][0]["accuracy"] == 1.0  # its own labels

    new = np.random.default_rng(1).integers(0, 256, (200, *SHAPE), dtype=np.uint8)
    form = {"model": "imported", "epochs": "1", "strategy": "ewc_replay", "ewc_lambda": "100"}
    taught = client.post("/tasks", data=form, files={"file": ("t.npz", npz(x=new, y=np.array([3, 4] * 100)))})
    assert taught.status_code == 202, taught.text
    run_worker_once()
    assert wait_for_job(taught.json()["job_id"])["status"] in ("succeeded", "rejected")
    rows = client.get(f"/tasks/{body['id']}/accuracy").json()["history"]
    assert len(rows) == 2  # task 0 measured after the update too
    top = client.post(
        "/predict", json={"model": "imported", "inputs": new[:2].tolist(), "top_k": 5, "version": 2}
    ).json()
    assert {entry[0] for p in top["predictions"] for entry in p["top_k"]} >= {3, 4}  # the grown head's labels


def test_import_without_base_data_serves_and_lists_architectures(client, run_worker_once, wait_for_job):
    model = tiny_mlp()
    answer = post_import(
        client,
        save(model.state_dict()),
        options=json.dumps({"labels": ["a", "b", "c"], "hidden": [16], "input_shape": list(SHAPE)}),
    )
    assert answer.status_code == 202, answer.text
    run_worker_once()
    assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"
    x = np.random.default_rng(2).integers(0, 256, (5, *SHAPE), dtype=np.uint8)
    served = client.post("/predict", json={"model": "imported", "inputs": x.tolist()}).json()
    assert [p["label"] for p in served["predictions"]] == [["a", "b", "c"][i] for i in model_labels(model, x)]
    listed = client.get("/architectures").json()
    assert listed["builtin"] == ["mlp", "cnn", "resnet18"] and "resnet18" in listed["torchvision"]


def tiny_vit_config():
    """A ViT image classifier small enough to build in milliseconds: 8x8 grayscale, labels x and y."""
    transformers = pytest.importorskip("transformers")
    return transformers.ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        image_size=8,
        patch_size=4,
        num_channels=1,
        id2label={0: "x", 1: "y"},
        label2id={"x": 0, "y": 1},
    )


def hf_zip(tmp_path, model_type: str) -> bytes:
    transformers = pytest.importorskip("transformers")
    config = tiny_vit_config()
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    values = json.loads((tmp_path / "hf" / "config.json").read_text())
    values["model_type"] = model_type
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("export/config.json", json.dumps(values))
        archive.write(tmp_path / "hf" / "model.safetensors", "export/model.safetensors")
    return buffer.getvalue()


def pickled() -> bytes:
    buffer = io.BytesIO()
    torch.save(tiny_mlp().state_dict(), buffer)
    return buffer.getvalue()


REFUSALS = {
    "pickle by name": (lambda tmp: (pickled(), "model.pt", {}), 415, "safetensors.torch"),
    "pickle renamed": (lambda tmp: (pickled(), "model.safetensors", {}), 415, "weights_only=True"),
    "keys do not fit": (
        lambda tmp: (save(build_model("mlp", SHAPE, 3, hidden=[16, 16]).state_dict()), "m.safetensors", {}),
        422,
        "unexpected keys (body.3.bias",
    ),
    "shapes do not fit": (
        lambda tmp: (save(build_model("mlp", SHAPE, 3, hidden=[20]).state_dict()), "m.safetensors", {}),
        422,
        "shape mismatches (body.1.bias: file [20], model [16]",
    ),
    "no labels": (
        lambda tmp: (
            save(tiny_mlp().state_dict()),
            "m.safetensors",
            {"options": json.dumps({"hidden": [16], "input_shape": [1, 8, 8]})},
        ),
        422,
        "labels",
    ),
    "too many parameters": (
        lambda tmp: (
            save(build_model("mlp", (1, 32, 32), 3, hidden=[1000]).state_dict()),
            "m.safetensors",
            {"options": json.dumps({"labels": [0, 1, 2], "hidden": [1000], "input_shape": [1, 32, 32]})},
        ),
        413,
        "RETAIN_MAX_MODEL_PARAMETERS",
    ),
    "hf model type transformers does not know": (
        lambda tmp: (
            hf_zip(tmp, "remote_code_model"),
            "hf.zip",
            {"source": "hf", "options": json.dumps({"input_shape": [1, 8, 8]})},
        ),
        422,
        "trust_remote_code",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_each_refusal_answers_before_anything_is_stored(client, database_url, settings, tmp_path, case):
    make, status, words = REFUSALS[case]
    settings.max_model_parameters = 1_000_000
    data, filename, fields = make(tmp_path)
    fields = {"options": json.dumps({"labels": [0, 1, 2], "hidden": [16], "input_shape": [1, 8, 8]}), **fields}
    before, stored = counts(database_url), artifacts(settings)
    answer = post_import(client, data, filename=filename, **fields)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"], answer.text
    assert counts(database_url) == before and artifacts(settings) == stored


def test_pretrained_digits_imported_with_base_data_keep_task_zero_while_learning_five_to_nine(
    client, shared_file, tmp_path, run_worker_once, wait_for_job
):
    """A CNN "pretrained" elsewhere on digits 0-4, exported as safetensors, imported with base data,
    then taught digits 5-9 with ewc_replay: task 0's row stays in the table, and the served model
    answers both halves."""
    with np.load(shared_file("mnist_5k.npz"), allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    rng = np.random.default_rng(0)
    low, high = rng.permutation(np.flatnonzero(y < 5))[:900], rng.permutation(np.flatnonzero(y >= 5))[:600]
    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 5, channels=[8, 16])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    inputs, targets = torch.tensor(x[low[:700]]).float() / 255, torch.tensor(y[low[:700]])
    for _ in range(6):
        for batch in torch.randperm(len(inputs)).split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    model.eval()
    save_file(model.state_dict(), tmp_path / "digits.safetensors")

    base = npz(x=x[low[:700]], y=y[low[:700]], x_test=x[low[700:]], y_test=y[low[700:]])
    options = {"labels": [0, 1, 2, 3, 4], "channels": [8, 16], "memory_size": 200}
    answer = post_import(
        client, (tmp_path / "digits.safetensors").read_bytes(), base=base, options=json.dumps(options), source="cnn"
    )
    assert answer.status_code == 202, answer.text
    run_worker_once()
    assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"
    task0 = answer.json()["id"]
    with torch.no_grad():
        pretrained = (model(torch.tensor(x[low[700:]]).float() / 255).argmax(-1).numpy() == y[low[700:]]).mean()
    at_import = client.get(f"/tasks/{task0}/accuracy").json()["history"][0]["accuracy"]
    assert at_import == pytest.approx(pretrained, abs=1e-6)  # version 1 answers as the weights did
    assert at_import > 0.6  # the pretraining learnt the digits (chance is 0.2)

    form = {"model": "imported", "strategy": "ewc_replay", "epochs": "3"}
    new = npz(x=x[high[:450]], y=y[high[:450]], x_test=x[high[450:]], y_test=y[high[450:]])
    taught = client.post("/tasks", data=form, files={"file": ("five_to_nine.npz", new)})
    assert taught.status_code == 202, taught.text
    run_worker_once()
    job = wait_for_job(taught.json()["job_id"])
    assert job["status"] in ("succeeded", "rejected"), job
    history = client.get(f"/tasks/{task0}/accuracy").json()["history"]
    assert [row["after_task_id"] for row in history] == [task0, taught.json()["id"]]
    assert history[1]["accuracy"] > 0.5 * at_import  # replay and EWC kept much of task 0
    served = client.post("/predict", json={"model": "imported", "inputs": x[high[450:]].tolist(), "version": 2})
    assert served.status_code == 200, served.text
    labels = [p["label"] for p in served.json()["predictions"]]
    # the new digits are learnt after three epochs (chance among 10: 0.1), while task 0 is kept above
    assert np.mean(np.array(labels) == y[high[450:]]) > 0.25


def test_an_update_over_the_worker_memory_budget_fails_with_the_reason(client, settings, run_worker_once, wait_for_job):
    model = tiny_mlp()
    options = json.dumps({"labels": [0, 1, 2], "hidden": [16], "input_shape": list(SHAPE)})
    answer = post_import(client, save(model.state_dict()), options=options)
    run_worker_once()
    assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"
    x = np.random.default_rng(3).integers(0, 256, (60, *SHAPE), dtype=np.uint8)
    form = {"model": "imported", "epochs": "1", "ewc_lambda": "10"}
    taught = client.post("/tasks", data=form, files={"file": ("t.npz", npz(x=x, y=np.arange(60) % 2))})
    settings.max_update_bytes = 1_000  # the tiny MLP alone is about 4.3 kB
    run_worker_once(settings)
    job = wait_for_job(taught.json()["job_id"])
    assert job["status"] == "failed" and "max_update_bytes" in job["error"], job
    assert client.get("/models/imported").json()["serving_version"] == 1


def test_weights_by_uri_are_read_and_checked_before_the_answer(client, settings, tmp_path, database_url):
    settings.data_roots = [str(tmp_path)]
    save_file(tiny_mlp().state_dict(), tmp_path / "model.safetensors")
    options = json.dumps({"labels": [0, 1, 2], "hidden": [16], "input_shape": list(SHAPE)})
    form = {"name": "by-uri", "source": "mlp", "options": options}
    answer = client.post("/models", data={**form, "uri": str(tmp_path / "model.safetensors")})
    assert answer.status_code == 202, answer.text
    before, stored = counts(database_url), artifacts(settings)
    outside = client.post("/models", data={**form, "name": "outside", "uri": "/etc/hostname"})
    assert outside.status_code in (403, 422), outside.text
    assert counts(database_url) == before and artifacts(settings) == stored


def test_an_import_that_fails_in_the_worker_leaves_only_its_job_and_the_name_is_free(
    client, settings, database_url, api_client, run_worker_once, wait_for_job
):
    """The import passes every check at the API, then fails in the worker (over the worker's memory
    budget); a task taught to the model while the import waited is cancelled with it. Only the two
    jobs stay, with their reasons; no model, task or dataset row; the artifacts the import stored
    are garbage; and the same name imports again."""
    model = tiny_mlp()
    options = json.dumps({"labels": [0, 1, 2], "hidden": [16], "input_shape": list(SHAPE)})
    before = counts(database_url)
    answer = post_import(client, save(model.state_dict()), options=options)
    assert answer.status_code == 202, answer.text
    x = np.random.default_rng(4).integers(0, 256, (60, *SHAPE), dtype=np.uint8)
    form = {"model": "imported", "epochs": "1", "ewc_lambda": "10"}
    taught = client.post("/tasks", data=form, files={"file": ("t.npz", npz(x=x, y=np.arange(60) % 3))})
    assert taught.status_code == 202, taught.text

    run_worker_once(settings.model_copy(update={"max_update_bytes": 1_000}))  # the tiny MLP alone is 4.3 kB
    job = wait_for_job(answer.json()["job_id"])
    assert job["status"] == "failed" and "max_update_bytes" in job["error"], job
    assert "stored nothing" in job["error"] and job["model"] == "imported" and job["task_id"] is None
    behind = wait_for_job(taught.json()["job_id"])
    assert behind["status"] == "cancelled" and "was not imported" in behind["error"], behind
    assert counts(database_url) == {**before, "jobs": before["jobs"] + 2}
    assert client.get("/models/imported").status_code == 404
    assert client.get(f"/tasks/{answer.json()['id']}").status_code == 404
    assert {j["id"] for j in client.get("/jobs", params={"model": "imported"}).json()} == {job["id"], behind["id"]}
    assert run_worker_once() == 0  # nothing left to run
    with api_client(settings.model_copy(update={"artifact_gc_grace_seconds": 0.0})) as admin:
        collected = admin.post("/artifacts/gc").json()
    assert collected["referenced"] == 0 and collected["removed"] >= 2, collected  # the weights and the dataset

    again = post_import(client, save(model.state_dict()), options=options)
    assert again.status_code == 202, again.text
    run_worker_once()
    assert wait_for_job(again.json()["job_id"])["status"] == "succeeded"
    assert client.get("/models/imported").json()["serving_version"] == 1
    assert client.get(f"/jobs/{job['id']}").json()["error"] == job["error"]  # the old record is kept


def test_an_import_cancelled_before_it_ran_leaves_only_its_job(client, database_url, run_worker_once, wait_for_job):
    before = counts(database_url)
    options = json.dumps({"labels": [0, 1, 2], "hidden": [16], "input_shape": list(SHAPE)})
    answer = post_import(client, save(tiny_mlp().state_dict()), options=options)
    assert answer.status_code == 202, answer.text
    cancelled = client.post(f"/jobs/{answer.json()['job_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["model"] == "imported"
    assert counts(database_url) == {**before, "jobs": before["jobs"] + 1}
    assert client.get("/models/imported").status_code == 404
    assert run_worker_once() == 0
    assert post_import(client, save(tiny_mlp().state_dict()), options=options).status_code == 202


def spy_on(monkeypatch, owner, name: str) -> list:
    """Record each call of ``owner.name`` (a function or a class's classmethod), which still runs."""
    original, calls = getattr(owner, name), []

    def spy(*args, **kwargs):
        calls.append(args[:1])
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_an_hf_image_classifier_is_unpacked_once_at_the_api_and_read_once_in_the_worker(
    client, tmp_path, monkeypatch, run_worker_once, wait_for_job
):
    """A tiny ViT exported with save_pretrained, sent as a .zip: the API unpacks it once for all its
    checks and reads the weights once (transformers' loader is its check); the worker reads them once
    more, to build version 1 (the check there hands its model on), which answers as the ViT did."""
    transformers = pytest.importorskip("transformers")
    import app.imports.service

    config = tiny_vit_config()
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "vit")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("config.json", "model.safetensors"):
            archive.write(tmp_path / "vit" / name, f"export/{name}")
    unpacked = spy_on(monkeypatch, app.imports.service, "unpack_weights")
    loaded = spy_on(monkeypatch, transformers.AutoModelForImageClassification, "from_pretrained")
    answer = post_import(
        client, buffer.getvalue(), filename="vit.zip", source="hf", options=json.dumps({"input_shape": list(SHAPE)})
    )
    assert answer.status_code == 202, answer.text
    assert (len(unpacked), len(loaded)) == (1, 1)
    run_worker_once()
    assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"
    assert len(loaded) == 2
    x = np.random.default_rng(5).integers(0, 256, (4, *SHAPE), dtype=np.uint8)
    served = client.post("/predict", json={"model": "imported", "inputs": x.tolist()}).json()["predictions"]
    with torch.no_grad():
        expected = model(torch.tensor(x).float() / 255).logits.softmax(-1)
    assert [p["label"] for p in served] == [["x", "y"][i] for i in expected.argmax(-1)]
    np.testing.assert_allclose([p["probability"] for p in served], expected.max(-1).values, atol=1e-5)


def test_garbage_collection_keeps_the_weights_of_an_import_still_waiting_for_its_worker(
    client, settings, api_client, run_worker_once, wait_for_job
):
    """The weights sent to POST /models are referenced by the model's row until version 1 is built:
    a collection meanwhile (here with no grace period) removes nothing, and the import then succeeds."""
    options = json.dumps({"labels": [0, 1, 2], "hidden": [16], "input_shape": list(SHAPE)})
    answer = post_import(client, save(tiny_mlp().state_dict()), options=options)
    assert answer.status_code == 202, answer.text
    with api_client(settings.model_copy(update={"artifact_gc_grace_seconds": 0.0})) as admin:
        collected = admin.post("/artifacts/gc").json()
    assert (collected["stored"], collected["referenced"], collected["removed"]) == (2, 2, 0), collected
    run_worker_once()
    assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"


def test_an_import_is_not_judged_by_the_not_learnt_check_it_learns_nothing(
    client, settings, run_worker_once, wait_for_job
):
    """Base data the imported model answers no better than chance: version 1 still serves as the
    weights did (an import trains nothing, so "not learnt" says nothing about it), and its task 0 row
    shows the accuracy the model has."""
    model = tiny_mlp()
    x = np.random.default_rng(6).integers(0, 256, (300, *SHAPE), dtype=np.uint8)
    y = (model_labels(model, x) + 1) % 3  # never what the model answers
    answer = post_import(client, save(model.state_dict()), base=npz(x=x, y=y))
    assert answer.status_code == 202, answer.text
    run_worker_once(settings.model_copy(update={"reject_not_learnt": True}))  # the service's default
    job = wait_for_job(answer.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert client.get("/models/imported").json()["serving_version"] == 1
    assert client.get(f"/tasks/{answer.json()['id']}/accuracy").json()["history"][0]["accuracy"] == 0.0
