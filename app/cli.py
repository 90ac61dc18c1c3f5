"""`retain`: the command line for the retain service.

Every command but `serve`, `worker` and `demo` is a thin HTTP client of the API
(httpx), so the CLI behaves the same against the embedded default on a laptop and
against a docker compose deployment: point it elsewhere with --url or RETAIN_URL.

    retain serve                                 # API + embedded worker on SQLite
    retain teach digits.npz --model m --name a --follow
    retain accuracy 1        retain matrix m     retain versions m
    retain predict m samples.npz --top-k 3       retain rollback m 1

Read commands take --json and then print the server's JSON unchanged, for scripts.
Errors (server unreachable, a 4xx/5xx answer) print one clear message to stderr and
exit with status 1; the server's own message is shown as it is. `teach --follow`
exits 3 when the update was stored but the forgetting gate did not promote it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled", "rejected"})
# A rejected update was stored but not promoted (the forgetting gate); a script
# following it must be able to tell that apart from success and from failure.
EXIT_OK, EXIT_ERROR, EXIT_REJECTED = 0, 1, 3

console = Console()
error_console = Console(stderr=True)


class CliError(Exception):
    """A failure to report to the user as one line, then exit non-zero."""


# --------------------------------------------------------------------------- HTTP


def server_message(response: httpx.Response) -> str:
    """The server's own explanation of an error answer, whatever shape it came in."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"]
            if isinstance(value, list):  # FastAPI request validation errors
                return "; ".join(_validation_issue(item) for item in value)
    return json.dumps(body)


