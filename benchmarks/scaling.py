"""What update k costs as a model keeps learning: seconds by phase and bytes stored, k = 1 … N.

N tiny tasks (permuted-pixel MNIST from ``mnist_5k.npz``: each task its own fixed pixel
permutation of the same digits, so the labels stay 0-9 and the head never grows) are taught
one after the other to one model through the real service path: ``POST /tasks``' service
function (parse, split, store, enqueue) and the real worker loop (``run_worker``, once per
task) on SQLite and a local artifact directory. Per update it records the job's
``phase_seconds`` (load, train or lambda_search, fisher, evaluate, store: what the worker's
lease keeper measured) and the bytes the update added to the store, split into the upload
itself (the task's dataset, stored by POST /tasks) and what the update wrote (weights,
this task's Fisher + anchor and evaluation splits, the version's manifest).

Target: bytes stored per update constant in k, separate and online consolidation alike; time
per update growing only by the evaluation of the old tasks' test splits (and their reading).

The service has no per-model switch for online consolidation yet, so ``--consolidation online``
sets it on the learner the worker creates for the model's first task.

    python benchmarks/scaling.py --tasks 50 --json benchmarks/results/scaling.json --png docs/scaling.png
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import SHARED_DATA, console, write_json

from app.db.migrate import upgrade
from app.db.session import session_factory as make_session_factory
from app.db.tables import Job, ModelVersion
from app.settings import Settings
from app.storage.artifacts import artifact_store
from app.tasks.schemas import TaskRequest
from app.tasks.service import submit_task
from app.updates import apply
from app.updates.loop import run_worker

PHASES = ("load", "train", "lambda_search", "fisher", "evaluate", "store")
FORM = dict(
    name=None,
    architecture="mlp",
    architecture_options='{"hidden": [32]}',
    strategy="ewc",
    ewc_lambda="auto",
    epochs=1,
    batch_size=None,
    lr=None,
    test_fraction=0.2,
    validation_fraction=0.2,
    max_forgetting=1.0,
)  # always promoted: every update builds on the last


def task_bytes(k: int, n_train: int, n_test: int) -> bytes:
    """Task k: its own pixel permutation (seeded by k) of a fixed sample of mnist_5k, as an .npz upload."""
    with np.load(SHARED_DATA / "mnist_5k.npz", allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    chosen = np.random.default_rng(0).choice(len(x), n_train + n_test, replace=False)  # the file is sorted by label
    permutation = np.random.default_rng(k).permutation(28 * 28)
    x, y = x[chosen].reshape(len(chosen), -1)[:, permutation].reshape(-1, *x.shape[1:]), y[chosen]
    buffer = io.BytesIO()
    np.savez(buffer, x=x[:n_train], y=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return buffer.getvalue()


def stored_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*.safetensors"))


def run(n_tasks: int, consolidation: str, n_train: int, n_test: int, directory: Path) -> list[dict]:
    settings = Settings(
        database_url=f"sqlite:///{directory}/scaling.db",
        artifact_uri=str(directory / "artifacts"),
        embedded_worker=False,
        device="cpu",
        fisher_samples=n_train,
        lease_seconds=300.0,
        poll_interval=0.05,
        max_upload_samples=100_000,
    )
    upgrade(settings.database_url)
    sessions, store, root = make_session_factory(settings), artifact_store(settings), directory / "artifacts"
    if consolidation == "online":
        created = apply.new_learner

        def online_learner(model, first_task):
            learner = created(model, first_task)
            learner.ewc = replace(learner.ewc, consolidation="online")
            learner._family.init_state(learner)  # a fresh, empty consolidation in that mode
            return learner

        apply.new_learner = online_learner
    rows = []
    try:
        for k in range(1, n_tasks + 1):
            request = TaskRequest.from_form(model="scaling", **FORM)
            start = stored_bytes(root)
            with sessions() as session:
                job_id = submit_task(
                    session, store, settings, request, f"task{k}.npz", task_bytes(k, n_train, n_test)
                ).job_id
            uploaded = stored_bytes(root)
            assert run_worker(settings, threading.Event(), once=True, worker_id="scaling") == 1
            with sessions() as session:
                job = session.get(Job, job_id)
                assert job.status == "succeeded", job.error
                version = session.query(ModelVersion).order_by(ModelVersion.number.desc()).first()
                seconds = {phase: float(job.progress.get("phase_seconds", {}).get(phase, 0.0)) for phase in PHASES}
                rows.append(
                    {
                        "k": k,
                        "seconds": seconds,
                        "total_seconds": sum(seconds.values()),
                        "upload_bytes": uploaded - start,
                        "update_bytes": stored_bytes(root) - uploaded,
                        "weights_bytes": version.weights_size,
                        "manifest_bytes": version.consolidation_size,
                    }
                )
            if k % 10 == 0 or k == 1:
                row = rows[-1]
                console.print(
                    f"{consolidation} k={k}: {row['total_seconds']:.2f} s, update stored "
                    f"{row['update_bytes']} B (manifest {row['manifest_bytes']} B)"
                )
    finally:
        apply.new_learner = created if consolidation == "online" else apply.new_learner
    return rows


def fit(ks: list[int], values: list[float]) -> dict:
    """Least-squares line value = intercept + slope * k."""
    slope, intercept = np.polyfit(np.asarray(ks, float), np.asarray(values, float), 1)
    return {"intercept": float(intercept), "slope_per_task": float(slope)}


def plot(results: dict, path: Path) -> None:
    """Two panels with Pillow: seconds per update by phase (separate), bytes stored per update (both modes)."""
    from PIL import Image, ImageDraw

    width, height, margin = 900, 360, 60
    image = Image.new("RGB", (width, 2 * height), "white")
    draw = ImageDraw.Draw(image)
    colours = {
        "load": (31, 119, 180),
        "train": (255, 127, 14),
        "lambda_search": (44, 160, 44),
        "fisher": (214, 39, 40),
        "evaluate": (148, 103, 189),
        "store": (140, 86, 75),
        "separate": (31, 119, 180),
        "online": (255, 127, 14),
    }

    def panel(top: int, title: str, series: dict[str, list[float]], ks: list[int], unit: str, stacked: bool):
        totals = [sum(values[i] for values in series.values()) if stacked else 0 for i in range(len(ks))]
        peak = max(totals + [max(values) for values in series.values()]) * 1.1 or 1.0
        x0, y0, x1, y1 = margin, top + 40, width - 170, top + height - 40
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, top + 12), title, fill="black")
        for fraction in (0, 0.5, 1.0):
            y = y1 - fraction * (y1 - y0)
            draw.text((4, y - 6), f"{fraction * peak:.3g}", fill="black")
        draw.text((x1 - 60, y1 + 8), f"update k ({ks[0]}-{ks[-1]})", fill="black")
        draw.text((4, top + 26), unit, fill="black")

        def xy(i: int, value: float) -> tuple[float, float]:
            return x0 + (x1 - x0) * (ks[i] - ks[0]) / max(1, ks[-1] - ks[0]), y1 - (y1 - y0) * value / peak

        below = [0.0] * len(ks)
        for row, (name, values) in enumerate(series.items()):
            level = [b + v for b, v in zip(below, values, strict=True)] if stacked else values
            draw.line([xy(i, v) for i, v in enumerate(level)], fill=colours[name], width=2)
            if stacked:
                below = level
            draw.rectangle([x1 + 10, y0 + 18 * row, x1 + 22, y0 + 18 * row + 12], fill=colours[name])
            draw.text((x1 + 28, y0 + 18 * row), name, fill="black")

    separate = results["separate"]["updates"][1:]  # update 1 pays the process's one-time imports (torch.func)
    ks = [row["k"] for row in separate]
    panel(
        0,
        "seconds per update by phase, separate consolidation (stacked; k >= 2)",
        {phase: [row["seconds"][phase] for row in separate] for phase in PHASES},
        ks,
        "seconds",
        stacked=True,
    )
    ks = [row["k"] for row in results["separate"]["updates"]]
    panel(
        height,
        "bytes the update stored (weights + task state + evaluation splits + manifest)",
        {mode: [row["update_bytes"] for row in results[mode]["updates"]] for mode in results},
        ks,
        "bytes",
        stacked=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    console.print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--n-train", type=int, default=120)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--modes", default="separate,online")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--replot", type=Path, default=None, help="draw --png from this JSON, run nothing")
    args = parser.parse_args()
    if args.replot:
        return plot(json.loads(args.replot.read_text())["results"], args.png)
    results = {}
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as directory:
            updates = run(args.tasks, mode, args.n_train, args.n_test, Path(directory))
        ks = [row["k"] for row in updates]
        later = [row for row in updates if row["k"] > 1]  # the first update has no old task, no λ search
        results[mode] = {
            "updates": updates,
            "fits_k>1": {
                "update_bytes": fit([r["k"] for r in later], [r["update_bytes"] for r in later]),
                "manifest_bytes": fit([r["k"] for r in later], [r["manifest_bytes"] for r in later]),
                "total_seconds": fit([r["k"] for r in later], [r["total_seconds"] for r in later]),
                **{
                    f"{phase}_seconds": fit([r["k"] for r in later], [r["seconds"][phase] for r in later])
                    for phase in PHASES
                },
            },
            "tasks": len(ks),
        }
        console.print(mode, results[mode]["fits_k>1"])
    if args.json:
        write_json(args.json, {"n_train": args.n_train, "n_test": args.n_test, "results": results})
    if args.png:
        plot(results, args.png)


if __name__ == "__main__":
    main()
