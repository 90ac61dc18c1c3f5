"""What the CLI prints: rich tables and live job bars, JSON for scripts, and the cell formats.

Commands fetch; this module draws. Every table of every command is here, so a
change of look is made in one place and the commands read as the requests they make.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from app.client import ClientError, RetainClient, StoppedFollowing
from app.jobs.status import JobStatus

console = Console()
error_console = Console(stderr=True)


def print_error(error: Exception) -> None:
    error_console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON for other programs.
    print(json.dumps(data, indent=2, default=str))


# ----------------------------------------------------------------- cell formats


def fmt_accuracy(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def fmt_optional(value: Any, spec: str = "") -> str:
    if value is None:
        return "–"
    return format(value, spec) if spec else str(value)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fmt_time(value: str | None) -> str:
    """ISO timestamps shortened for a table: month-day and time to the second (UTC)."""
    if not value:
        return "–"
    return value.replace("T", " ")[5:19]


def shorten(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def task_label(task: dict) -> str:
    return f"{task['task_id']}: {task['name']}" if task.get("name") else f"task {task['task_id']}"


def job_progress(job: dict) -> dict:
    """The job's progress fields (the API nests them under "progress")."""
    progress = job.get("progress") or {}
    return progress if isinstance(progress, dict) else {}


def model_family(model: dict) -> str:
    """The model family (ewc | ccll); older servers call the field "strategy"."""
    return model.get("family", model.get("strategy"))


# -------------------------------------------------------------------- job bars


