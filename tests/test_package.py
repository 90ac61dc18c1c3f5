"""The wheel is a complete service: installed non-editable, away from the checkout, `retain serve`
creates its database, becomes ready, learns a task and predicts.

A fresh venv in tmp gets only the wheel; torch and the other dependencies come from this test
environment through a .pth line (installing them again would take minutes). A .pth line only
appends a directory to sys.path, so the editable install's finder there stays inactive and
`app` must come from the wheel, which the test checks.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "workers", "migrations")
# Local state and everything the wheel does not need; the rest of the checkout is copied so the
# build never writes build/ or egg-info into the shared tree.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "data",
    "build",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    "tests",
    "benchmarks",
    "docs",
)


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    # With build isolation, as a user's `pip wheel .` (the test venv's own setuptools may be too old).
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("retain-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(source).as_posix()
        for package in PACKAGES
        for path in (source / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert expected - shipped == set(), "files of the packages missing from the wheel"
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # The wheel first, while the venv sees nothing else: pip must not find the editable retain.
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel)
    site_packages = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(site_packages) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    """No database, artifact or path setting of this test run leaks into the installed service."""
    drop = ("DATABASE_URL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if key not in drop and not key.startswith("RETAIN_")}
    return {**env, "RETAIN_TORCH_THREADS": "1", **extra}  # 1 thread: the CI machine's cores are shared


def wait_ready(server: subprocess.Popen, log: Path, timeout: float = 60.0) -> str:
    """The URL of the server once /readyz says ok; port 0 lets the kernel pick a free port."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        assert server.poll() is None, f"retain serve exited:\n{log.read_text()}"
        if url is None and (found := re.search(r"Uvicorn running on (http://\S+)", log.read_text())):
            url = found.group(1)
        if url:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.25)
    raise AssertionError(f"not ready after {timeout:.0f}s:\n{log.read_text()}")


def test_the_installed_wheel_serves_learns_and_predicts(tmp_path):
    venv = fresh_venv(tmp_path, build_wheel(tmp_path))
    python = venv / "bin" / "python"
    workdir = tmp_path / "run"
    workdir.mkdir()

    where = run(
        python,
        "-c",
        "import app, migrations, workers; print(app.__file__, migrations.__file__, workers.__file__)",
        cwd=workdir,
        env=clean_env(),
    ).stdout.split()
    assert all(Path(path).is_relative_to(venv) for path in where), where

    # The image's migrate service: the packaged alembic.ini alone in the working directory.
    image_workdir = tmp_path / "image"
    image_workdir.mkdir()
    shutil.copy(REPO / "migrations" / "alembic.ini", image_workdir / "alembic.ini")
    run(
        python,
        "-m",
        "alembic",
        "upgrade",
        "head",
        cwd=image_workdir,
        env=clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'image.db'}"),
    )
    with sqlite3.connect(tmp_path / "image.db") as db:
        assert db.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)

    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [venv / "bin" / "retain", "serve", "--port", "0", "--no-access-log"],
            cwd=workdir,
            env=clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = wait_ready(server, log)
        assert (workdir / "data" / "retain.db").is_file(), "the default SQLite database, under the working directory"

        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, size=100)
        x = (rng.normal(size=(100, 8)) + np.where(y[:, None] == 1, 2.0, -2.0)).astype(np.float32)
        np.savez(tmp_path / "task.npz", x=x, y=y)
        key_file = workdir / "data" / "admin.key"  # the first start's admin key, owner-only
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.read_text().strip() in log.read_text(), "the key is printed once at first start"
        headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        with (
            httpx.Client(base_url=url, timeout=30, headers=headers) as client,
            (tmp_path / "task.npz").open("rb") as upload,
        ):
            submitted = client.post(
                "/tasks", data={"model": "m", "epochs": "1", "ewc_lambda": "1"}, files={"file": ("task.npz", upload)}
            )
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["job_id"]
            deadline = time.monotonic() + 60
            while (job := client.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, f"job still {job['status']}:\n{log.read_text()}"
                time.sleep(0.25)
            assert job["status"] == "succeeded", job

            answer = client.post("/predict", json={"model": "m", "inputs": x[:4].tolist()})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == job["model_version"]
            assert [p["label"] in (0, 1) for p in answer.json()["predictions"]] == [True] * 4
    finally:
        server.terminate()
        server.wait(timeout=30)
