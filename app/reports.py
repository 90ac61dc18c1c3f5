"""The accuracy matrix as a PNG heatmap, for reports: `retain matrix MODEL --png FILE`.

Takes the JSON of GET /models/{name}/accuracy as it is (a client-side renderer: Pillow only, no
server modules, no torch). Rows are versions, columns tasks; each cell holds its test accuracy to
three decimals as the CLI prints it; the serving version is outlined and starred; versions the
forgetting gate rejected are labelled, framed in red and hatched along the bottom. The colours
are the dashboard's (app/ui/static).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# 0 red, 0.5 yellow, 1 green: the same stops as the dashboard's RAMP.
RAMP = ((0.0, (215, 48, 39)), (0.5, (254, 224, 139)), (1.0, (26, 152, 80)))
BACKGROUND = (255, 255, 255)
EMPTY = (240, 241, 244)
INK = (29, 34, 48)
MUTED = (102, 112, 133)
REJECTED = (180, 35, 24)
SERVING = (47, 95, 208)

CELL_W, CELL_H = 88, 36
LABEL_W, HEAD_H, MARK_W, PAD = 230, 70, 96, 16
FOOT_H = 64


@dataclass
class HeatmapLayout:
    """Where things were drawn, in pixels: ``cells[(version, task_id)] = (x0, y0, x1, y1)``."""

    size: tuple[int, int]
    cells: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)
    serving_row: tuple[int, int, int, int] | None = None


def cell_colour(accuracy: float | None) -> tuple[int, int, int]:
    """The fill of a cell: the ramp's colour for ``accuracy`` (clamped to 0..1), grey when missing."""
    if accuracy is None:
        return EMPTY
    value = min(1.0, max(0.0, float(accuracy)))
    for (low, start), (high, end) in itertools.pairwise(RAMP):
        if value <= high:
            t = (value - low) / (high - low)
            return tuple(round(a + (b - a) * t) for a, b in zip(start, end, strict=True))
    return RAMP[-1][1]


def _ink_on(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) / 255
    return INK if luminance > 0.55 else (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _three(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"  # the CLI's en dash is not in Pillow's bundled font


def accuracy_heatmap_png(matrix: dict, path: str | Path) -> HeatmapLayout:
    """Draw ``matrix`` (GET /models/{name}/accuracy) as a PNG at ``path``; returns the layout."""
    tasks = matrix.get("tasks") or []
    rows = matrix.get("rows") or []
    title_font, font, small = _font(18), _font(14), _font(12)
    figures = (
        f"average accuracy {_three(matrix.get('average_accuracy'))}   BWT {_three(matrix.get('bwt'))}   "
        f"forgetting {_three(matrix.get('forgetting'))}"
    )
    note = (
        "Rows: versions; columns: test accuracy on each task after that update. "
        "* = serving; rejected = stored, not promoted."
    )
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(
        PAD + LABEL_W + max(1, len(tasks)) * CELL_W + MARK_W + PAD,
        PAD + round(max(measure.textlength(figures, font=font), measure.textlength(note, font=small))) + PAD,
    )
    height = PAD + HEAD_H + max(1, len(rows)) * CELL_H + FOOT_H + PAD
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    layout = HeatmapLayout(size=(width, height))

    draw.text((PAD, PAD), f"Accuracy matrix of {matrix.get('model', '?')}", fill=INK, font=title_font)
    left, top = PAD + LABEL_W, PAD + HEAD_H
    for j, task in enumerate(tasks):
        name = f"{task['task_id']}: {task['name']}" if task.get("name") else f"task {task['task_id']}"
        centre = left + j * CELL_W + CELL_W // 2
        draw.text((centre, top - 8), _fit(draw, name, small, CELL_W - 4), fill=MUTED, font=small, anchor="md")

    for i, row in enumerate(rows):
        y0 = top + i * CELL_H
        rejected = not row.get("promoted", True)
        label = f"v{row['model_version']} · {row.get('task_name') or row.get('task_id') or '-'}"
        label = _fit(draw, label, font, LABEL_W - 16 - (draw.textlength(" · rejected", font=font) if rejected else 0))
        label += " · rejected" if rejected else ""
        draw.text((left - 10, y0 + CELL_H // 2), label, fill=REJECTED if rejected else INK, font=font, anchor="rm")
        by_task = {cell["task_id"]: cell["accuracy"] for cell in row.get("accuracy") or []}
        for j, task in enumerate(tasks):
            box = (left + j * CELL_W + 1, y0 + 1, left + (j + 1) * CELL_W - 2, y0 + CELL_H - 2)
            value = by_task.get(task["task_id"])
            colour = cell_colour(value)
            draw.rectangle(box, fill=colour)
            if rejected:  # a red frame and a hatched strip along the bottom, clear of the value
                draw.rectangle(box, outline=REJECTED, width=1)
                for x in range(box[0] + 6, box[2] - 6, 6):
                    draw.line((x, box[3] - 2, x + 5, box[3] - 7), fill=REJECTED, width=1)
            draw.text(
                ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2),
                _three(value),
                fill=MUTED if value is None else _ink_on(colour),
                font=font,
                anchor="mm",
            )
            layout.cells[(row["model_version"], task["task_id"])] = box
        if row.get("serving"):
            outline = (left - 2, y0 - 1, left + len(tasks) * CELL_W, y0 + CELL_H)
            draw.rectangle(outline, outline=INK, width=2)
            draw.text((outline[2] + 10, y0 + CELL_H // 2), "* serving", fill=SERVING, font=font, anchor="lm")
            layout.serving_row = outline

    foot = top + max(1, len(rows)) * CELL_H + 14
    draw.text((PAD, foot), figures, fill=INK, font=font)
    draw.text((PAD, foot + 22), note, fill=MUTED, font=small)
    image.save(path, format="PNG")
    return layout
