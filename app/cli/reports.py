"""`retain tasks`, `retain accuracy`, `retain matrix`: what was learnt and how well it is kept."""

from __future__ import annotations

import argparse

from app.cli import render
from app.cli.command import Subcommands, add_command, print_answer
from app.client import RetainClient


def register(commands: Subcommands) -> None:
    tasks = add_command(commands, "tasks", "list tasks", json_output=True)
    tasks.add_argument("--model")
    tasks.set_defaults(handler=run_tasks)

    accuracy = add_command(
        commands, "accuracy", "a task's accuracy after every update since it was learnt", json_output=True
    )
    accuracy.add_argument("task_id", type=int)
    accuracy.set_defaults(handler=run_accuracy)

    matrix = add_command(
        commands, "matrix", "a model's accuracy matrix with average accuracy, BWT and forgetting", json_output=True
    )
    matrix.add_argument("model")
    matrix.add_argument("--png", metavar="FILE", help="also write the matrix as a heatmap image (for reports)")
    matrix.set_defaults(handler=run_matrix)


def run_tasks(client: RetainClient, args: argparse.Namespace) -> int:
    return print_answer(args, client.get("/tasks", model=args.model), render.show_tasks)


def run_accuracy(client: RetainClient, args: argparse.Namespace) -> int:
    return print_answer(args, client.get(f"/tasks/{args.task_id}/accuracy"), render.show_task_accuracy)


def run_matrix(client: RetainClient, args: argparse.Namespace) -> int:
    report = client.get(f"/models/{args.model}/accuracy")
    if args.png:
        from app.reports import accuracy_heatmap_png  # Pillow, only when asked for

        accuracy_heatmap_png(report, args.png)
        render.error_console.print(f"heatmap written to {args.png}")
    return print_answer(
        args, report, lambda report: render.show_matrix(report, title=f"Accuracy matrix of {args.model}")
    )
