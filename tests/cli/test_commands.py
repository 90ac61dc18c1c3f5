"""The `retain` commands against a real server: `retain serve` in a subprocess (embedded
default: SQLite in a temp dir, in-process worker), driven over real HTTP.

Most commands run in-process through `app.cli.main` (fast, output captured);
the console script's own process is exercised for --json and the error paths.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app import cli
from app.cli import render
from app.demo import digits_tasks
from app.processes import LocalServer

REPO = Path(__file__).resolve().parents[2]
FAST = ["--epochs", "8", "--ewc-lambda", "100"]  # a small budget that still learns; a fixed λ skips the search

pytestmark = pytest.mark.slow  # a real server process per module


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    """Two small conflicting tasks (digits, permuted digits), as a user would upload them."""
    return digits_tasks(tmp_path_factory.mktemp("cli-data"), samples=400)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer(tmp_path_factory.mktemp("cli-server")) as running:
        yield running


def run_cli(capsys, server, *argv: str) -> tuple[int, str, str]:
    render.console.width = 200  # tables unclipped in captured output
    code = cli.main(["--url", server.url, "--api-key", server.api_key, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_script(*argv: str, url: str, api_key: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The CLI as its own process, as a user's shell runs it (the key from RETAIN_API_KEY when given)."""
    env = {key: value for key, value in os.environ.items() if key != "RETAIN_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**env, "RETAIN_URL": url, "COLUMNS": "200", **({"RETAIN_API_KEY": api_key} if api_key else {})},
    )


@pytest.fixture(scope="module")
def taught(server, task_files):
    """Model `cli-m` taught A then B through `retain teach --follow --json`; returns both jobs."""
    jobs = []
    for task in task_files:
        result = run_script(
            "teach",
            str(task.path),
            "--model",
            "cli-m",
            "--name",
            task.name,
            "--follow",
            "--json",
            *FAST,
            url=server.url,
            api_key=server.api_key,
        )
        assert result.returncode in (0, 3), result.stderr  # 3 = stored, not promoted (forgetting gate)
        jobs.append(json.loads(result.stdout))
    return jobs


def test_teach_follow_draws_progress_and_reports_the_new_version(capsys, server, task_files):
    code, out, err = run_cli(
        capsys, server, "teach", str(task_files[0].path), "--model", "cli-follow", "--name", "a", "--follow", *FAST
    )
    assert code == 0, err
    assert "job" in out and "100%" in out  # the bar's final state
    assert "learnt: model cli-follow version 1" in out
    assert "Test accuracy, version – → 1" in out and "new task" in out

    # a later update shows every learnt task's accuracy before and after it
    code, out, err = run_cli(
        capsys,
        server,
        "teach",
        str(task_files[1].path),
        "--model",
        "cli-follow",
        "--name",
        "b",
        "--follow",
        "--strategy",
        "finetune",
        "--epochs",
        "8",
        "--max-forgetting",
        "1.0",
    )
    assert code == 0, err
    assert "learnt: model cli-follow version 2" in out
    assert "Test accuracy, version 1 → 2" in out
    assert re.search(r"\d+: a ", out) and re.search(r"\d+: b ", out)


def test_teach_follow_json_returns_finished_jobs(taught):
    for job in taught:
        assert job["status"] in ("succeeded", "rejected")
        assert job["progress"]["fraction"] == pytest.approx(1.0)
    assert [job["model_version"] for job in taught] == [1, 2]


