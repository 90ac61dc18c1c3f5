"""`accuracy_heatmap_png`: the accuracy matrix a real update history produced, drawn as a PNG."""

import pytest
from PIL import Image

from app.reports import EMPTY, INK, REJECTED, accuracy_heatmap_png, cell_colour


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_heatmap_png_draws_every_cell_in_its_colour_with_serving_and_rejected_rows(
    client, settings, pmnist_files, tmp_path, teach, run_worker_once
):
    fit = {"epochs": "4", "architecture_options": '{"hidden": [64]}'}  # enough to learn task 0, then forget it
    assert teach(pmnist_files[0], **fit).status_code == 202
    assert run_worker_once() == 1
    assert teach(pmnist_files[1], strategy="finetune", max_forgetting="0", **fit).status_code == 202
    assert run_worker_once() == 1
    matrix = client.get("/models/m/accuracy").json()
    assert [(row["promoted"], row["serving"]) for row in matrix["rows"]] == [(True, True), (False, False)]

    layout = accuracy_heatmap_png(matrix, tmp_path / "matrix.png")
    image = Image.open(tmp_path / "matrix.png").convert("RGB")
    assert image.format is None and image.size == layout.size  # convert() drops the format; the file is a PNG
    assert (tmp_path / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(layout.cells) == len(matrix["rows"]) * len(matrix["tasks"]) == 4
    values = {
        (row["model_version"], cell["task_id"]): cell["accuracy"] for row in matrix["rows"] for cell in row["accuracy"]
    }
    for key, (x0, y0, x1, y1) in layout.cells.items():
        assert image.getpixel((x0 + 3, y0 + 3)) == cell_colour(values.get(key)), key
        middle = {image.getpixel((x, (y0 + y1) // 2)) for x in range(x0 + 4, x1 - 4)}
        assert len(middle) > 2, f"cell {key} has no value written in it"
    assert (
        image.getpixel(
            (
                layout.cells[(1, matrix["tasks"][1]["task_id"])][0] + 3,
                layout.cells[(1, matrix["tasks"][1]["task_id"])][1] + 3,
            )
        )
        == EMPTY
    )  # v1 never saw task 2
    x0, y0, x1, y1 = layout.serving_row
    assert image.getpixel((x0, (y0 + y1) // 2)) == INK
    rejected = [layout.cells[(2, task["task_id"])] for task in matrix["tasks"]]
    assert all(
        any(image.getpixel((x, y)) == REJECTED for x in range(b[0], b[2]) for y in range(b[1], b[3])) for b in rejected
    ), "rejected cells are hatched"

    bigger = dict(matrix, tasks=matrix["tasks"] * 2, rows=matrix["rows"] * 2)
    assert accuracy_heatmap_png(bigger, tmp_path / "bigger.png").size > layout.size
