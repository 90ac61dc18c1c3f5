"""The text benchmark runs end to end at a tiny size: pretraining (masked language modelling, then the
base topics), an import with base data, class-incremental updates, joint training, the /predict
latency through a real service and a training step's seconds under all and lora, and reports every
target it could judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BBC = REPO.parent / "shared" / "data" / "bbc-news" / "bbc.csv"


@pytest.mark.skipif(not BBC.exists(), reason="needs ../shared/data/bbc-news/bbc.csv")
def test_tiny_run_reports_the_accuracy_table_latencies_and_targets(tmp_path):
    out, pretrained = tmp_path / "bbc.json", tmp_path / "bert"
    tiny = ["--per-topic", "20", "--vocab", "300", "--hidden", "32", "--mlm-epochs", "1", "--pretrain-epochs", "1"]
    tiny += ["--epochs", "1", "--joint-epochs", "1", "--fisher-samples", "8", "--pretrained", str(pretrained)]
    command = [sys.executable, "benchmarks/text.py", "--data", str(BBC), *tiny, "--out", str(out)]
    quick = ["--strategies", "ewc_replay,finetune", "--latency-repeats", "3", "--latency-sizes", "64x1"]
    quick += ["--train-seeds", "0", "--step-sizes", "64x1", "--step-count", "1"]
    subprocess.run([*command, *quick], check=True, cwd=REPO, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    runs = {(r["strategy"], r["trainable"]): r for r in result["runs"]}
    assert set(runs) == {(s, t) for s in ("ewc_replay", "finetune") for t in ("all", "lora")}
    for run in runs.values():
        assert len(run["all_topic_accuracy"]) == len(run["matrix"]) == 1 + len(result["new_topics"]) == 4
        assert set(run["matrix"][-1]) == {"base", *result["new_topics"]}
        assert run["train_seconds_per_update"][0] is None and all(s > 0 for s in run["train_seconds_per_update"][1:])
    consolidation = {mode: runs[("ewc_replay", mode)]["consolidation_bytes"][-1] for mode in ("all", "lora")}
    assert consolidation["lora"] < consolidation["all"]
    latency = result["predict_latency_batch1"]
    assert set(latency["p50_ms"]) == {"transformers", "service", "learner", "http_floor"}
    assert set(result["predict_latency_batch1_other_sizes"]) == {"64x1"}
    assert "ewc_replay within 5 points of joint" in result["targets"]
    assert "/predict <= 1.3x a plain transformers forward (random weights, 64x1)" in result["targets"]
    steps = result["train_step_seconds_other_sizes"]["64x1"]["seconds_per_step"]
    assert set(steps) == {"all", "lora"} and min(steps.values()) > 0
    assert "lora <= 0.5x the seconds of all (a training step, random weights, 64x1)" in result["targets"]
    joint = result["joint"]  # the bound for "base topics kept" too
    assert joint["base_kept"]["mean"] == pytest.approx(sum(r["base_kept"] for r in joint["runs"]) / len(joint["runs"]))

    # a second run reuses the pretrained model (--pretrained): it does not pretrain again; two seeds
    # repeat the run, and the summary the targets judge is their mean
    subprocess.run(
        [*command, "--strategies", "finetune", "--trainable", "all", "--skip-latency", "--skip-joint"]
        + ["--train-seeds", "0,1", "--step-sizes", ""],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=600,
    )
    again = json.loads(out.read_text())
    assert again["pretrain_seconds"] is None and result["pretrain_seconds"] > 0
    assert again["runs"][0]["base_at_import"] == runs[("finetune", "all")]["base_at_import"]
    assert [r["seed"] for r in again["runs"]] == again["summary"]["finetune/all"]["seeds"] == [0, 1]
    finals = [r["all_topic_accuracy"][-1] for r in again["runs"]]
    assert again["summary"]["finetune/all"]["final_all_topic_accuracy"]["mean"] == pytest.approx(sum(finals) / 2)
    assert again["runs"][0]["all_topic_accuracy"] == runs[("finetune", "all")]["all_topic_accuracy"]  # seed 0 again
