"""`app.cli.render`: the cells and tables commands print, on fixed answers (no server needed)."""

from __future__ import annotations

import pytest

from app.cli import render

MODEL = {"name": "m", "architecture": "cnn", "input_shape": [1, 8, 8], "n_tasks": 2, "n_versions": 3,
         "serving_version": 2, "created_at": "2026-01-02T03:04:05.678Z"}


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