@contextmanager
def upload_bar(show: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A bar on stderr for the bytes of an upload; gives the ``progress(sent, total)`` callback."""
    columns = (TextColumn("upload"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=error_console, disable=not show, transient=True) as bar:
        row = bar.add_task("upload", total=None)
        yield lambda sent, total: bar.update(row, completed=sent, total=total)


def follow_jobs(client: RetainClient, jobs: Mapping[str, int], show: bool = True) -> dict[str, dict]:
    """Wait for jobs to end, drawing one live bar per job: phase, epoch, loss, samples/s, ETA.

    Returns each job's final state under its label. Ctrl-C stops following only:
    the jobs keep running on the server.
    """
    columns = (
        TextColumn("{task.description}"),
        TextColumn("{task.fields[status]:<10}"),
        BarColumn(bar_width=16),
        TaskProgressColumn(),
        TextColumn("epoch {task.fields[epoch]:>5}"),
        TextColumn("loss {task.fields[loss]:>6}"),
        TextColumn("{task.fields[speed]:>6} samples/s"),
        TextColumn("ETA {task.fields[eta]}"),
    )
    with Progress(*columns, console=console, disable=not show) as bar:
        rows = {
            label: bar.add_task(
                label, total=1.0, status=JobStatus.QUEUED.value, epoch="–", loss="–", speed="–", eta="–"
            )
            for label in jobs
        }
        try:
            return client.follow_jobs(jobs, on_poll=lambda label, job: draw_job(bar, rows[label], job))
        except StoppedFollowing as stopped:
            raise ClientError(
                f"{stopped} (`retain jobs ID --follow` to watch again, `retain cancel ID` to stop one)"
            ) from None


def follow_job(client: RetainClient, job_id: int, show: bool = True) -> dict:
    return follow_jobs(client, {f"job {job_id}": job_id}, show=show)[f"job {job_id}"]


def draw_job(bar: Progress, row: TaskID, job: dict) -> None:
    """Update one job's bar; a field the latest poll lacks keeps its last value."""
    progress = job_progress(job)
    status = job["status"]
    running = status == JobStatus.RUNNING
    fields: dict[str, Any] = {
        "completed": 1.0 if status == JobStatus.SUCCEEDED else float(progress.get("fraction") or 0.0),
        # while running, the phase says more than the status: train, lambda_search, fisher, evaluate
        "status": progress.get("phase") or status if running else status,
        "eta": fmt_duration(progress.get("eta_seconds")) if running else "–",
    }
    if progress.get("epoch") is not None:
        epochs = progress.get("epochs")
        fields["epoch"] = f"{progress['epoch']}/{epochs}" if epochs else str(progress["epoch"])
    if progress.get("loss") is not None:
        fields["loss"] = f"{progress['loss']:.3f}"
    if progress.get("samples_per_second") is not None:
        fields["speed"] = f"{progress['samples_per_second']:,.0f}"
    bar.update(row, **fields)


# ---------------------------------------------------------------------- tables


def show_update_effect(matrix: dict, version: dict) -> None:
    """Every learnt task's test accuracy before this update (its parent) and after it."""
    rows = {row["model_version"]: row for row in matrix["rows"]}
    after = {cell["task_id"]: cell["accuracy"] for cell in rows[version["number"]]["accuracy"]}
    parent = rows.get(version.get("parent_number"))
    before = {cell["task_id"]: cell["accuracy"] for cell in parent["accuracy"]} if parent else {}
    table = Table(title=f"Test accuracy, version {version.get('parent_number') or '–'} → {version['number']}")
    for column in ("task", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task in matrix["tasks"]:
        if task["task_id"] not in after:
            continue
        old, new = before.get(task["task_id"]), after[task["task_id"]]
        table.add_row(
            task_label(task), fmt_accuracy(old), fmt_accuracy(new), "new task" if old is None else f"{new - old:+.3f}"
        )
    console.print(table)


def show_jobs(jobs: list[dict], full_errors: bool) -> None:
    """The queue; with full_errors (one job asked for) an error is shown whole, else its gist."""
    table = Table(title="Jobs")
    with_errors = any(job.get("error") for job in jobs)
    columns = ["job", "task", "model", "status", "attempt", "progress", "epoch", "loss", "version", "created"]
    for column in columns + (["error"] if with_errors else []):
        table.add_column(
            column,
            justify="right" if column in ("job", "task", "progress", "loss", "version") else "left",
            no_wrap=column != "error",
        )
    for job in jobs:
        progress = job_progress(job)
        fraction = 1.0 if job["status"] == JobStatus.SUCCEEDED else progress.get("fraction")
        cells = [
            str(job["id"]),
            "–" if job["task_id"] is None else str(job["task_id"]),
            job["model"],
            job["status"],
            f"{job['attempt']}/{job['max_attempts']}",
            "–" if fraction is None else f"{fraction:.0%}",
            fmt_optional(progress.get("epoch")),
            fmt_optional(progress.get("loss"), ".4f"),
            fmt_optional(job.get("model_version")),
            fmt_time(job.get("created_at")),
        ]
        if with_errors:
            cells.append(shorten(job.get("error") or "", None if full_errors else 60))
        table.add_row(*cells)
    console.print(table)


def show_tasks(tasks: list[dict]) -> None:
    table = Table(title="Tasks (samples: train/validation/test)")
    for column in ("task", "model", "name", "strategy", "status", "job", "version", "samples", "created"):
        table.add_column(column, justify="right" if column in ("task", "job", "version", "samples") else "left")
    for task in tasks:
        dataset = task["dataset"]
        table.add_row(
            str(task["id"]),
            task["model"],
            task.get("name") or "–",
            task["strategy"],
            task["status"],
            fmt_optional(task.get("job_id")),
            fmt_optional(task.get("model_version")),
            f"{dataset['n_train']}/{dataset['n_validation']}/{dataset['n_test']}",
            fmt_time(task.get("created_at")),
        )
    console.print(table)


def show_task_accuracy(report: dict) -> None:
    """One task's accuracy after every update since it was learnt, oldest first."""
    table = Table(title=f"Accuracy of task {report['task_id']} after each update")
    for column in ("model version", "after task", "accuracy", "n_test", "measured"):
        table.add_column(column, justify="left" if column == "measured" else "right")
    for entry in report["history"]:
        table.add_row(
            str(entry["model_version"]) + ("" if entry.get("promoted", True) else " (rejected)"),
            str(entry["after_task_id"]),
            fmt_accuracy(entry["accuracy"]),
            str(entry["n_test"]),
            fmt_time(entry.get("created_at")),
        )
    console.print(table)
    console.print(
        "initial {}  current {}  best {}  forgetting {}".format(
            *(fmt_accuracy(report.get(key)) for key in ("initial", "current", "best", "forgetting"))
        )
    )


def show_matrix(report: dict, title: str) -> None:
    """R[i][j]: accuracy on task j (columns) after the update that learnt task i (rows)."""
    tasks = report["tasks"]
    table = Table(title=title)
    table.add_column("version", justify="right")
    table.add_column("after task", justify="left")
    for task in tasks:
        table.add_column(task_label(task), justify="right")
    for row in report["rows"]:
        by_task = {cell["task_id"]: cell["accuracy"] for cell in row["accuracy"]}
        after = row.get("task_name") or str(row["task_id"])
        marks = "".join(
            mark for flag, mark in ((row.get("serving"), " *"), (row.get("promoted") is False, " (rejected)")) if flag
        )
        table.add_row(
            str(row["model_version"]), after + marks, *(fmt_accuracy(by_task.get(task["task_id"])) for task in tasks)
        )
    console.print(table)
    summary = {key: report.get(key) for key in ("average_accuracy", "bwt", "forgetting")}
    console.print(
        f"average accuracy {fmt_accuracy(summary['average_accuracy'])}   BWT {fmt_optional(summary['bwt'], '+.3f')}   "
        f"forgetting {fmt_accuracy(summary['forgetting'])}"
    )
    console.print("Rows: versions; columns: test accuracy on each task after that update. * = serving version.")


def show_predictions(answer: dict, title: str, top_k: int, expected: list | None, texts: list | None = None) -> None:
    """One row per sample: label, probability, the file's label when it has one, the top k (and the text)."""
    table = Table(title=title)
    table.add_column("#", justify="right")
    if texts is not None:
        table.add_column("text", overflow="ellipsis", max_width=60)
    table.add_column("label", justify="right")
    table.add_column("probability", justify="right")
    if expected is not None:
        table.add_column("expected", justify="right")
    if top_k > 1:
        table.add_column(f"top {top_k}")
    for index, prediction in enumerate(answer["predictions"]):
        cells = [str(index), *([texts[index]] if texts is not None else []), str(prediction["label"])]
        cells.append(f"{prediction['probability']:.3f}")
        if expected is not None:
            cells.append(str(expected[index]))
        if top_k > 1:
            cells.append("  ".join(f"{label}:{p:.2f}" for label, p in prediction.get("top_k") or []))
        table.add_row(*cells)
    console.print(table)
    if expected is not None:
        hits = sum(str(p["label"]) == str(y) for p, y in zip(answer["predictions"], expected, strict=True))
        console.print(f"{hits}/{len(expected)} match the labels in the file")


def show_models(models: list[dict]) -> None:
    table = Table(title="Models")
    for column in ("name", "architecture", "family", "input shape", "tasks", "versions", "serving", "created"):
        table.add_column(column, justify="right" if column in ("tasks", "versions", "serving") else "left")
    for model in models:
        table.add_row(
            model["name"],
            model["architecture"],
            model_family(model),
            "×".join(str(d) for d in model["input_shape"]),
            str(model["n_tasks"]),
            str(model["n_versions"]),
            fmt_optional(model.get("serving_version")),
            fmt_time(model.get("created_at")),
        )
    console.print(table)


def show_keys(keys: list[dict]) -> None:
    table = Table(title="API keys (secrets are never shown again)")
    for column in ("id", "name", "scope", "prefix", "created", "revoked"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for key in keys:
        table.add_row(
            str(key["id"]),
            key["name"],
            key["scope"],
            key["prefix"] + "…",
            fmt_time(key["created_at"]),
            fmt_time(key.get("revoked_at")) if key.get("revoked_at") else "",
        )
    console.print(table)


def strategy_text(version: dict) -> str:
    """The strategy a task asked for, and with auto the one it was learnt with: "auto → ewc_replay"."""
    chosen = (version.get("strategy_choice") or {}).get("strategy")
    asked = fmt_optional(version.get("strategy"))
    return f"{asked} → {chosen}" if chosen else asked


def show_versions(model: str, versions: list[dict]) -> None:
    table = Table(title=f"Versions of {model} (* = serving)")
    for column in ("version", "parent", "task", "strategy", "λ", "promoted", "warning", "weights", "created"):
        table.add_column(column, justify="right" if column in ("version", "parent", "λ") else "left")
    for version in versions:
        task = version.get("task_id")
        table.add_row(
            f"{version['number']}{' *' if version.get('serving') else ''}",
            fmt_optional(version.get("parent_number")),
            "–" if task is None else f"{task}: {version['task_name']}" if version.get("task_name") else str(task),
            strategy_text(version),
            fmt_optional(version.get("ewc_lambda"), "g"),
            "yes" if version.get("promoted") else "no (rejected)",
            "capacity" if version.get("capacity_warning") else "–",
            (version.get("weights_sha256") or "")[:12],
            fmt_time(version.get("created_at")),
        )
    console.print(table)


def show_demo_results(results: dict, reference: str, to: Console) -> None:
    """The demo's table: each model's accuracy on A and B after each update, then A's fate in one line."""
    task_a, task_b = results["tasks"]
    table = Table(title=f"Test accuracy after each update\nA = {task_a}, B = {task_b}")
    table.add_column("model")
    table.add_column("after")
    table.add_column("A", justify="right")
    table.add_column("B", justify="right")
    table.add_column("")
    rejected = False
    for strategy, result in results["models"].items():
        for index, update in enumerate(result["updates"]):
            cells = [
                f"{update['accuracy'].get(name):.3f}" if update["accuracy"].get(name) is not None else "–"
                for name in (task_a, task_b)
            ]
            note = {JobStatus.SUCCEEDED: "", JobStatus.REJECTED: "not promoted*"}.get(
                update["status"], update["status"]
            )
            rejected |= update["status"] == JobStatus.REJECTED
            table.add_row(strategy if index == 0 else "", "A" if index == 0 else "A → B", *cells, note)
        table.add_section()
    to.print(table)
    if rejected:
        to.print("* stored, not served: the forgetting gate kept the previous version")
    final = {s: r["updates"][-1]["accuracy"].get(task_a) for s, r in results["models"].items()}
    if all(value is not None for value in final.values()):
        to.print(f"Task A after learning B: ewc {final['ewc']:.3f}, finetune {final['finetune']:.3f}.")
        to.print(f"Reference: {reference}.")


def show_collection(collection: dict | None) -> None:
    if collection is None:
        console.print("Artifacts: not collected now (see the server's log); the next collection removes them")
        return
    verb = "would remove" if collection["dry_run"] else "removed"
    console.print(
        f"Artifacts: {collection['stored']} stored, {collection['referenced']} referenced; {verb} "
        f"{collection['removed']} ({collection['bytes_freed']:,} bytes); {collection['kept_recent']} "
        f"unreferenced kept, younger than {collection['grace_seconds']:g} s"
    )


def show_deleted(answer: dict) -> None:
    versions = ", ".join(map(str, answer["versions"])) or "none"
    console.print(
        f"Model [bold]{answer['model']}[/]: deleted version(s) {versions}, {answer['tasks']} task(s), "
        f"{answer['jobs']} job(s)"
    )
    show_collection(answer["artifacts"])


def was(answer: dict) -> str:
    """The end of a serving-change sentence: " (was 2)." when there was a serving version, else "."."""
    previous = answer.get("previous_version")
    return f" (was {previous})." if previous is not None else "."
