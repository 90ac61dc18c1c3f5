"""The forgetting benchmark runs end to end on any input shape and writes the JSON the README reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "forgetting.py"


def _write_tasks(directory: Path, n_tasks: int, shape: tuple[int, ...]) -> None:
    """Tiny separable tasks: class c lights up feature block c (a permutation per task)."""
    rng = np.random.default_rng(0)
    width = int(np.prod(shape))
    for k in range(n_tasks):
        permutation = rng.permutation(width)
        def sample(n):
            y = rng.integers(0, 3, n)
            x = rng.normal(0, 0.1, (n, width)).astype(np.float32)
            for c in range(3):
                x[y == c, c * (width // 3):(c + 1) * (width // 3)] += 1.0
            return x[:, permutation].reshape(n, *shape), y
        x, y = sample(120)
        x_test, y_test = sample(40)
        np.savez(directory / f"task{k}.npz", x=x, y=y, x_test=x_test, y_test=y_test)


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, str(SCRIPT), "--tasks", str(tmp_path), "--json", str(out), "--epochs", "1",
                    "--fisher-samples", "32", "--batch-size", "16", *args], check=True, cwd=REPO,
                   capture_output=True, timeout=300)
    return json.loads(out.read_text())


@pytest.mark.parametrize("shape", [(12,), (1, 6, 6)])
def test_sweep_reports_every_method_with_the_issue_schema(tmp_path, shape):
    _write_tasks(tmp_path, 2, shape)
    result = _run(tmp_path, "--n-tasks", "2", "--lambda", "0,100")

    assert set(result["methods"]) == {"finetune", "ewc_separate", "ewc_online", "joint"}
    for method, r in result["methods"].items():
        assert {"lambda", "matrix", "avg_acc", "bwt", "task0_initial", "task0_final", "train_seconds"} <= set(r)
        assert len(r["matrix"]) == 2 and r["matrix"][0][1] is None
        assert r["avg_acc"] == pytest.approx(sum(r["matrix"][-1]) / 2)
        assert r["task0_final"] == r["matrix"][-1][0]
    assert [s["lambda"] for s in result["sweep"]["ewc_separate"]] == [0.0, 100.0]
    best = max(result["sweep"]["ewc_separate"], key=lambda s: s["validation_avg_acc"])
    assert result["methods"]["ewc_separate"]["lambda"] == best["lambda"]  # chosen on validation
    assert result["input_shape"] == list(shape)


def test_auto_lambda_records_the_search_and_its_cost(tmp_path):
    _write_tasks(tmp_path, 2, (12,))
    result = _run(tmp_path, "--lambda", "auto", "--methods", "finetune,ewc_separate")

    ewc = result["methods"]["ewc_separate"]
    assert ewc["lambda_per_update"][0] is None  # nothing to protect on the first task
    assert ewc["updates"][1]["lambda_search"]
    assert ewc["lambda"] == ewc["lambda_per_update"][1]
    assert result["lambda_search_cost"]["ewc_separate"]["steps_ratio_mean"] > 1


def test_ccll_needs_a_conv_architecture(tmp_path):
    _write_tasks(tmp_path, 2, (12,))
    completed = subprocess.run([sys.executable, str(SCRIPT), "--tasks", str(tmp_path), "--methods", "ccll"],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert "ccll" in completed.stderr and "cnn" in completed.stderr


def test_ccll_runs_task_aware_on_a_cnn(tmp_path):
    _write_tasks(tmp_path, 2, (1, 8, 8))
    result = _run(tmp_path, "--arch", "cnn", "--methods", "finetune,ccll", "--lambda", "auto")

    ccll = result["methods"]["ccll"]
    assert ccll["lambda"] is None and ccll["lambda_per_update"] is None
    assert ccll["updates"][1]["parameters_added"] > 0  # its own calibration modules and classifier
    assert ccll["matrix"][1][0] == ccll["matrix"][0][0]  # CCLL never changes an old task's outputs