def _validation_issue(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = ".".join(str(part) for part in item.get("loc", []) if part not in ("body", "query", "path"))
    return f"{location}: {item.get('msg', item)}" if location else str(item.get("msg", item))


class RetainClient:
    """The API seen from outside: JSON in, JSON out, errors as CliError."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RetainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the retain server at {self.url} ({exc}). "
                "Start one with `retain serve`, or point the CLI at yours with --url or RETAIN_URL."
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"the retain server at {self.url} did not answer {method} {path} in time") from exc
        except httpx.TransportError as exc:
            raise CliError(f"{method} {self.url}{path} failed: {exc}") from exc
        if response.is_error:
            raise CliError(f"{method} {path} failed ({response.status_code}): {server_message(response)}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def submit_task(self, path: Path, fields: dict[str, Any]) -> dict:
        """POST /tasks: upload a dataset file as a new task of a model."""
        form = {key: str(value) for key, value in fields.items() if value is not None}
        with path.open("rb") as upload:
            return self.request(
                "POST", "/tasks", data=form, files={"file": (path.name, upload)}, timeout=600.0
            )


# ------------------------------------------------------------------------ output


def print_json(data: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON for other programs.
    print(json.dumps(data, indent=2, default=str))


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


def job_progress(job: dict) -> dict:
    """The job's progress fields (the API nests them under "progress")."""
    progress = job.get("progress") or {}
    return progress if isinstance(progress, dict) else {}


# ---------------------------------------------------------------------- commands


def cmd_teach(client: RetainClient, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path} is not a file (expected an .npz with x, y or a .csv with a label column)")
    fields = {
        "model": args.model,
        "name": args.name,
        "architecture": args.architecture,
        "strategy": args.strategy,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ewc_lambda": args.ewc_lambda,
        "test_fraction": args.test_fraction,
        "max_forgetting": args.max_forgetting,
    }
    if args.option:
        fields["architecture_options"] = json.dumps(parse_options(args.option))
    submitted = client.submit_task(path, fields)
    if not args.follow:
        if args.json:
            print_json(submitted)
        else:
            console.print(
                f"Task [bold]{submitted['id']}[/] queued for model [bold]{args.model}[/] as job {submitted['job_id']}. "
                f"Follow it with `retain jobs {submitted['job_id']}`."
            )
        return EXIT_OK
    job = follow_job(client, submitted["job_id"], show=not args.json)
    if args.json:
        print_json(job)
    else:
        report_finished_job(client, submitted, job)
    return exit_status(job)


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE pairs to a dict; VALUE is read as JSON when it parses (numbers, lists)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def follow_jobs(client: RetainClient, jobs: dict[str, int], show: bool = True,
                poll_seconds: float = 0.5) -> dict[str, dict]:
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
    finished: dict[str, dict] = {}
    with Progress(*columns, console=console, disable=not show) as bar:
        rows = {
            label: bar.add_task(label, total=1.0, status="queued", epoch="–", loss="–", speed="–", eta="–")
            for label in jobs
        }
        try:
            while len(finished) < len(jobs):
                for label, job_id in jobs.items():
                    if label in finished:
                        continue
                    job = client.get(f"/jobs/{job_id}")
                    draw_job(bar, rows[label], job)
                    if job["status"] in TERMINAL_JOB_STATUSES:
                        finished[label] = job
                if len(finished) < len(jobs):
                    time.sleep(poll_seconds)
        except KeyboardInterrupt:
            pending = ", ".join(str(jobs[label]) for label in jobs if label not in finished)
            raise CliError(
                f"stopped following; job(s) {pending} keep running on the server "
                "(`retain jobs ID --follow` to watch again, `retain cancel ID` to stop one)"
            ) from None
    return finished


def draw_job(bar: Progress, row: Any, job: dict) -> None:
    """Update one job's bar; a field the latest poll lacks keeps its last value."""
    progress = job_progress(job)
    status = job["status"]
    fields: dict[str, Any] = {
        "completed": 1.0 if status == "succeeded" else float(progress.get("fraction") or 0.0),
        # while running, the phase says more than the status: train, lambda_search, fisher, evaluate
        "status": progress.get("phase") or status if status == "running" else status,
        "eta": fmt_duration(progress.get("eta_seconds")) if status == "running" else "–",
    }
    if progress.get("epoch") is not None:
        epochs = progress.get("epochs")
        fields["epoch"] = f"{progress['epoch']}/{epochs}" if epochs else str(progress["epoch"])
    if progress.get("loss") is not None:
        fields["loss"] = f"{progress['loss']:.3f}"
    if progress.get("samples_per_second") is not None:
        fields["speed"] = f"{progress['samples_per_second']:,.0f}"
    bar.update(row, **fields)


def follow_job(client: RetainClient, job_id: int, show: bool = True) -> dict:
    return follow_jobs(client, {f"job {job_id}": job_id}, show=show)[f"job {job_id}"]


def report_finished_job(client: RetainClient, submitted: dict, job: dict) -> None:
    task_id, status, model = submitted["id"], job["status"], submitted["model"]
    if status in ("succeeded", "rejected"):
        versions = {v["number"]: v for v in client.get(f"/models/{model}/versions")}
        version = versions[job["model_version"]]
        chosen = version.get("ewc_lambda")
        how = " (chosen by search)" if version.get("lambda_search") else ""
        console.print(
            f"[green]Task {task_id} learnt[/]: model {model} version {version['number']}"
            + (f", λ = {chosen:g}{how}" if chosen is not None else "")
            + ("." if status == "succeeded" else ", [yellow]stored but not promoted[/].")
        )
        show_update_effect(client.get(f"/models/{model}/accuracy"), version)
        if status == "rejected":
            console.print(f"[yellow]{job.get('error') or 'forgetting gate: an earlier task dropped too far'}[/]")
            console.print(f"The serving version is unchanged. Serve this one anyway with `retain promote {task_id}`.")
    else:
        console.print(f"[red]Job {job['id']} {status}[/]: {job.get('error') or 'no reason given'}")


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
        table.add_row(task_label(task), fmt_accuracy(old), fmt_accuracy(new),
                      "new task" if old is None else f"{new - old:+.3f}")
    console.print(table)


def shorten(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def exit_status(job: dict) -> int:
    return {"succeeded": EXIT_OK, "rejected": EXIT_REJECTED}.get(job["status"], EXIT_ERROR)


def cmd_jobs(client: RetainClient, args: argparse.Namespace) -> int:
    if args.job_id is not None:
        job = client.get(f"/jobs/{args.job_id}")
        if args.follow and job["status"] not in TERMINAL_JOB_STATUSES:
            job = follow_job(client, args.job_id, show=not args.json)
        jobs = [job]
    else:
        jobs = client.get("/jobs", model=args.model, status=args.status)
    if args.json:
        print_json(jobs[0] if args.job_id is not None else jobs)
        return EXIT_OK
    table = Table(title="Jobs")
    with_errors = any(job.get("error") for job in jobs)
    columns = ["job", "task", "model", "status", "attempt", "progress", "epoch", "loss", "version", "created"]
    for column in columns + (["error"] if with_errors else []):
        table.add_column(column, justify="right" if column in ("job", "task", "progress", "loss", "version") else "left",
                         no_wrap=column != "error")
    for job in jobs:
        progress = job_progress(job)
        fraction = 1.0 if job["status"] == "succeeded" else progress.get("fraction")
        cells = [
            str(job["id"]),
            str(job["task_id"]),
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
            # in a list, the gist of an error; `retain jobs ID` shows it whole
            cells.append(shorten(job.get("error") or "", None if args.job_id is not None else 60))
        table.add_row(*cells)
    console.print(table)
    return EXIT_OK


def cmd_cancel(client: RetainClient, args: argparse.Namespace) -> int:
    job = client.request("POST", f"/jobs/{args.job_id}/cancel")
    console.print(f"Job {args.job_id}: {job['status']}" + (" (cancel requested)" if job["status"] == "running" else ""))
    return EXIT_OK


def cmd_tasks(client: RetainClient, args: argparse.Namespace) -> int:
    tasks = client.get("/tasks", model=args.model)
    if args.json:
        print_json(tasks)
        return EXIT_OK
    table = Table(title="Tasks (samples: train/validation/test)")
    for column in ("task", "model", "name", "strategy", "status", "job", "version", "samples", "created"):
        table.add_column(column, justify="right" if column in ("task", "job", "version", "samples") else "left")
    for task in tasks:
        dataset = task["dataset"]
        table.add_row(
            str(task["id"]), task["model"], task.get("name") or "–", task["strategy"], task["status"],
            fmt_optional(task.get("job_id")), fmt_optional(task.get("model_version")),
            f"{dataset['n_train']}/{dataset['n_validation']}/{dataset['n_test']}", fmt_time(task.get("created_at")),
        )
    console.print(table)
    return EXIT_OK


def cmd_accuracy(client: RetainClient, args: argparse.Namespace) -> int:
    report = client.get(f"/tasks/{args.task_id}/accuracy")
    if args.json:
        print_json(report)
    else:
        show_task_accuracy(report)
    return EXIT_OK


def show_task_accuracy(report: dict) -> None:
    """One task's accuracy after every update since it was learnt, oldest first."""
    table = Table(title=f"Accuracy of task {report['task_id']} after each update")
    for column in ("model version", "after task", "accuracy", "n_test", "measured"):
        table.add_column(column, justify="left" if column == "measured" else "right")
    for entry in report["history"]:
        table.add_row(
            str(entry["model_version"]) + ("" if entry.get("promoted", True) else " (rejected)"),
            str(entry["after_task_id"]), fmt_accuracy(entry["accuracy"]),
            str(entry["n_test"]), fmt_time(entry.get("created_at")),
        )
    console.print(table)
    console.print(
        "initial {}  current {}  best {}  forgetting {}".format(
            *(fmt_accuracy(report.get(key)) for key in ("initial", "current", "best", "forgetting"))
        )
    )


def cmd_matrix(client: RetainClient, args: argparse.Namespace) -> int:
    report = client.get(f"/models/{args.model}/accuracy")
    if args.json:
        print_json(report)
        return EXIT_OK
    show_matrix(report, title=f"Accuracy matrix of {args.model}")
    return EXIT_OK


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
        marks = "".join(mark for flag, mark in ((row.get("serving"), " *"), (row.get("promoted") is False, " (rejected)")) if flag)
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


def task_label(task: dict) -> str:
    return f"{task['task_id']}: {task['name']}" if task.get("name") else f"task {task['task_id']}"


def cmd_predict(client: RetainClient, args: argparse.Namespace) -> int:
    inputs, expected = load_inputs(args.inputs, key=args.key, limit=args.limit)
    body = {"model": args.model, "inputs": inputs, "top_k": args.top_k}
    if args.task is not None:
        body["task_id"] = args.task
    if args.version is not None:
        body["version"] = args.version
    answer = client.request("POST", "/predict", json=body)
    if args.json:
        print_json(answer)
        return EXIT_OK
    table = Table(title=f"{args.model} version {answer['model_version']}" + (f", task {args.task}" if args.task else ""))
    table.add_column("#", justify="right")
    table.add_column("label", justify="right")
    table.add_column("probability", justify="right")
    if expected is not None:
        table.add_column("expected", justify="right")
    if args.top_k > 1:
        table.add_column(f"top {args.top_k}")
    for index, prediction in enumerate(answer["predictions"]):
        cells = [str(index), str(prediction["label"]), f"{prediction['probability']:.3f}"]
        if expected is not None:
            cells.append(str(expected[index]))
        if args.top_k > 1:
            cells.append("  ".join(f"{label}:{p:.2f}" for label, p in prediction.get("top_k") or []))
        table.add_row(*cells)
    console.print(table)
    if expected is not None:
        hits = sum(str(p["label"]) == str(y) for p, y in zip(answer["predictions"], expected))
        console.print(f"{hits}/{len(expected)} match the labels in the file")
    return EXIT_OK


def load_inputs(source: str, key: str | None = None, limit: int | None = None) -> tuple[list, list | None]:
    """Samples to predict, from an .npz/.npy/.json file or a JSON string.

    An .npz is read without pickle; its `x` (or --key) array is sent and, when the
    file also holds the matching labels (`y` for `x`, `y_test` for `x_test`), they
    are returned so the table can show them beside the predictions.
    """
    expected = None
    path = Path(source)
    if path.suffix in (".npz", ".npy", ".json") and not path.is_file():
        raise CliError(f"{path}: no such file")
    if path.suffix in (".npz", ".npy"):
        import numpy as np  # only predict needs numpy; keep the other commands light

        try:
            loaded = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CliError(f"cannot read {path} without pickle: {exc}") from exc
        if isinstance(loaded, np.ndarray):
            samples = loaded
        else:
            key = key or ("x" if "x" in loaded.files else loaded.files[0])
            if key not in loaded.files:
                raise CliError(f"{path} has no array {key!r} (it has {', '.join(loaded.files)})")
            samples = loaded[key]
            label_key = {"x": "y", "x_test": "y_test"}.get(key)
            if label_key in loaded.files:
                expected = loaded[label_key][:limit].tolist()
        return samples[:limit].tolist(), expected
    text = path.read_text() if path.suffix == ".json" else source
    try:
        inputs = json.loads(text)
    except ValueError as exc:
        raise CliError(f"inputs must be an .npz/.npy/.json file or a JSON list of samples: {exc}") from exc
    if isinstance(inputs, dict):
        inputs = inputs.get("inputs", inputs.get(key or "x"))
    if not isinstance(inputs, list):
        raise CliError("inputs must be a JSON list of samples (nested lists of numbers)")
    return inputs[:limit], expected


def cmd_models(client: RetainClient, args: argparse.Namespace) -> int:
    models = client.get("/models")
    if args.json:
        print_json(models)
        return EXIT_OK
    table = Table(title="Models")
    for column in ("name", "architecture", "strategy", "input shape", "tasks", "versions", "serving", "created"):
        table.add_column(column, justify="right" if column in ("tasks", "versions", "serving") else "left")
    for model in models:
        table.add_row(
            model["name"], model["architecture"], model["strategy"],
            "×".join(str(d) for d in model["input_shape"]), str(model["n_tasks"]), str(model["n_versions"]),
            fmt_optional(model.get("serving_version")), fmt_time(model.get("created_at")),
        )
    console.print(table)
    return EXIT_OK


def cmd_versions(client: RetainClient, args: argparse.Namespace) -> int:
    versions = client.get(f"/models/{args.model}/versions")
    if args.json:
        print_json(versions)
        return EXIT_OK
    table = Table(title=f"Versions of {args.model} (* = serving)")
    for column in ("version", "parent", "task", "strategy", "λ", "promoted", "weights", "created"):
        table.add_column(column, justify="right" if column in ("version", "parent", "λ") else "left")
    for version in versions:
        task = version.get("task_id")
        table.add_row(
            f"{version['number']}{' *' if version.get('serving') else ''}",
            fmt_optional(version.get("parent_number")),
            "–" if task is None else f"{task}: {version['task_name']}" if version.get("task_name") else str(task),
            fmt_optional(version.get("strategy")),
            fmt_optional(version.get("ewc_lambda"), "g"),
            "yes" if version.get("promoted") else "no (rejected)",
            (version.get("weights_sha256") or "")[:12],
            fmt_time(version.get("created_at")),
        )
    console.print(table)
    return EXIT_OK


def cmd_rollback(client: RetainClient, args: argparse.Namespace) -> int:
    body = {"version": args.version, "reason": args.reason}
    answer = client.request("PUT", f"/models/{args.model}/serving-version", json=body)
    if args.json:
        print_json(answer)
    else:
        previous = answer.get("previous_version")
        console.print(
            f"Model [bold]{args.model}[/] now serves version {answer['serving_version']}"
            + (f" (was {previous})." if previous is not None else ".")
        )
    return EXIT_OK


def cmd_promote(client: RetainClient, args: argparse.Namespace) -> int:
    answer = client.request("POST", f"/tasks/{args.task_id}/promote")
    if args.json:
        print_json(answer)
    else:
        console.print(
            f"Task {args.task_id}: version {answer['model_version']} of {answer['model']} is promoted and serving"
            + (f" (was {answer['previous_version']})." if answer.get("previous_version") is not None else ".")
        )
    return EXIT_OK


# ----------------------------------------------------------- local processes


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API in this process; on the embedded default it also trains (worker thread).

    The schema is brought to the migration head first, so one command serves a fresh
    clone; deployments that migrate separately (compose's `migrate`) pass --no-migrate.
    """
    import uvicorn

    if args.no_embedded_worker:
        os.environ["RETAIN_EMBEDDED_WORKER"] = "false"
    if not args.no_migrate:
        upgrade_schema()
    where = f"http://{args.host}:{args.port}" if args.port else f"a free port of {args.host}"
    console.print(f"retain serving on {where}  (API docs at /docs, Ctrl-C to stop)")
    uvicorn.run("app.main:app", host=args.host, port=args.port, log_level=args.log_level,
                access_log=not args.no_access_log)
    return EXIT_OK


def upgrade_schema() -> None:
    """`alembic upgrade head` on the configured database (DATABASE_URL, default ./data/retain.db)."""
    from app.db.migrate import upgrade
    from app.settings import get_settings

    upgrade(get_settings().database_url)


def run_worker(worker_args: Sequence[str]) -> int:
    """`retain worker ...` is `python -m workers ...`: the same process, options passed through."""
    import runpy

    sys.argv = ["retain worker", *worker_args]
    try:
        runpy.run_module("workers", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_ERROR)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from app import demo

    return demo.run(args)


# -------------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    # --url is accepted before or after the command: `retain --url U jobs` and `retain jobs --url U`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=argparse.SUPPRESS,
        help=f"the retain API (default: $RETAIN_URL or {DEFAULT_URL})",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")

    parser = argparse.ArgumentParser(
        prog="retain", parents=[common],
        description="Teach a model new tasks without forgetting the old ones.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, parents=[common, *parents])

    serve = commands.add_parser("serve", help="run the API here (embedded worker on by default)",
                                description="Run the API in this process. On the embedded default "
                                "(SQLite under ./data, artifacts under ./data/artifacts) it also trains, in a worker thread.")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port (uvicorn logs which)")
    serve.add_argument("--no-embedded-worker", action="store_true",
                       help="serve only; train in separate `retain worker` processes")
    serve.add_argument("--no-migrate", action="store_true",
                       help="do not bring the database schema to the migration head before serving")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--no-access-log", action="store_true", help="do not log every request")
    serve.set_defaults(handler=cmd_serve, local=True)

    # Listed for --help; main() hands everything after `worker` to `python -m workers` untouched.
    commands.add_parser("worker", help="run a worker process (`retain worker --help` for its options)")

    teach = command("teach", "upload a dataset as a new task of a model", as_json)
    teach.add_argument("file", help=".npz (x, y, optional x_test, y_test) or .csv with a label column")
    teach.add_argument("--model", required=True, help="model name (created on first use)")
    teach.add_argument("--name", required=True, help="task name")
    teach.add_argument("--architecture", help="mlp | cnn | resnet18 (fixed on the model's first task)")
    teach.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="architecture option, e.g. hidden=[256,256] or alpha=2 (repeatable)")
    teach.add_argument("--strategy", help="ewc (default) | finetune | ccll")
    teach.add_argument("--epochs", type=int)
    teach.add_argument("--batch-size", type=int)
    teach.add_argument("--lr", type=float)
    teach.add_argument("--ewc-lambda", help="a number, or auto (the default: the service searches)")
    teach.add_argument("--test-fraction", type=float, help="test split when the file has no x_test")
    teach.add_argument("--max-forgetting", type=float,
                       help="the model's forgetting gate: largest allowed drop of an old task's validation accuracy")
    teach.add_argument("--follow", "-f", action="store_true", help="show a live progress bar until the update ends")
    teach.set_defaults(handler=cmd_teach)

    jobs = command("jobs", "list jobs, or show one (with --follow, wait for it)", as_json)
    jobs.add_argument("job_id", nargs="?", type=int)
    jobs.add_argument("--model")
    jobs.add_argument("--status", help="queued | running | succeeded | failed | cancelled | rejected")
    jobs.add_argument("--follow", "-f", action="store_true")
    jobs.set_defaults(handler=cmd_jobs)

    cancel = command("cancel", "cancel a queued or running job")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(handler=cmd_cancel)

    tasks = command("tasks", "list tasks", as_json)
    tasks.add_argument("--model")
    tasks.set_defaults(handler=cmd_tasks)

    accuracy = command("accuracy", "a task's accuracy after every update since it was learnt", as_json)
    accuracy.add_argument("task_id", type=int)
    accuracy.set_defaults(handler=cmd_accuracy)

    matrix = command("matrix", "a model's accuracy matrix with average accuracy, BWT and forgetting", as_json)
    matrix.add_argument("model")
    matrix.set_defaults(handler=cmd_matrix)

    predict = command("predict", "predict labels for samples", as_json)
    predict.add_argument("model")
    predict.add_argument("inputs", help="an .npz/.npy/.json file, or a JSON list of samples")
    predict.add_argument("--task", type=int, help="task id: task-aware prediction (required for ccll models)")
    predict.add_argument("--top-k", type=int, default=1)
    predict.add_argument("--version", type=int, help="a version other than the serving one")
    predict.add_argument("--key", help="array to read from an .npz (default x)")
    predict.add_argument("--limit", type=int, help="predict only the first N samples")
    predict.set_defaults(handler=cmd_predict)

    models = command("models", "list models", as_json)
    models.set_defaults(handler=cmd_models)

    versions = command("versions", "a model's versions (registry)", as_json)
    versions.add_argument("model")
    versions.set_defaults(handler=cmd_versions)

    rollback = command("rollback", "serve another version of a model (roll back or forward)", as_json)
    rollback.add_argument("model")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--reason", default="rollback from the CLI")
    rollback.set_defaults(handler=cmd_rollback)

    promote = command("promote", "accept a version the forgetting gate rejected", as_json)
    promote.add_argument("task_id", type=int)
    promote.set_defaults(handler=cmd_promote)

    demo = command("demo", "the classic experiment: task A, then task B, with ewc and finetune")
    from app.demo import add_arguments  # lightweight: the demo imports its heavy parts lazily

    add_arguments(demo)
    demo.set_defaults(handler=cmd_demo, local=True)
    return parser


def resolve_url(args: argparse.Namespace) -> str:
    return getattr(args, "url", None) or os.environ.get("RETAIN_URL") or DEFAULT_URL


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return run_worker(argv[1:])
    args = build_parser().parse_args(argv)
    args.url_given = hasattr(args, "url")
    args.url = resolve_url(args)
    try:
        if getattr(args, "local", False):
            return args.handler(args)
        with RetainClient(args.url) as client:
            return args.handler(client, args)
    except CliError as exc:
        error_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
