"""The Open Inference Protocol v2 driven by the official client (tritonclient[http]) over real HTTP:
health, metadata, readiness, JSON and binary inference, requested outputs, version routes, request
parameters and the protocol's errors; its predictions must equal POST /predict's."""

import json
import time

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

AUTHORIZATION: dict[str, str] = {}  # the test's admin key, as a user's client would send it


@pytest.fixture
def api_key(client):
    """The protocol calls of this test carry the admin key (see `headers`)."""
    AUTHORIZATION["Authorization"] = f"Bearer {client.api_key}"
    yield
    AUTHORIZATION.clear()


def headers() -> dict[str, str]:
    """What every protocol call sends: the API key; a new dict per call, as tritonclient writes its
    own headers into the one it is given."""
    return dict(AUTHORIZATION)


def samples_input(samples: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("input-0", list(samples.shape), "UINT8")
    tensor.set_data_from_numpy(samples, binary_data=binary)
    return tensor


def infer(client, samples, binary=True, outputs=None, **options):
    return client.infer("m", [samples_input(samples, binary)], headers=headers(), outputs=outputs, **options)


def requested(binary: bool, *names: str):
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in names]


def test_tritonclient_against_predict(client, api_key, api_replica, pmnist_files, teach, run_worker_once):
    for path in pmnist_files:
        assert teach(path).status_code == 202
        run_worker_once()
    samples = np.load(pmnist_files[1])["x_test"][:6]
    reference = client.post("/predict", json={"model": "m", "inputs": samples.tolist(), "top_k": 3}).json()
    labels = np.array([p["label"] for p in reference["predictions"]])
    probabilities = np.array([p["probability"] for p in reference["predictions"]], dtype=np.float32)
    top_labels = np.array([[label for label, _ in p["top_k"]] for p in reference["predictions"]])

    oip = triton.InferenceServerClient(api_replica)
    assert oip.is_server_live(headers=headers()) and oip.is_server_ready(headers=headers())
    assert oip.get_server_metadata(headers=headers())["name"] == "retain"
    assert oip.is_model_ready("m", headers=headers()) and oip.is_model_ready("m", "1", headers=headers())
    assert not oip.is_model_ready("m", "7", headers=headers()) and not oip.is_model_ready("nope", headers=headers())
    assert oip.get_model_metadata("m", headers=headers())["versions"] == ["1", "2"]
    assert oip.get_model_metadata("m", "1", headers=headers())["versions"] == ["1"]

    for binary in (False, True):
        answer = infer(oip, samples, binary, outputs=requested(binary, "label", "probability"))
        assert answer.get_response()["model_version"] == str(reference["model_version"])
        assert np.array_equal(answer.as_numpy("label"), labels)
        assert np.allclose(answer.as_numpy("probability"), probabilities, atol=1e-6)
    squeezed = infer(oip, samples, request_compression_algorithm="gzip")
    assert np.array_equal(squeezed.as_numpy("label"), labels)
    whole = infer(oip, samples)  # no outputs named: the client asks for every output, binary
    assert np.array_equal(whole.as_numpy("label"), labels) and whole.as_numpy("top_k_labels") is None
    only = infer(oip, samples, False, outputs=requested(False, "probability"))
    assert only.as_numpy("label") is None and only.as_numpy("probability").shape == (6,)
    ranked = infer(oip, samples, outputs=requested(True, "top_k_labels"), parameters={"top_k": 3})
    assert np.array_equal(ranked.as_numpy("top_k_labels"), top_labels)

    pinned = client.post("/predict", json={"model": "m", "inputs": samples.tolist(), "version": 1}).json()
    first = infer(oip, samples, model_version="1")
    assert first.get_response()["model_version"] == "1"
    assert np.array_equal(first.as_numpy("label"), [p["label"] for p in pinned["predictions"]])
    aware = client.post("/predict", json={"model": "m", "inputs": samples.tolist(), "task_id": 1}).json()
    assert np.array_equal(
        infer(oip, samples, parameters={"task_id": 1}).as_numpy("label"), [p["label"] for p in aware["predictions"]]
    )

    # Errors: the protocol's status and {"error": ...}, read by the client as its exception.
    for call, status, words in [
        (lambda: oip.infer("nope", [samples_input(samples, True)], headers=headers()), "404", "does not exist"),
        (lambda: infer(oip, samples, model_version="9"), "404", "no version 9"),
        (lambda: infer(oip, samples[:, :, :5]), "400", "shape"),
        (lambda: infer(oip, samples, outputs=requested(True, "logits")), "400", "unknown output 'logits'"),
        (lambda: infer(oip, samples, parameters={"task_id": 9}), "400", "task 9 was not learnt"),
        (lambda: oip.get_model_metadata("nope", headers=headers()), "404", "does not exist"),
    ]:
        with pytest.raises(InferenceServerException) as raised:
            call()
        assert raised.value.status() == status and words in raised.value.message(), raised.value.message()

    # A rollback through the other replica reaches this one within its serving-version check interval.
    assert client.put("/models/m/serving-version", json={"version": 1}).status_code == 200
    deadline = time.monotonic() + 5
    while infer(oip, samples).get_response()["model_version"] != "1":
        assert time.monotonic() < deadline, "the rollback never reached the replica"
        time.sleep(0.01)


