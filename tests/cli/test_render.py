"""`app.cli.render`: the cells and tables commands print, on fixed answers (no server needed)."""

from __future__ import annotations

import pytest

from app.cli import render

MODEL = {
    "name": "m",
    "architecture": "cnn",
    "input_shape": [1, 8, 8],
    "n_tasks": 2,
    "n_versions": 3,
    "serving_version": 2,
    "created_at": "2026-01-02T03:04:05.678Z",
}


@pytest.mark.parametrize("field", ["family", "strategy"])
def test_the_models_table_shows_the_family_under_either_field_name(capsys, field):
    render.console.width = 200
    render.show_models([{**MODEL, field: "ccll"}])
    out = capsys.readouterr().out
    assert "ccll" in out and "1×8×8" in out and "01-02 03:04:05" in out


def test_cell_formats():
    assert render.fmt_duration(3725) == "1:02:05" and render.fmt_duration(65) == "1:05"
    assert render.fmt_accuracy(None) == render.fmt_optional(None) == render.fmt_time(None) == "–"
    assert render.shorten("abcdef", 4) == "abc…" and render.shorten("abc", None) == "abc"
    assert render.task_label({"task_id": 3, "name": "digits"}) == "3: digits"


def test_teach_follow_prints_the_capacity_warning_of_the_new_version(capsys):
    from app.cli.teach import report_finished_job

    warning = "every λ tried (10, 100) lost more than 5% …; try a wider model or rehearsal (strategy ewc_replay)"
    answers = {
        "/models/m/versions": [
            {"number": 2, "parent_number": 1, "ewc_lambda": 100.0, "lambda_search": [{}], "capacity_warning": warning}
        ],
        "/models/m/accuracy": {
            "tasks": [{"task_id": 1, "name": "a"}, {"task_id": 2, "name": "b"}],
            "rows": [
                {"model_version": 1, "accuracy": [{"task_id": 1, "accuracy": 0.9}]},
                {"model_version": 2, "accuracy": [{"task_id": 1, "accuracy": 0.6}, {"task_id": 2, "accuracy": 0.9}]},
            ],
        },
    }

    class Answers:
        def get(self, path, **params):
            return answers[path]

    render.console.width = 200
    report_finished_job(Answers(), {"id": 2, "model": "m"}, {"id": 2, "status": "succeeded", "model_version": 2})
    out = capsys.readouterr().out
    assert "Capacity warning" in out and "ewc_replay" in out
    answers["/models/m/versions"][0]["capacity_warning"] = None
    report_finished_job(Answers(), {"id": 2, "model": "m"}, {"id": 2, "status": "succeeded", "model_version": 2})
    assert "Capacity warning" not in capsys.readouterr().out


def test_teach_follow_prints_why_a_task_was_not_learnt_and_what_auto_chose(capsys):
    from app.cli.teach import report_finished_job

    reason = (
        "task 1 was not learnt: its validation accuracy 0.100 is no better than always answering its most "
        "frequent label 3 (0.150 of 60 validation samples; the accuracy's Wilson 95% lower bound is 0.050); it "
        "may be the features' scale, the learning rate (lr 0.05: try a tenth of it), too few epochs (8 trained), "
        "or too few samples per class (fewest: 50 of label 7); stored as version 1, not promoted"
    )
    choice = {"strategy": "ewc", "reason": "the model's first task: nothing to protect yet"}
    answers = {
        "/models/m/versions": [{"number": 1, "parent_number": None, "strategy": "auto", "strategy_choice": choice}],
        "/models/m/accuracy": {
            "tasks": [{"task_id": 1, "name": "a"}],
            "rows": [{"model_version": 1, "accuracy": [{"task_id": 1, "accuracy": 0.1}]}],
        },
    }

    class Answers:
        def get(self, path, **params):
            return answers[path]

    render.console.width = 400
    job = {"id": 1, "status": "rejected", "model_version": 1, "error": reason}
    report_finished_job(Answers(), {"id": 1, "model": "m"}, job)
    out = " ".join(capsys.readouterr().out.split())
    assert "task 1 was not learnt" in out and "too few samples per class" in out and "lr 0.05" in out
    assert "Learnt with ewc: the model's first task" in out
    render.show_versions("m", answers["/models/m/versions"])
    assert "auto → ewc" in capsys.readouterr().out