def test_accuracy_shows_task_a_after_every_update(capsys, server, taught):
    first_task = taught[0]["task_id"]
    code, out, err = run_cli(capsys, server, "accuracy", str(first_task), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [entry["after_task_id"] for entry in report["history"]] == [job["task_id"] for job in taught]

    code, out, err = run_cli(capsys, server, "accuracy", str(first_task))
    assert code == 0, err
    assert f"Accuracy of task {first_task}" in out
    for entry in report["history"]:
        assert f"{entry['accuracy']:.3f}" in out
    assert "forgetting" in out


def test_matrix_shows_every_task_after_every_update(capsys, server, taught, task_files):
    code, out, err = run_cli(capsys, server, "matrix", "cli-m")
    assert code == 0, err
    for task in task_files:
        assert task.name in out
    assert "BWT" in out and "average accuracy" in out
    code, out, err = run_cli(capsys, server, "matrix", "cli-m", "--json")
    assert code == 0, err
    assert len(json.loads(out)["rows"]) == 2


def test_predict_from_npz_with_top_k(capsys, server, taught, task_files):
    code, out, err = run_cli(
        capsys,
        server,
        "predict",
        "cli-m",
        str(task_files[1].path),
        "--key",
        "x_test",
        "--limit",
        "5",
        "--top-k",
        "3",
        "--json",
    )
    assert code == 0, err
    answer = json.loads(out)
    assert len(answer["predictions"]) == 5
    assert all(len(p["top_k"]) == 3 for p in answer["predictions"])

    code, out, err = run_cli(
        capsys, server, "predict", "cli-m", str(task_files[1].path), "--key", "x_test", "--limit", "5"
    )
    assert code == 0, err
    assert "match the labels in the file" in out  # y_test shown beside the predictions


def test_predict_from_a_json_string(capsys, server, taught, task_files):
    sample = np.load(task_files[0].path)["x_test"][:2].tolist()
    code, out, err = run_cli(capsys, server, "predict", "cli-m", json.dumps(sample), "--json")
    assert code == 0, err
    assert len(json.loads(out)["predictions"]) == 2


def test_versions_and_rollback(capsys, server, taught, task_files):
    code, out, err = run_cli(capsys, server, "versions", "cli-m", "--json")
    assert code == 0, err
    versions = json.loads(out)
    assert sorted(v["number"] for v in versions) == [1, 2]

    sample = json.dumps(np.load(task_files[0].path)["x_test"][:1].tolist())
    try:
        code, out, err = run_cli(capsys, server, "rollback", "cli-m", "1")
        assert code == 0, err
        assert "now serves version 1" in out
        code, out, err = run_cli(capsys, server, "predict", "cli-m", sample, "--json")
        assert json.loads(out)["model_version"] == 1
        code, out, err = run_cli(capsys, server, "versions", "cli-m")
        assert code == 0, err
        assert "1 *" in out
    finally:
        run_cli(capsys, server, "rollback", "cli-m", "2")
    code, out, err = run_cli(capsys, server, "predict", "cli-m", sample, "--json")
    assert json.loads(out)["model_version"] == 2


@pytest.mark.parametrize("command", [["jobs"], ["tasks"], ["models"], ["versions", "cli-m"], ["matrix", "cli-m"]])
def test_every_read_command_prints_parseable_json(server, taught, command):
    result = run_script(*command, "--json", url=server.url, api_key=server.api_key)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)


def test_jobs_table_lists_the_updates(capsys, server, taught):
    code, out, err = run_cli(capsys, server, "jobs", "--model", "cli-m")
    assert code == 0, err
    for job in taught:
        assert job["status"] in out


def closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_server_is_one_clear_message():
    result = run_script("jobs", url=f"http://127.0.0.1:{closed_port()}")
    assert result.returncode == 1
    assert "cannot reach the retain server" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_4xx_prints_the_servers_message(server, taught):
    result = run_script("accuracy", "987654", url=server.url, api_key=server.api_key)
    assert result.returncode == 1
    assert "404" in result.stderr
    assert "Traceback" not in result.stderr

    result = run_script("predict", "no-such-model", "[[0, 1]]", url=server.url, api_key=server.api_key)
    assert result.returncode == 1
    assert "no-such-model" in result.stderr


def test_teach_a_file_of_the_wrong_shape_is_refused_with_the_reason(server, taught, tmp_path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((20, 3), dtype=np.float32), y=np.arange(20) % 2)
    result = run_script(
        "teach", str(wrong), "--model", "cli-m", "--name", "wrong", url=server.url, api_key=server.api_key
    )
    assert result.returncode == 1
    assert "shape" in result.stderr.lower()


