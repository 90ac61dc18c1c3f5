"""Shared fixtures: real, migrated databases (SQLite and Postgres) and worker helpers.

Fixtures
    database_url     parametrised ["sqlite", "postgres"]: a fresh database per test, created and
                     dropped by the suite, schema from the Alembic migrations (never create_all).
                     SQLite: a file in the test's tmp dir. Postgres: ``CREATE DATABASE
                     retain_test_<random> TEMPLATE <migrated template>`` on 127.0.0.1:5432 (user
                     postgres); the template is migrated once per session, so a test pays only
                     the copy (~0.1 s); every database is dropped at teardown. Without a
                     reachable Postgres the postgres cases are skipped, saying so.
    settings         Settings on that database, artifacts in the test's tmp dir, embedded worker
                     off, cpu, short leases (5 s), fast polling.
    session_factory  sessionmaker bound to the test database.
    store            the ArtifactStore of ``settings``.

    run_worker_once  callable: the real worker loop in this process, reap + claim + run at most
                     one job; returns the number of jobs run (0 or 1).
    submit_task      callable ``submit(model="m", index=0, **form) -> (task_id, job_id)``: a small
                     slice of pmnist-conflict task ``index`` submitted through the real POST /tasks
                     service function (parse, split, store, enqueue); defaults train in a second
                     (mlp 1x32, 1 epoch, ewc_lambda 100). Skips when the shared data is missing.
    worker_env       callable ``worker_env(**RETAIN_overrides) -> env dict`` for a subprocess that
                     should see the test database and artifact store as a worker would.
    make_job         callable ``make_job(model="m") -> job_id``: model/dataset/task/job rows only (no
                     artifacts; nothing a worker could train), for queue and state-machine tests.
    worker_processes callable ``start(worker_id, *args, **RETAIN_env_overrides) -> Popen``: a real
                     `python -m workers` process on the test database (log in tmp_path/<id>.log);
                     every process still running at teardown is killed.
    api_client       ``api_client(settings)``: the same on other settings (a context manager).
    client           a TestClient of the API on the test database (no embedded worker), sending the admin
                     key the app's first start wrote to settings.admin_key_file (as a user on the machine
                     would find it); ``client.api_key`` is that key.
    pmnist_file      callable ``pmnist_file(k, n_train=250, n_test=100) -> Path``: an .npz slice of
                     pmnist-conflict task k as a user would upload it (1x28x28 uint8).
    empty_postgres_url  a new Postgres database with no schema (deployment-style tests migrate it).
    private_postgres a throwaway Postgres server of the test's own (initdb as the ``postgres`` OS user, a
                     free loopback port, fsync off) with one migrated database: ``.url``, ``.stop()``,
                     ``.start()``. For faults that take a whole server down; the shared server is never
                     touched. Skips without root, the ``postgres`` user or /usr/lib/postgresql/15/bin.
    shared_file      callable ``shared_file(*parts) -> Path`` into ../shared/data; skips without it.
    s3_endpoint      (session) moto's S3 server in its own process on a free loopback port; skips
                     without moto[server] and s3fs.
    s3               the standard AWS_* environment pointed at that server (what botocore under
                     s3fs reads, as a deployment would set it) and an s3fs filesystem on it, with
                     the bucket ``S3_BUCKET`` created.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
S3_BUCKET = "retain-data"
POSTGRES_ADMIN_URL = os.environ.get("RETAIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_url(database: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def _admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(statement)


def _dispose(url: str) -> None:
    from app.db.session import engine_for

    engine_for(url).dispose()


@pytest.fixture(scope="session")
def postgres_template():
    """A migrated Postgres database that every test database is copied from; None if unreachable."""
    name = f"retain_test_template_{uuid.uuid4().hex[:10]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except Exception as error:  # no server here: the postgres cases skip, with the reason
        yield error
        return
    from app.db.migrate import upgrade

    try:
        upgrade(_postgres_url(name))
        yield name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file that every SQLite test database is copied from."""
    from app.db.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "retain.db"
    upgrade(f"sqlite:///{path}")
    return path


def new_postgres_database(template: str | None = None) -> tuple[str, callable]:
    """CREATE DATABASE retain_test_<random> (a copy of ``template``, else empty); its URL and its drop."""
    name = f"retain_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    url = _postgres_url(name)

    def drop() -> None:
        _dispose(url)
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


def fresh_database(kind: str, tmp_path: Path, request) -> tuple[str, callable]:
    """A new migrated database of ``kind``; returns its URL and the function that drops it."""
    if kind == "sqlite":
        path = tmp_path / "retain.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
        return url, lambda: _dispose(url)
    template = request.getfixturevalue("postgres_template")
    if not isinstance(template, str):
        pytest.skip(f"Postgres is not reachable at {POSTGRES_ADMIN_URL}: {template}")
    return new_postgres_database(template)


