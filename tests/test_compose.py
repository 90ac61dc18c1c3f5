"""compose.yaml (repository root) is accepted by `docker-compose config` and describes the topology.

No Docker engine runs in CI; `config` parses, interpolates and validates the file
without one, and its normalised output is what the assertions read. Every call gets an
empty environment (PATH only), as `docker compose up` typed in a fresh shell would.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # installed with uvicorn[standard]

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (Debian: apt-get install docker-compose)",
)


ADMIN_KEY = "retain_compose-test-admin-key-0123456789"


def test_compose_up_as_typed_needs_no_environment_at_all():
    """`docker compose up` in a fresh shell: no env file, no variables but PATH."""
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def compose_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "RETAIN_ADMIN_KEY": ADMIN_KEY, **(env or {})}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), *args, "config"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    """The resolved configuration with only the admin key set: `RETAIN_ADMIN_KEY=... docker compose up`."""
    result = compose_config()
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_one_compose_file_at_the_root_with_the_four_services(config):
    assert not (REPO / "docker" / "compose.yaml").exists(), "one source: the root compose.yaml"
    default = {name for name, service in config["services"].items() if not service.get("profiles")}
    assert default == {"db", "migrate", "api", "worker"}
    assert config["services"]["worker-cpu"]["profiles"] == ["cpu"]
    assert config["services"]["api"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert Path(config["services"]["api"]["build"]["context"]) == REPO


def test_the_api_takes_its_admin_key_from_the_environment_or_keeps_the_one_it_creates(config):
    assert config["services"]["api"]["environment"]["RETAIN_ADMIN_KEY"] == ADMIN_KEY
    bare = compose_config(env={"RETAIN_ADMIN_KEY": ""})  # `docker compose up` as typed, no env file
    assert bare.returncode == 0, bare.stderr
    api = yaml.safe_load(bare.stdout)["services"]["api"]
    assert api["environment"]["RETAIN_ADMIN_KEY"] == ""  # the settings read "" as unset: auth stays on
    assert api["environment"]["RETAIN_ADMIN_KEY_FILE"] == "/data/keys/admin.key"
    assert any(str(volume).endswith(":/data/keys") or "/data/keys" in str(volume) for volume in api["volumes"])
    assert "RETAIN_AUTH" not in api["environment"]


def test_postgres_is_never_published_and_its_default_password_is_overridable(config):
    db = config["services"]["db"]
    assert "ports" not in db and "expose" not in db
    assert "network_mode" not in db
    default = db["environment"]["POSTGRES_PASSWORD"]
    assert default and f":{default}@db:5432/" in config["services"]["api"]["environment"]["DATABASE_URL"]
    result = compose_config(env={"POSTGRES_PASSWORD": "s3cret"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    assert ":s3cret@db:5432/" in services["worker"]["environment"]["DATABASE_URL"]


def test_postgres_has_a_pg_isready_healthcheck_and_a_named_volume(config):
    db = config["services"]["db"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0]
    source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
    assert source in config["volumes"]


def test_migrate_runs_alembic_once_after_the_database_is_healthy(config):
    migrate = config["services"]["migrate"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"


def test_api_waits_for_db_and_migration_and_probes_readyz(config):
    api = config["services"]["api"]
    assert api["command"][:2] == ["retain", "serve"] and "--no-migrate" in api["command"]
    assert api["environment"]["RETAIN_WORKERS"] == "auto", "one API process per core unless RETAIN_WORKERS says"
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["environment"]["RETAIN_EMBEDDED_WORKER"] == "false"
    port = api["ports"][0]
    published = (port["host_ip"], str(port["published"])) if isinstance(port, dict) else tuple(port.split(":")[:2])
    assert published == ("127.0.0.1", "8000"), "the API binds to loopback unless RETAIN_BIND says otherwise"


def test_worker_reserves_a_gpu_and_scales(config):
    worker = config["services"]["worker"]
    assert worker["command"][:3] == ["python", "-m", "workers"]
    assert "cuda" in worker["command"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "capabilities": ["gpu"]}.items() <= devices[0].items()
    assert "container_name" not in worker, "a fixed container name would forbid --scale worker=N"
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["stop_grace_period"] in ("10m", "10m0s", 600)


def test_api_and_workers_share_the_artifact_volume_and_database(config):
    services = config["services"]
    for name in ("api", "worker", "migrate"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@db:5432/" in environment["DATABASE_URL"]
    mounts = {
        name: {
            (v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2])
            for v in services[name]["volumes"]
        }
        for name in ("api", "worker")
    }
    assert mounts["api"] & mounts["worker"], "api and workers must mount the same artifact volume"
    assert (
        services["api"]["environment"]["RETAIN_ARTIFACT_URI"]
        == services["worker"]["environment"]["RETAIN_ARTIFACT_URI"]
    )


def test_cpu_profile_adds_a_worker_without_gpu_reservation():
    result = compose_config("--profile", "cpu")
    assert result.returncode == 0, result.stderr
    worker_cpu = yaml.safe_load(result.stdout)["services"]["worker-cpu"]
    assert "deploy" not in worker_cpu
    assert worker_cpu["command"][-2:] == ["--device", "cpu"]


def test_secrets_can_come_from_an_env_file(tmp_path):
    env_file = tmp_path / "retain.env"
    env_file.write_text(f"POSTGRES_PASSWORD=from-the-file\nRETAIN_ADMIN_KEY={ADMIN_KEY}-from-the-file\n")
    result = subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "from-the-file"
    assert ":from-the-file@db:5432/" in services["api"]["environment"]["DATABASE_URL"]
    assert services["api"]["environment"]["RETAIN_ADMIN_KEY"] == f"{ADMIN_KEY}-from-the-file"


def test_settings_come_from_the_environment_with_defaults():
    result = compose_config(env={"RETAIN_PORT": "9001", "RETAIN_WORKER_DEVICE": "auto"})
    assert result.returncode == 0, result.stderr
    assert "9001" in result.stdout
    assert yaml.safe_load(result.stdout)["services"]["worker"]["command"] == [
        "python",
        "-m",
        "workers",
        "--device",
        "auto",
    ]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_runs_as_non_root_with_a_healthcheck():
    instructions = dockerfile_instructions()
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    healthchecks = [arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK"]
    assert healthchecks and "/readyz" in healthchecks[-1]


def test_the_image_installs_the_package_not_the_checkout():
    """Non-editable, so the image runs what a wheel ships (migrations included); the packaged
    alembic.ini in the working directory lets compose's migrate run `alembic upgrade head`."""
    instructions = dockerfile_instructions()
    installs = [
        arguments for keyword, arguments in instructions if keyword == "RUN" and "pip install --no-deps" in arguments
    ]
    assert installs and not any(" -e " in f" {arguments} " or "--editable" in arguments for arguments in installs)
    assert ("COPY", "migrations/alembic.ini ./alembic.ini") in instructions


def test_no_secret_is_baked_into_the_image():
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not any(word in arguments.upper() for word in ("PASSWORD", "SECRET", "API_KEY", "TOKEN")), arguments
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_config_output_is_stable_json_serialisable(config):
    # Guards against YAML features docker-compose v1 and v2 read differently.
    json.dumps(config)


def test_the_s3_profile_points_api_and_workers_at_one_bucket_and_adds_minio():
    result = compose_config("--env-file", str(REPO / "docker" / "s3.env"), "--profile", "s3")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["minio"]["profiles"] == ["s3"] and "ports" not in services["minio"]
    for name in ("api", "worker", "migrate"):
        environment = services[name]["environment"]
        assert environment["RETAIN_ARTIFACT_URI"].startswith("s3://")
        assert environment["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert environment["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
        assert environment["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]


def test_without_the_s3_settings_no_aws_variable_reaches_the_containers(config):
    for name in ("api", "worker"):
        assert all(
            config["services"][name]["environment"][key] is None
            for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        )
