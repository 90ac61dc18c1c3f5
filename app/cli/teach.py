"""`retain teach`, `retain jobs`, `retain cancel`: upload a task, follow the update it queued, stop one.

`teach --follow` draws a live bar, then every learnt task's accuracy before and after
the update, and exits 3 when the update was stored but the forgetting gate did not
promote it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.markup import escape

from app.cli import render
from app.cli.command import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, Subcommands, add_command
from app.client import ClientError, RetainClient
from app.jobs.status import TERMINAL_STATUSES, JobStatus

# The service's registered strategies (app.learning's registry; the CLI stays light and does not
# import the learning library: tests/cli checks the two agree).
STRATEGIES = ("ewc", "finetune", "replay", "ewc_replay", "auto", "ccll")


def register(commands: Subcommands) -> None:
    teach = add_command(commands, "teach", "upload a dataset as a new task of a model", json_output=True)
    teach.add_argument(
        "file",
        help=".npz (x, y, optional x_test, y_test), .csv or .parquet with a label column, "
        "a .zip or folder of image folders (class_name/*.png), or s3://… / file://… "
        "for data the server reads itself",
    )
    teach.add_argument("--model", required=True, help="model name (created on first use)")
    teach.add_argument("--name", required=True, help="task name")
    teach.add_argument("--architecture", help="mlp | cnn | resnet18 (fixed on the model's first task)")
    teach.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="architecture option, e.g. hidden=[256,256], alpha=2 or memory_size=1000 (replay's "
        "memory, in samples) (repeatable)",
    )
    teach.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="auto (default: ewc, or ewc_replay for new labels) | ewc | finetune | replay | ewc_replay | ccll",
    )
    teach.add_argument(
        "--epochs",
        type=int,
        help="train exactly this many epochs (default: the service chooses: 4, or more on a small task, "
        "then early stopping on validation)",
    )
    teach.add_argument("--batch-size", type=int)
    teach.add_argument("--lr", type=float)
    teach.add_argument("--ewc-lambda", help="a number, or auto (the default: the service searches)")
    teach.add_argument("--test-fraction", type=float, help="test split when the file has no x_test")
    teach.add_argument(
        "--max-forgetting",
        type=float,
        help="the model's forgetting gate: largest allowed drop of an old task's validation accuracy",
    )
    teach.add_argument(
        "--nproc", type=int, help="processes the update runs on (data-parallel; at most the server's RETAIN_MAX_NPROC)"
    )
    teach.add_argument("--follow", "-f", action="store_true", help="show a live progress bar until the update ends")
    teach.set_defaults(handler=run_teach)

    jobs = add_command(commands, "jobs", "list jobs, or show one (with --follow, wait for it)", json_output=True)
    jobs.add_argument("job_id", nargs="?", type=int)
    jobs.add_argument("--model")
    jobs.add_argument("--status", help=" | ".join(JobStatus))
    jobs.add_argument("--follow", "-f", action="store_true")
    jobs.set_defaults(handler=run_jobs)

    cancel = add_command(commands, "cancel", "cancel a queued or running job")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(handler=run_cancel)


def run_teach(client: RetainClient, args: argparse.Namespace) -> int:
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
        "nproc": args.nproc,
    }
    if args.option:
        fields["architecture_options"] = json.dumps(parse_options(args.option))
    return upload_and_follow(
        client,
        args,
        lambda progress: client.submit_task(args.file, fields, progress=progress),
        lambda submitted: (
            f"Task [bold]{submitted['id']}[/] queued for model [bold]{args.model}[/] as job {submitted['job_id']}. "
            f"Follow it with `retain jobs {submitted['job_id']}`."
        ),
        lambda submitted, job: report_finished_job(client, submitted, job),
    )


def upload_and_follow(
    client: RetainClient,
    args: argparse.Namespace,
    upload: Callable[[Callable[[int, int], None]], dict],
    queued: Callable[[dict], str],
    finished: Callable[[dict, dict], None],
) -> int:
    """Upload with a progress bar, then say it is queued or (``--follow``) follow its job to the end.

    ``upload`` sends the request given the bar's callback; ``queued`` words the answer when not following;
    ``finished`` reports the ended job (``--json`` prints the answer or the job instead)."""
    with render.upload_bar(show=not args.json) as progress:
        submitted = upload(progress)
    if not args.follow:
        if args.json:
            render.print_json(submitted)
        else:
            render.console.print(queued(submitted))
        return EXIT_OK
    job = render.follow_job(client, submitted["job_id"], show=not args.json)
    if args.json:
        render.print_json(job)
    else:
        finished(submitted, job)
    return exit_status(job)


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE pairs to a dict; VALUE is read as JSON when it parses (numbers, lists)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClientError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def report_finished_job(client: RetainClient, submitted: dict, job: dict) -> None:
    """The new version, its λ, and what it did to every learnt task; how to serve it if the gate held it back."""
    task_id, status, model = submitted["id"], job["status"], submitted["model"]
    if status in (JobStatus.SUCCEEDED, JobStatus.REJECTED):
        versions = {v["number"]: v for v in client.get(f"/models/{model}/versions")}
        version = versions[job["model_version"]]
        chosen = version.get("ewc_lambda")
        how = " (chosen by search)" if version.get("lambda_search") else ""
        render.console.print(
            f"[green]Task {task_id} learnt[/]: model {model} version {version['number']}"
            + (f", λ = {chosen:g}{how}" if chosen is not None else "")
            + ("." if status == JobStatus.SUCCEEDED else ", [yellow]stored but not promoted[/].")
        )
        choice = version.get("strategy_choice")
        if choice:
            render.console.print(f"Learnt with {choice['strategy']}: {escape(choice['reason'])}.", highlight=False)
        render.show_update_effect(client.get(f"/models/{model}/accuracy"), version)
        if version.get("new_labels"):
            shown = ", ".join(map(str, version["new_labels"][:10]))
            advice = (
                ""
                if version.get("strategy") in ("replay", "ewc_replay")
                else " (new classes: only rehearsal, strategy ewc_replay, keeps the old ones answering)"
            )
            render.console.print(f"New labels: {shown}{advice}", highlight=False)
        if version.get("capacity_warning"):
            render.console.print(f"[yellow]Capacity warning: {version['capacity_warning']}[/]", highlight=False)
        if status == JobStatus.REJECTED:
            render.console.print(
                f"[yellow]{escape(job.get('error') or 'forgetting gate: an earlier task dropped too far')}[/]",
                highlight=False,
            )
            render.console.print(
                f"The serving version is unchanged. Serve this one anyway with `retain promote {task_id}`."
            )
    else:
        render.console.print(f"[red]Job {job['id']} {status}[/]: {escape(job.get('error') or 'no reason given')}")


def exit_status(job: dict) -> int:
    return {JobStatus.SUCCEEDED: EXIT_OK, JobStatus.REJECTED: EXIT_REJECTED}.get(job["status"], EXIT_ERROR)


def run_jobs(client: RetainClient, args: argparse.Namespace) -> int:
    if args.job_id is not None:
        job = client.get(f"/jobs/{args.job_id}")
        if args.follow and job["status"] not in TERMINAL_STATUSES:
            job = render.follow_job(client, args.job_id, show=not args.json)
        jobs = [job]
    else:
        jobs = client.get("/jobs", model=args.model, status=args.status)
    if args.json:
        render.print_json(jobs[0] if args.job_id is not None else jobs)
    else:
        # in a list, the gist of an error; `retain jobs ID` shows it whole
        render.show_jobs(jobs, full_errors=args.job_id is not None)
    return EXIT_OK


def run_cancel(client: RetainClient, args: argparse.Namespace) -> int:
    job = client.request("POST", f"/jobs/{args.job_id}/cancel")
    cancelling = " (cancel requested)" if job["status"] == JobStatus.RUNNING else ""
    render.console.print(f"Job {args.job_id}: {job['status']}{cancelling}")
    return EXIT_OK