def test_ccll_predict_needs_task_and_works_with_it(capsys, server, task_files, tmp_path):
    """A ccll model keeps per-task modules: predict without --task is refused with the server's reason."""
    data = dict(np.load(task_files[0].path))
    images = tmp_path / "digit-images.npz"  # ccll calibrates conv blocks: image-shaped samples
    np.savez(
        images,
        x=data["x"][:200].reshape(-1, 1, 8, 8),
        y=data["y"][:200],
        x_test=data["x_test"][:100].reshape(-1, 1, 8, 8),
        y_test=data["y_test"][:100],
    )
    code, out, err = run_cli(
        capsys,
        server,
        "teach",
        str(images),
        "--model",
        "cli-ccll",
        "--name",
        "a",
        "--strategy",
        "ccll",
        "--architecture",
        "cnn",
        "--option",
        "alpha=2",
        "--epochs",
        "8",
        "--follow",
        "--json",
    )
    assert code == 0, err
    task_id = json.loads(out)["task_id"]

    code, out, err = run_cli(capsys, server, "predict", "cli-ccll", str(images), "--limit", "3")
    assert code == 1
    assert "task_id" in err and "422" in err

    code, out, err = run_cli(
        capsys, server, "predict", "cli-ccll", str(images), "--limit", "3", "--task", str(task_id), "--json"
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["task_id"] == task_id and len(answer["predictions"]) == 3

    code, out, err = run_cli(capsys, server, "models", "--json")
    model = next(m for m in json.loads(out) if m["name"] == "cli-ccll")
    family = model.get("family", model.get("strategy"))  # the API is renaming "strategy" to "family"
    assert (family, model["architecture"], model["options"]) == ("ccll", "cnn", {"alpha": 2})


def test_teach_a_folder_of_image_folders_then_matrix_png(capsys, server, tmp_path):
    """A folder in torchvision's ImageFolder layout is zipped on the fly and learnt; the matrix renders as a PNG."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in (3, 7):
        folder = tmp_path / "shapes" / f"class{label}"
        folder.mkdir(parents=True)
        for i in np.flatnonzero(digits.target == label)[:40]:
            Image.fromarray((digits.images[i] * 16).astype(np.uint8), "L").save(folder / f"{i}.png")
    code, out, err = run_cli(
        capsys,
        server,
        "teach",
        str(tmp_path / "shapes"),
        "--model",
        "cli-images",
        "--name",
        "folders",
        "--follow",
        *FAST,
        "--epochs",
        "30",  # 72 training images: one step an epoch, and an update that learns nothing is rejected
    )
    assert code == 0, err
    assert "model cli-images version 1" in out
    model = json.loads(run_script("models", "--json", url=server.url, api_key=server.api_key).stdout)
    assert [m["input_shape"] for m in model if m["name"] == "cli-images"] == [[1, 8, 8]]

    png = tmp_path / "matrix.png"
    code, out, err = run_cli(capsys, server, "matrix", "cli-images", "--png", str(png))
    assert code == 0, err
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 50 and image.height > 20


def test_teach_a_missing_path_says_what_it_expected(capsys, server, tmp_path):
    code, out, err = run_cli(capsys, server, "teach", str(tmp_path / "nothing-here"), "--model", "m", "--name", "x")
    assert code == 1 and "neither a file nor a folder" in err


def test_delete_and_gc(capsys, server, task_files):
    """`retain delete` asks for --yes, passes the server's refusal on (the serving version), deletes a model;
    `retain gc --dry-run` counts and removes nothing."""
    taught = run_script(
        "teach",
        str(task_files[0].path),
        "--model",
        "cli-doomed",
        "--name",
        "doomed",
        "--follow",
        "--json",
        *FAST,
        url=server.url,
        api_key=server.api_key,
    )
    assert taught.returncode == 0, taught.stderr
    code, out, err = run_cli(capsys, server, "delete", "cli-doomed")
    assert code == 1 and "--yes" in err
    code, out, err = run_cli(capsys, server, "delete", "cli-doomed", "1", "--yes")
    assert code == 1 and "409" in err and "is serving" in err
    code, out, err = run_cli(capsys, server, "delete", "cli-doomed", "--yes")
    assert code == 0, err
    assert "deleted version(s) 1, 1 task(s), 1 job(s)" in out and "Artifacts:" in out
    code, out, err = run_cli(capsys, server, "models", "--json")
    assert "cli-doomed" not in [model["name"] for model in json.loads(out)]
    code, out, err = run_cli(capsys, server, "gc", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["dry_run"] is True and json.loads(out)["stored"] > 0


def test_keys_create_list_revoke_and_the_key_file_beside_the_server(server, tmp_path):
    """A predict key made with `retain keys create` reads and is refused admin work (403); the CLI
    started in the server's working directory finds ./data/admin.key without being told; revoke is at once."""
    created = run_script(
        "keys", "create", "--scope", "predict", "--name", "reader", "--json", url=server.url, api_key=server.api_key
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["scope"] == "predict" and key["key"].startswith("retain_")

    assert run_script("jobs", url=server.url, api_key=key["key"]).returncode == 0
    refused = run_script("keys", "list", url=server.url, api_key=key["key"])
    assert refused.returncode == 1 and "403" in refused.stderr and "'admin'" in refused.stderr

    missing = run_script("jobs", url=server.url, cwd=tmp_path)  # no key anywhere: 401 and where to find one
    assert missing.returncode == 1 and "401" in missing.stderr and "admin.key" in missing.stderr

    home = tmp_path / "home"  # the server's data dir as ./data of the directory the CLI runs in
    (home / "data").mkdir(parents=True)
    (home / "data" / "admin.key").write_text(server.api_key + "\n")
    listed = run_script("keys", "list", "--json", url=server.url, cwd=home)
    assert listed.returncode == 0, listed.stderr
    assert key["id"] in [k["id"] for k in json.loads(listed.stdout)] and "key" not in json.loads(listed.stdout)[0]

    assert run_script("keys", "revoke", str(key["id"]), url=server.url, cwd=home).returncode == 0
    assert "401" in run_script("jobs", url=server.url, api_key=key["key"]).stderr


def test_teach_offers_every_strategy_the_service_registers():
    from app.cli.teach import STRATEGIES
    from app.tasks.schemas import STRATEGIES as SERVICE_STRATEGIES

    assert STRATEGIES == SERVICE_STRATEGIES