def test_plain_http_bodies(client, api_key, api_replica, pmnist_files, teach, run_worker_once):
    """What tritonclient never sends: a JSON body under any Content-Type, nested data, bad bodies."""
    assert teach(pmnist_files[0]).status_code == 202
    run_worker_once()
    sample = np.load(pmnist_files[0])["x_test"][:2]
    body = {
        "inputs": [{"name": "x", "shape": list(sample.shape), "datatype": "UINT8", "data": sample.tolist()}],
        "id": "r1",
    }
    for content_type in ("application/json", "text/plain", "application/octet-stream"):
        answer = client.post("/v2/models/m/infer", content=json.dumps(body), headers={"content-type": content_type})
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == "r1" and answer.json()["outputs"][0]["shape"] == [2]
    broken = client.post("/v2/models/m/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not an inference request" in broken.json()["error"]
    short = client.post("/v2/models/m/infer", content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert short.status_code == 400 and "Inference-Header-Content-Length" in short.json()["error"]
    assert client.get("/v2/models/m/versions/x").json() == {
        "error": "model version must be a positive integer; got 'x'"
    }
    assert client.get("/v2/health/live").json() == {"live": True}


def test_string_labels_are_bytes_tensors_the_client_decodes():
    """Labels that are strings go out as BYTES, JSON or binary (4-byte length, then UTF-8)."""
    from app.learning import Prediction
    from app.predict.oip import HEADER_LENGTH, INFER_REQUEST, infer_response

    predictions = [
        Prediction(label="cat", probability=0.75, top_k=[("cat", 0.75), ("dög", 0.25)]),
        Prediction(label="dög", probability=0.5, top_k=[("dög", 0.5), ("cat", 0.5)]),
    ]
    request = INFER_REQUEST.validate_python(
        {
            "inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [0, 1]}],
            "parameters": {"binary_data_output": True},
        }
    )
    response = infer_response(request, "m", 3, predictions, top_k=2)
    result = triton.InferResult.from_response_body(response.body, header_length=int(response.headers[HEADER_LENGTH]))
    assert result.as_numpy("label").tolist() == [b"cat", "dög".encode()]
    assert result.as_numpy("top_k_labels").shape == (2, 2)
    request["parameters"] = None
    body = json.loads(infer_response(request, "m", 3, predictions, top_k=2).body)
    assert body["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["cat", "dög"]}


def test_versioned_json_inference_with_one_headers_dict(client, api_key, api_replica, tmp_path, teach, run_worker_once):
    """FP32 samples as JSON to a version's route, a JSON output, after binary and compressed calls made with
    the same headers dict (the API key's, as a user keeps it): tritonclient leaves the binary call's
    Inference-Header-Content-Length and the compressed call's Content-Encoding in that dict."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    path = tmp_path / "signs.npz"
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(np.int64))
    assert teach(path).status_code == 202
    assert run_worker_once() == 1
    samples = x[:5]
    reference = client.post("/predict", json={"model": "m", "inputs": samples.tolist(), "version": 1}).json()
    labels = [p["label"] for p in reference["predictions"]]

    def fp32_input(binary: bool) -> triton.InferInput:
        tensor = triton.InferInput("input-0", list(samples.shape), "FP32")
        return tensor.set_data_from_numpy(samples, binary_data=binary)

    oip = triton.InferenceServerClient(api_replica)
    kept = headers()  # one dict for every call
    calls = [
        dict(binary=True),
        dict(binary=False, model_version="1"),  # the call
        dict(binary=True, request_compression_algorithm="gzip"),
        dict(binary=False, model_version="1"),
        dict(binary=False),
        dict(binary=True, request_compression_algorithm="deflate", model_version="1"),
        dict(binary=False, model_version="1"),
    ]
    for call in calls:
        binary = call.pop("binary")
        answer = oip.infer("m", [fp32_input(binary)], outputs=requested(False, "label"), headers=kept, **call)
        assert answer.as_numpy("label").tolist() == labels, call
        assert answer.get_response()["model_version"] == "1"
    assert "Inference-Header-Content-Length" in kept and "Content-Encoding" in kept  # the client's doing

    # a length the body contradicts is still refused when the body is not one whole JSON request
    cut = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}]})
    for body, length in [(cut[:-1], 10), ('{"inputs": []}', 5)]:
        answer = client.post(
            "/v2/models/m/infer", content=body, headers={"Inference-Header-Content-Length": str(length)}
        )
        assert answer.status_code == 400, answer.text
    binary_declared = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]
    }
    answer = client.post(
        "/v2/models/m/infer", content=json.dumps(binary_declared), headers={"Inference-Header-Content-Length": "20"}
    )
    assert answer.status_code == 400 and "EOF" in answer.json()["error"], answer.text  # the length is believed


def test_metadata_gives_the_label_datatype_inference_answers(
    client, api_key, api_replica, tmp_path, teach, run_worker_once
):
    """A model taught integer labels (version 1), then string labels from a .csv (version 2): each version's
    metadata, read through tritonclient, names the datatype its inference answers, and decodes it."""
    from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4)).astype(np.float32)
    numbered = tmp_path / "numbered.npz"
    np.savez(numbered, x=x, y=(x[:, 0] > 0).astype(np.int64))
    named = tmp_path / "named.csv"
    rows = [",".join(["label", "a", "b", "c", "d"])]
    rows += [",".join(["north" if row[1] > 0 else "south", *map(str, row)]) for row in x]
    named.write_text("\n".join(rows) + "\n")
    for path in (numbered, named):
        assert teach(path, max_forgetting="1").status_code == 202
        assert run_worker_once() == 1

    oip = triton.InferenceServerClient(api_replica)
    samples = x[:6]
    for version, expected in (("1", "INT64"), ("2", "BYTES"), ("", "BYTES")):  # "": the serving one, 2
        metadata = oip.get_model_metadata("m", version, headers=headers())
        datatypes = {output["name"]: output["datatype"] for output in metadata["outputs"]}
        assert datatypes["label"] == datatypes["top_k_labels"] == expected, metadata
        reference = client.post(
            "/predict", json={"model": "m", "inputs": samples.tolist(), "version": int(version or 2), "top_k": 2}
        ).json()
        labels = [str(p["label"]) for p in reference["predictions"]]

        tensor = triton.InferInput("input-0", list(samples.shape), "FP32")
        tensor.set_data_from_numpy(samples)
        for binary in (False, True):
            answer = oip.infer(
                "m",
                [tensor],
                model_version=version,
                outputs=requested(binary, "label", "top_k_labels"),
                parameters={"top_k": 2},
                headers=headers(),
            )
            for name in ("label", "top_k_labels"):
                assert answer.get_output(name)["datatype"] == datatypes[name], (version, binary, name)
            decoded = answer.as_numpy("label").tolist()
            assert [d.decode() if isinstance(d, bytes) else str(d) for d in decoded] == labels

        # a client that knows the datatype from the metadata alone decodes the binary answer's bytes
        raw = client.post(
            f"/v2/models/m{'/versions/' + version if version else ''}/infer",
            content=json.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": list(samples.shape),
                            "datatype": "FP32",
                            "data": samples.ravel().tolist(),
                        }
                    ],
                    "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
                }
            ),
        )
        assert raw.status_code == 200, raw.text
        blob = raw.content[int(raw.headers["Inference-Header-Content-Length"]) :]
        if datatypes["label"] == "BYTES":
            values = [value.decode() for value in deserialize_bytes_tensor(blob)]
        else:
            values = [str(value) for value in np.frombuffer(blob, dtype=triton_to_np_dtype(datatypes["label"]))]
        assert values == labels, (version, values)
