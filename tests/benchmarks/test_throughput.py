"""The throughput benchmark runs end to end and writes the keys the README and issue ask for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PMNIST = REPO.parent / "shared" / "data" / "pmnist-conflict"


@pytest.mark.skipif(not PMNIST.exists(), reason="needs ../shared/data/pmnist-conflict")
def test_tiny_run_writes_ratios_and_state_sizes(tmp_path):
    out = tmp_path / "throughput.json"
    subprocess.run(
        [
            sys.executable,
            "benchmarks/throughput.py",
            "--json",
            str(out),
            "--blocks",
            "1",
            "--block-seconds",
            "0.01",
            "--repeats",
            "1",
            "--fisher-samples",
            "16",
            "--max-tasks",
            "3",
            "--search-repeats",
            "1",
            "--search-train-samples",
            "300",
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out.read_text())

    for key in ("step_ratio_mlp", "step_ratio_cnn", "fisher_speedup_vs_loop", "lambda_search_over_plain_update"):
        assert result[key] > 0
    separate, online = (result["state_bytes"][mode] for mode in ("separate", "online"))
    assert separate["1"] == pytest.approx(online["1"], abs=64)  # one task: the same tensors
    assert separate["3"] > 2.5 * separate["1"]  # one Fisher + anchor per task
    assert online["3"] == online["1"]  # constant memory
    for fisher in result["details"]["fisher"].values():
        assert fisher["max_abs_difference_vs_loop"] < 1e-5  # the vmapped estimator is the loop's
        assert fisher["shortcut_mass_over_per_sample"] < 0.5  # the shortcut underestimates
