"""The prediction routes' own handler (app/predict/lean_route.py): plain Starlette routes at the head of
the app giving the same answers FastAPI's would, without its dependency solver on the hot path, and
documented in /openapi.json by their FastAPI declarations."""

import inspect
import re

import pytest
from fastapi import Response
from starlette.routing import Match

from app.deps import get_serving
from app.errors import NotFound
from app.predict import lean_route, oip, router
from app.predict.lean_route import LeanRoute


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_prediction_routes_are_lean_starlette_routes_at_the_head_of_the_app(client):
    head = client.app.router.routes[:3]
    assert all(isinstance(route, LeanRoute) for route in head)
    assert [route.path for route in head] == [
        "/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ]
    # no other route of the app is lean: the rest keep FastAPI's handler
    assert not any(isinstance(route, LeanRoute) for route in client.app.router.routes[3:])
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_openapi_documents_the_lean_routes_from_their_fastapi_declarations(client):
    paths = client.get("/openapi.json").json()["paths"]
    predict = paths["/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictIn"}
    assert predict["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictOut"
    }
    assert {"401", "404", "422"} <= set(predict["responses"]) and predict["security"]
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        infer = paths[path]["post"]
        assert "inputs" in infer["requestBody"]["content"]["application/json"]["schema"]["properties"]
        assert infer["tags"] == ["open inference protocol"] and infer["security"]
        assert infer["responses"]["404"]["content"]["application/json"]["example"] == {
            "error": "model 'nope' does not exist"
        }


def test_an_endpoint_a_lean_route_cannot_fill_is_refused_when_the_route_is_made():
    def sync_endpoint(name: str) -> Response:
        return Response()

    async def query_parameter(limit: int) -> Response:
        return Response()

    with pytest.raises(TypeError, match="coroutine function"):
        LeanRoute("/x/{name}", sync_endpoint, methods=["POST"])
    with pytest.raises(TypeError, match="'limit'"):
        LeanRoute("/x", query_parameter, methods=["POST"])


def test_the_fast_path_uses_no_private_name_of_fastapi_or_starlette():
    for module in (lean_route, router, oip):
        source = inspect.getsource(module)
        assert not re.search(r"(fastapi|starlette)[\w.]*(\s+import\s+|\.)_[a-z]", source), module.__name__


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_bodies_are_422_as_fastapi_reports_them(client):
    missing = client.post("/predict", json={"inputs": [[0.0]]})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "model"]
    assert missing.json()["detail"][0]["type"] == "missing"

    wrong = client.post("/predict", json={"model": "m", "inputs": [[0.0]], "top_k": 0})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "top_k"]

    not_json = client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert not_json.json()["detail"][0]["loc"][0] == "body" and not_json.json()["detail"][0]["type"] == "json_invalid"

    not_text = client.post("/predict", content=b"\xff\xfe\x05B", headers={"Content-Type": "application/json"})
    assert not_text.status_code == 422 and not_text.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_key_is_checked_before_the_body_and_a_bad_path_parameter_is_the_protocols_400(client):
    anonymous = client.post("/predict", content=b"{not json", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"

    bad_version = client.post("/v2/models/m/versions/0/infer", json={"inputs": []})
    assert bad_version.status_code == 400
    assert bad_version.json() == {"error": "model version must be a positive integer; got '0'"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dependency_overrides_apply_to_the_lean_routes(client):
    """``app.dependency_overrides`` (app/deps.py's promise to tests) reaches the lean handler too."""

    def no_serving(request):
        raise NotFound("serving replaced by an override")

    client.app.dependency_overrides[get_serving] = no_serving
    try:
        answer = client.post("/predict", json={"model": "m", "inputs": [[0.0]]})
        assert answer.status_code == 404 and answer.json() == {"detail": "serving replaced by an override"}
        protocol = client.post("/v2/models/m/infer", json={"inputs": []})
        assert protocol.status_code == 404 and protocol.json() == {"error": "serving replaced by an override"}
    finally:
        client.app.dependency_overrides.clear()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_route_refuses_other_paths_by_their_end_and_still_matches_behind_a_root_path(client):
    routes = {route.path: route for route in client.app.router.routes if isinstance(route, LeanRoute)}
    predict, infer = routes["/predict"], routes["/v2/models/{name}/versions/{version}/infer"]

    def scope(path: str, method: str = "POST", root_path: str = "") -> dict:
        return {"type": "http", "path": root_path + path, "root_path": root_path, "method": method}

    assert predict.path_suffix == "/predict" and infer.path_suffix == "/infer"
    assert predict.matches(scope("/v2/models/m/infer"))[0] is Match.NONE
    assert infer.matches(scope("/predict"))[0] is Match.NONE
    assert infer.matches(scope("/v2/models/m/versions/3/ready"))[0] is Match.NONE
    # behind a proxy's root path the path ends the same way, and Starlette strips the root
    match, child = infer.matches(scope("/v2/models/m/versions/3/infer", root_path="/retain"))
    assert match is Match.FULL and child["path_params"] == {"name": "m", "version": "3"}
    assert predict.matches(scope("/predict", method="GET", root_path="/retain"))[0] is Match.PARTIAL
    assert client.get("/predict").status_code == 405