@pytest.fixture
def empty_postgres_url(postgres_template):
    """A new, empty (unmigrated) Postgres database, for tests that migrate it as a deployment would."""
    if not isinstance(postgres_template, str):
        pytest.skip(f"Postgres is not reachable at {POSTGRES_ADMIN_URL}: {postgres_template}")
    url, drop = new_postgres_database()
    try:
        yield url
    finally:
        drop()


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A Postgres server in a directory of its own, run as the ``postgres`` OS user (see `private_postgres`)."""

    def __init__(self, directory: Path, port: int):
        self.directory, self.port = directory, port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/retain"

    def pg_ctl(self, *argv: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(POSTGRES_BIN / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                *argv,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self.pg_ctl(
            "-w",
            "-l",
            str(self.directory / "server.log"),
            "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")


@pytest.fixture
def private_postgres():
    import pwd
    import tempfile

    import psycopg

    if os.geteuid() != 0 or not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"a private Postgres server needs root and {POSTGRES_BIN}")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("a private Postgres server runs as the 'postgres' OS user, and there is none")
    directory = Path(tempfile.mkdtemp(prefix="retain-private-pg-"))  # not under pytest's root-only tmp dirs
    os.chown(directory, owner.pw_uid, owner.pw_gid)
    server = PrivatePostgres(directory, free_port())
    try:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(POSTGRES_BIN / "initdb"),
                "-D",
                str(directory / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        server.start()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres", autocommit=True) as admin:
            admin.execute("CREATE DATABASE retain")
        from app.db.migrate import upgrade

        upgrade(server.url)
        yield server
    finally:
        _dispose(server.url)
        with contextlib.suppress(subprocess.CalledProcessError):  # never started, or already stopped
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    url, drop = fresh_database(request.param, tmp_path, request)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def settings(database_url, tmp_path):
    from app.settings import Settings

    return Settings(
        database_url=database_url,
        artifact_uri=str(tmp_path / "artifacts"),
        embedded_worker=False,
        device="cpu",
        lease_seconds=5.0,
        heartbeat_seconds=0.5,
        poll_interval=0.05,
        progress_interval=0.2,
        max_upload_bytes=5_000_000,
        max_upload_samples=20_000,
        admin_key_file=str(tmp_path / "admin.key"),
        # The suite's toy tasks (one epoch of 250 samples, to run in a second) learn next to nothing, which
        # the service now rightly rejects; tests of the check itself turn it on (tests/service/test_safeguards.py).
        reject_not_learnt=False,
    )


@pytest.fixture
def session_factory(settings):
    from app.db.session import session_factory as make

    return make(settings)


@pytest.fixture
def store(settings):
    from app.storage.artifacts import artifact_store

    return artifact_store(settings)


@pytest.fixture
def run_worker_once(settings):
    from app.updates.loop import run_worker

    def run(worker_settings=None) -> int:
        return run_worker(worker_settings or settings, threading.Event(), once=True, worker_id="test-worker")

    return run


TINY_TASK_FORM = dict(
    name=None,
    architecture="mlp",
    architecture_options='{"hidden": [32]}',
    strategy="ewc",
    ewc_lambda="100",
    epochs=1,
    batch_size=None,
    lr=None,
    test_fraction=0.2,
    validation_fraction=0.1,
    max_forgetting=None,
)
"""POST /tasks form fields that train in about a second: mlp 1x32, one epoch, a fixed λ (no search)."""


def pmnist_slice(index: int, n_train: int, n_test: int) -> bytes:
    """The first samples of pmnist-conflict task ``index`` as the bytes of an .npz a user would upload."""
    import io

    import numpy as np

    with np.load(shared_data_file("pmnist-conflict", f"task{index}.npz"), allow_pickle=False) as data:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            x=data["x"][:n_train],
            y=data["y"][:n_train],
            x_test=data["x_test"][:n_test],
            y_test=data["y_test"][:n_test],
        )
    return buffer.getvalue()


def shared_data_file(*parts: str) -> Path:
    """A file of the shared data beside the repository; the test is skipped, saying so, without it."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (the shared data lies beside the repository)")
    return path


@pytest.fixture(scope="session")
def shared_file():
    """``shared_file(*parts) -> Path`` of the shared data (skips the test without it)."""
    return shared_data_file


@pytest.fixture
def pmnist_file(tmp_path):
    """``pmnist_file(k, n_train=250, n_test=100) -> Path``: an .npz of the first samples of pmnist-conflict
    task k (x, y, x_test, y_test; 1x28x28 uint8 digits, labels permuted per task), as a user would upload it."""

    def make(index: int, n_train: int = 250, n_test: int = 100) -> Path:
        path = tmp_path / f"task{index}.npz"
        path.write_bytes(pmnist_slice(index, n_train, n_test))
        return path

    return make


