"""The prediction routes' own handler (app.predict.lean_route.py): the same answers FastAPI's would give,
without its dependency solver on the hot path."""

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match

from app.deps import get_serving
from app.errors import NotFound
from app.predict.router import oip_router


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_prediction_routes_are_lean_and_the_rest_keep_fastapis_handler(client):
    own = [route for route in client.app.router.routes if isinstance(route, APIRoute)]
    lean = {route.path: route.lean for route in own + oip_router.routes}
    assert lean["/predict"] and lean["/v2/models/{name}/infer"] and lean["/v2/models/{name}/versions/{version}/infer"]
    # sync endpoints (thread pool) and endpoints returning a model (FastAPI's serialisation) stay FastAPI's
    assert not lean["/v2/models/{name}"] and not lean["/v2/health/ready"] and not lean["/v2"]
    # on the app's own router, not an included one: matched once per request, not twice
    assert [route.path for route in own] == [
        "/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ]
    # and at its head, before the documentation routes FastAPI adds first, matched on every request before them
    assert [route.path for route in client.app.router.routes[:3]] == [route.path for route in own]
    assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200


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
    routes = {route.path: route for route in client.app.router.routes if isinstance(route, APIRoute)}
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
