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

        def sample(n, permutation=permutation):
            y = rng.integers(0, 3, n)
            x = rng.normal(0, 0.1, (n, width)).astype(np.float32)
            for c in range(3):
                x[y == c, c * (width // 3) : (c + 1) * (width // 3)] += 1.0
            return x[:, permutation].reshape(n, *shape), y

        x, y = sample(120)
        x_test, y_test = sample(40)
        np.savez(directory / f"task{k}.npz", x=x, y=y, x_test=x_test, y_test=y_test)


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tasks",
            str(tmp_path),
            "--json",
            str(out),
            "--epochs",
            "1",
            "--fisher-samples",
            "32",
            "--batch-size",
            "16",
            "--min-steps",
            "0",
            *args,
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    return json.loads(out.read_text())


@pytest.mark.parametrize("shape", [(12,), (1, 6, 6)])
def test_sweep_reports_every_method_with_the_issue_schema(tmp_path, shape):
    _write_tasks(tmp_path, 2, shape)
    result = _run(tmp_path, "--n-tasks", "2", "--lambda", "0,100")

    assert set(result["methods"]) == {"finetune", "ewc_separate", "ewc_online", "joint"}
    for _method, r in result["methods"].items():
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
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--tasks", str(tmp_path), "--methods", "ccll"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "ccll" in completed.stderr and "cnn" in completed.stderr


def test_ccll_runs_task_aware_on_a_cnn(tmp_path):
    _write_tasks(tmp_path, 2, (1, 8, 8))
    result = _run(tmp_path, "--arch", "cnn", "--methods", "finetune,ccll", "--lambda", "auto")

    ccll = result["methods"]["ccll"]
    assert ccll["lambda"] is None and ccll["lambda_per_update"] is None
    assert ccll["updates"][1]["parameters_added"] > 0  # its own calibration modules and classifier
    assert ccll["matrix"][1][0] == ccll["matrix"][0][0]  # CCLL never changes an old task's outputs


def _write_labelled(path: Path, n_per_class: int = 30) -> None:
    """One npz of ten separable uint8 10x10 images (class c lights row c), like mnist_5k.npz in small."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), n_per_class)
    x = rng.integers(0, 60, (len(y), 1, 10, 10)).astype(np.uint8)
    x[np.arange(len(y)), 0, y, :] = 255
    np.savez(path, x=x, y=y)


def test_split_tasks_are_label_pairs_with_a_deterministic_stratified_split(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import load_split_tasks

    _write_labelled(tmp_path / "digits.npz", n_per_class=50)
    tasks = load_split_tasks(tmp_path / "digits.npz", test_fraction=0.2, validation_fraction=0.1, seed=0)
    again = load_split_tasks(tmp_path / "digits.npz", test_fraction=0.2, validation_fraction=0.1, seed=0)

    assert [t.key for t in tasks] == ["digits_0_1", "digits_2_3", "digits_4_5", "digits_6_7", "digits_8_9"]
    for k, (task, same) in enumerate(zip(tasks, again, strict=True)):
        for part in ("train", "validation", "test"):
            assert sorted(set(getattr(task, part).y)) == [2 * k, 2 * k + 1]
            assert np.array_equal(getattr(task, part).x, getattr(same, part).x)  # same samples every run
        assert (len(task.train), len(task.validation), len(task.test)) == (72, 8, 20)  # 80/20, then 10% of train
        # test samples are held out of train and validation
        seen = {row.tobytes() for row in np.concatenate([task.train.x, task.validation.x])}
        assert not seen & {row.tobytes() for row in task.test.x}


def test_split_mnist_runs_ccll_and_every_method_task_aware(tmp_path):
    _write_labelled(tmp_path / "digits.npz")
    out = tmp_path / "out.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--split-mnist",
            str(tmp_path / "digits.npz"),
            "--n-tasks",
            "3",
            "--arch",
            "cnn",
            "--methods",
            "finetune,ccll",
            "--optimizer",
            "adam",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--fisher-samples",
            "16",
            "--patience",
            "0",
            "--json",
            str(out),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )  # the floor only: this is about ccll
    result = json.loads(out.read_text())

    assert result["benchmark"] == "split"
    assert [(t["key"], t["labels"], t["n_test"]) for t in result["tasks"]] == [
        ("digits_0_1", [0, 1], 12),
        ("digits_2_3", [2, 3], 12),
        ("digits_4_5", [4, 5], 12),
    ]
    assert set(result["methods"]) == {"finetune", "ccll"}
    for method, r in result["methods"].items():
        assert r["evaluation"] == "task-aware", method
        assert {"lambda", "matrix", "avg_acc", "bwt", "task0_initial", "task0_final", "train_seconds"} <= set(r)
        assert len(r["matrix"]) == 3 and r["matrix"][0][1] is None
    ccll = result["methods"]["ccll"]
    assert ccll["matrix"][0][0] > 0.5  # learnt (task-aware chance is 0.5)
    for j in range(2):  # an old task's accuracy never moves
        assert ccll["matrix"][2][j] == ccll["matrix"][1][j] == ccll["matrix"][j][j]
    assert ccll["bwt"] == 0.0
    parameters = ccll["parameters"]
    assert list(parameters["per_task"]) == ["digits_0_1", "digits_2_3", "digits_4_5"]
    for update in ccll["updates"]:
        added = parameters["per_task"][update["task"]]
        assert added["added"] == update["parameters_added"] > 0
        assert added["percent_of_base"] == pytest.approx(100 * added["added"] / parameters["base"])
    assert parameters["total"] == parameters["base"] + 3 * parameters["added_per_task_mean"]


def test_split_mnist_with_ccll_refuses_the_mlp(tmp_path):
    _write_labelled(tmp_path / "digits.npz")
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--split-mnist",
            str(tmp_path / "digits.npz"),
            "--arch",
            "mlp",
            "--methods",
            "finetune,ccll",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "ccll" in completed.stderr and "--arch cnn" in completed.stderr


def test_digits_tasks_permute_pixels_and_labels_of_the_same_digits():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import load_digits_tasks

    first, second = load_digits_tasks(2, seed=0)
    assert (first.key, second.key) == ("digits0", "digits1")
    assert first.input_shape == (1, 8, 8) and 1200 < len(first.train) < 1400
    x0 = np.concatenate([first.train.x, first.validation.x, first.test.x]).reshape(-1, 64)
    x1 = np.concatenate([second.train.x, second.validation.x, second.test.x]).reshape(-1, 64)
    assert sorted(map(tuple, np.sort(x0, axis=1))) == sorted(
        map(tuple, np.sort(x1, axis=1))
    )  # same digits, pixels moved
    assert set(first.train.y) == set(second.train.y) == set(range(10))
    assert load_digits_tasks(2, seed=0)[1].train.y == second.train.y  # seeded


def test_replay_methods_record_their_memory_and_its_bytes(tmp_path):
    _write_tasks(tmp_path, 2, (12,))
    result = _run(tmp_path, "--lambda", "auto", "--methods", "replay,ewc_replay", "--memory-size", "40")

    for method in ("replay", "ewc_replay"):
        stored = result["methods"][method]["state_bytes"]
        assert stored["memory_samples"] == 40 and stored["memory_tensors"] == 40 * (12 * 4 + 8)
        assert stored["consolidation"] > stored["memory_tensors"]
    rehearsed = result["methods"]["ewc_replay"]["updates"][1]  # a memory to replay: replay_lambda, no search
    assert rehearsed["lambda_search"] is None and rehearsed["ewc_lambda"] == 10.0
    given = _run(
        tmp_path, "--lambda", "auto", "--methods", "ewc_replay", "--memory-size", "40", "--replay-lambda", "100"
    )["methods"]["ewc_replay"]
    assert given["lambda_per_update"] == [None, 100.0]
    assert result["methods"]["replay"]["lambda_per_update"] is None


def test_the_budget_rule_and_the_last_updates_cost_are_recorded(tmp_path):
    _write_tasks(tmp_path, 2, (12,))
    methods = "finetune,ewc_separate,ewc_replay,joint"
    exact = _run(tmp_path, "--lambda", "auto", "--methods", methods, "--memory-size", "20", "--patience", "0")
    for _method, r in exact["methods"].items():
        budget = r["updates"][-1]["budget"]
        assert budget["epochs_run"] == budget["epochs_trained"] == budget["floor_epochs"] == 1  # the floor exactly
        assert r["last_update_cost"]["gradients"] == budget["steps_run"] * 16
    finetune, rehearsed = exact["methods"]["finetune"], exact["methods"]["ewc_replay"]
    # half of every replay batch is replayed: an epoch of the new task takes twice the steps, at the same batch size
    assert rehearsed["last_update_cost"]["steps"] == 2 * finetune["last_update_cost"]["steps"]
    cost = exact["lambda_search_cost"]["ewc_separate"]
    assert 1 < cost["steps_ratio_max"] <= 3

    stopped = _run(tmp_path, "--lambda", "auto", "--methods", "finetune,ewc_separate", "--patience", "2")
    for r in stopped["methods"].values():
        for update in r["updates"]:
            budget = update["budget"]
            assert (
                budget["floor_epochs"] <= budget["epochs_trained"] <= budget["epochs_run"] <= budget["max_epochs"] == 2
            )
    assert stopped["lambda_search_cost"]["ewc_separate"]["steps_ratio_max"] <= 3


def test_class_incremental_scenario_scores_over_every_label_and_judges_each_update(tmp_path):
    _write_labelled(tmp_path / "digits.npz", n_per_class=30)
    out = tmp_path / "class.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--scenario",
            "class",
            "--split-mnist",
            str(tmp_path / "digits.npz"),
            "--n-tasks",
            "2",
            "--methods",
            "auto,ewc",
            "--epochs",
            "2",
            "--min-steps",
            "0",
            "--patience",
            "0",
            "--fisher-samples",
            "32",
            "--json",
            str(out),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert result["scenario"] == "class" and result["settings"]["ewc_lambda"] == "auto"
    auto = result["methods"]["auto"]
    assert auto["evaluation"] == "vocabulary" and len(auto["gate"]) == 2
    assert [g["strategy_choice"]["strategy"] for g in auto["gate"]] == ["ewc", "ewc_replay"]
    assert 0 <= auto["all_test_accuracy"] <= 1 and isinstance(auto["every_update_promoted"], bool)
    assert result["methods"]["ewc"]["gate"][1]["strategy_choice"] is None  # an explicit strategy is honoured
