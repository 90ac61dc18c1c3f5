"""API keys: scopes nest (predict < train < admin), 401 and 403 are distinct, keys are stored hashed
and shown once, revocation is immediate, the first admin key is written 0600, RETAIN_AUTH=off warns."""

import hashlib
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db.tables import ApiKey

# (method, path, body, scope needed): each answers something other than 401/403 once the key suffices
ROUTES = [
    ("GET", "/jobs", None, "predict"),
    ("GET", "/tasks/424242", None, "predict"),
    ("GET", "/models", None, "predict"),
    ("POST", "/predict", {"model": "nope", "inputs": [[0.0]]}, "predict"),
    ("GET", "/v2/models/nope", None, "predict"),
    ("POST", "/jobs/424242/cancel", None, "train"),
    ("POST", "/tasks", None, "train"),
    ("GET", "/models/nope/feedback-policy", None, "predict"),
    ("GET", "/models/nope/live-accuracy", None, "predict"),
    ("GET", "/models/nope/triggers", None, "predict"),
    ("PUT", "/models/nope/feedback-policy", {}, "train"),
    ("POST", "/feedback", {"model": "nope", "items": [{"prediction_id": "x", "label": 1}]}, "train"),
    ("POST", "/feedback/file", None, "train"),
    ("POST", "/tasks/424242/promote", None, "admin"),
    ("PUT", "/models/nope/serving-version", {"version": 1}, "admin"),
    ("GET", "/keys", None, "admin"),
    ("DELETE", "/keys/424242", None, "admin"),
]
ORDER = ["predict", "train", "admin"]
OPEN = [
    "/livez",
    "/readyz",
    "/metrics",
    "/v2/health/live",
    "/v2/health/ready",
    "/ui",
    "/ui/static/dashboard.js",
    "/openapi.json",
]


def new_key(client, scope: str, name: str = "test") -> dict:
    answer = client.post("/keys", json={"scope": scope, "name": name})
    assert answer.status_code == 201, answer.text
    return answer.json()


def message(answer) -> str:
    """The error text: `detail` on the API, `error` on the Open Inference Protocol's routes."""
    return answer.json().get("detail") or answer.json()["error"]


def call(client, method, path, body, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {"Authorization": ""}
    return client.request(method, path, json=body, headers=headers)


def test_each_scope_reaches_its_routes_and_is_refused_the_others(client):
    keys = {scope: new_key(client, scope)["key"] for scope in ORDER}
    for method, path, body, needed in ROUTES:
        missing = call(client, method, path, body, None)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer", (path, missing.text)
        wrong = call(client, method, path, body, "retain_not-a-key")
        assert wrong.status_code == 401 and "not valid" in message(wrong), (path, wrong.text)
        for scope, key in keys.items():
            answer = call(client, method, path, body, key)
            if ORDER.index(scope) >= ORDER.index(needed):
                assert answer.status_code not in (401, 403), (scope, method, path, answer.text)
            else:
                assert answer.status_code == 403, (scope, method, path, answer.text)
                assert f"scope {needed!r}" in message(answer)


def test_health_metrics_and_the_dashboard_page_are_open(client):
    for path in OPEN:
        assert client.get(path, headers={"Authorization": ""}).status_code == 200, path


def test_every_route_with_a_key_documents_401_and_403(client):
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            secured = bool(operation.get("security"))
            open_paths = ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")
            assert secured == (path not in open_paths), (method, path)
            if secured:
                assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_a_key_is_shown_once_stored_hashed_and_revoked_at_once(client, session_factory):
    created = new_key(client, "train", "ci")
    secret = created["key"]
    assert secret.startswith("retain_") and len(secret) > 40
    listed = client.get("/keys").json()
    assert all("key" not in key for key in listed)
    assert {"id": created["id"], "name": "ci", "scope": "train"}.items() <= next(
        key for key in listed if key["id"] == created["id"]
    ).items()
    with session_factory() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
        assert row.key_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr([getattr(row, column) for column in ApiKey.__table__.columns.keys()])  # noqa: SIM118 -- names, not Columns

    assert call(client, "GET", "/jobs", None, secret).status_code == 200
    revoked = client.delete(f"/keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert call(client, "GET", "/jobs", None, secret).status_code == 401


def test_the_last_admin_key_cannot_be_revoked(client):
    first = next(key for key in client.get("/keys").json() if key["scope"] == "admin")
    answer = client.delete(f"/keys/{first['id']}")
    assert answer.status_code == 409 and "last active admin key" in answer.json()["detail"]
    # rotation: a new admin key, then the old one revoked
    second = new_key(client, "admin", "rotated")
    assert call(client, "DELETE", f"/keys/{first['id']}", None, second["key"]).status_code == 200
    assert client.get("/keys").status_code == 401  # the client's own (first) key is gone


def test_first_start_writes_the_admin_key_owner_only(client, settings):
    path = Path(settings.admin_key_file)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == client.api_key


def test_a_given_admin_key_is_registered_and_no_file_written(settings, tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app

    given = "k" * 40
    custom = settings.model_copy(update={"admin_key": given, "admin_key_file": str(tmp_path / "none.key")})
    with TestClient(create_app(custom)) as test_client:
        assert call(test_client, "GET", "/keys", None, given).status_code == 200
    assert not (tmp_path / "none.key").exists()


def test_auth_off_warns_and_needs_no_key(settings, capfd):
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings.model_copy(update={"auth": "off"}))) as test_client:
        assert test_client.get("/jobs").status_code == 200
        assert test_client.get("/keys").status_code == 200
    assert "RETAIN_AUTH=off" in capfd.readouterr().err
    assert not Path(settings.admin_key_file).exists()


@pytest.mark.parametrize(
    "body",
    [
        {"scope": "root", "name": "x"},
        {"scope": "train", "name": ""},
        {"scope": "train", "name": "a\x00b"},
        {"scope": "train"},
    ],
)
def test_a_bad_key_request_is_refused(client, body):
    assert client.post("/keys", json=body).status_code == 422


def test_a_verified_key_is_trusted_for_the_cache_ttl_and_a_revocation_here_applies_at_once(client, settings):
    """Predictions do not query the keys table each time; revoking through this API forgets the key at once."""
    from sqlalchemy import update

    from app.db.session import get_engine
    from app.db.tables import ApiKey

    made = client.post("/keys", json={"scope": "predict", "name": "cached"}).json()
    reader = {"Authorization": f"Bearer {made['key']}"}
    assert client.get("/models", headers=reader).status_code == 200
    with get_engine(settings).begin() as connection:  # revoked behind this replica's back (another replica)
        connection.execute(update(ApiKey).where(ApiKey.id == made["id"]).values(revoked_at=ApiKey.created_at))
    assert client.get("/models", headers=reader).status_code == 200  # still trusted within the TTL (1 s)
    time.sleep(settings.auth_cache_seconds + 0.1)
    assert client.get("/models", headers=reader).status_code == 401  # asked the database again

    second = client.post("/keys", json={"scope": "predict", "name": "revoked here"}).json()
    assert client.get("/models", headers={"Authorization": f"Bearer {second['key']}"}).status_code == 200
    assert client.delete(f"/keys/{second['id']}").status_code == 200
    assert client.get("/models", headers={"Authorization": f"Bearer {second['key']}"}).status_code == 401