@pytest.fixture
def submit_task(settings, session_factory, store):
    from app.tasks.schemas import TaskRequest
    from app.tasks.service import submit_task as submit

    def submit_one(model: str = "m", index: int = 0, n_train: int = 200, n_test: int = 100, **form) -> tuple[int, int]:
        request = TaskRequest.from_form(model=model, **{**TINY_TASK_FORM, **form})
        with session_factory() as session:
            out = submit(session, store, settings, request, f"task{index}.npz", pmnist_slice(index, n_train, n_test))
        return out.id, out.job_id

    return submit_one


def environment_for(settings, **overrides) -> dict[str, str]:
    """Environment for a `python -m workers` process using ``settings`` (overrides: RETAIN_* names)."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "RETAIN_ARTIFACT_URI": settings.artifact_uri,
        "RETAIN_DEVICE": settings.device,
        "RETAIN_LEASE_SECONDS": str(settings.lease_seconds),
        "RETAIN_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "RETAIN_POLL_INTERVAL": str(settings.poll_interval),
        "RETAIN_PROGRESS_INTERVAL": str(settings.progress_interval),
        "RETAIN_MAX_ATTEMPTS": str(settings.max_attempts),
        "RETAIN_REJECT_NOT_LEARNT": str(settings.reject_not_learnt).lower(),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # two workers on two cores: no thread oversubscription
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@pytest.fixture
def worker_env(settings):
    """``worker_env(**RETAIN_overrides) -> dict``: the environment of a worker process on the test database."""
    return lambda **overrides: environment_for(settings, **overrides)


@pytest.fixture
def worker_processes(settings, tmp_path):
    from app.processes import ProcessGroup

    with ProcessGroup(tmp_path, environment_for(settings)) as group:  # kills what still runs at teardown
        yield lambda worker_id, *args, **env: group.start(
            worker_id, sys.executable, "-m", "workers", "--worker-id", worker_id, *args, **env
        )


@contextmanager
def keyed_client(settings):
    """A TestClient of the app on ``settings`` that sends the admin key its first start wrote to
    ``settings.admin_key_file`` (the real bootstrap path, as a user on the machine finds it)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as test_client:
        test_client.api_key = Path(settings.admin_key_file).read_text().strip()
        test_client.headers["Authorization"] = f"Bearer {test_client.api_key}"
        yield test_client


@pytest.fixture(scope="session")
def api_client():
    """``api_client(settings)``: a context manager giving a keyed TestClient (see `keyed_client`)."""
    return keyed_client


@pytest.fixture
def client(settings):
    """The API on the test database (no embedded worker: tests run workers explicitly); a TestClient."""
    with keyed_client(settings) as test_client:
        yield test_client


@pytest.fixture
def make_job(session_factory):
    """``make_job(model="m") -> job id``: model (created on first use), dataset, task and queued job
    rows, for tests of the queue and the state machine (the dataset points at no artifact)."""
    from sqlalchemy import select

    from app.db.tables import Dataset, Model, Task
    from app.jobs.queue import enqueue

    def make(model: str = "m", max_attempts: int = 3) -> int:
        with session_factory() as session:
            row = session.scalar(select(Model).where(Model.name == model))
            if row is None:
                row = Model(name=model, architecture="mlp", family="ewc", input_shape=[4], options={})
                session.add(row)
            dataset = Dataset(
                sha256="0" * 64,
                format="npz",
                n_train=8,
                n_validation=2,
                n_test=2,
                input_shape=[4],
                labels=[0, 1],
                artifact_uri="file:///nowhere",
                artifact_sha256="0" * 64,
                artifact_size=0,
            )
            session.add(dataset)
            session.flush()
            task = Task(model_id=row.id, dataset_id=dataset.id, strategy="ewc", hyperparameters={}, status="queued")
            session.add(task)
            session.flush()
            job = enqueue(session, task, max_attempts=max_attempts)
            session.commit()
            return job.id

    return make


# ---------------------------------------------------------------------------- S3 (moto server)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server in its own process on a free loopback port."""
    pytest.importorskip("moto.server", reason="moto is not installed (pip install 'moto[server]')")
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'retain[s3]')")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115 -- open while the server runs
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto server did not start on {endpoint} (see {log.name})")
            time.sleep(0.2)
    yield endpoint
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """AWS_* environment for the moto server, and an s3fs filesystem with ``S3_BUCKET`` in it."""
    import s3fs

    for key in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists(S3_BUCKET):
        fs.mkdir(S3_BUCKET)
    return fs
