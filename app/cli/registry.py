"""`retain models`, `retain versions`, `retain rollback`, `retain promote`: the registry and the serving alias;
`retain delete`, `retain gc`: removing versions, models and unreferenced artifacts (admin)."""

from __future__ import annotations

import argparse

from app.cli import render
from app.cli.command import Subcommands, add_command, print_answer
from app.client import ClientError, RetainClient


def register(commands: Subcommands) -> None:
    models = add_command(commands, "models", "list models", json_output=True)
    models.set_defaults(handler=run_models)

    versions = add_command(commands, "versions", "a model's versions (registry)", json_output=True)
    versions.add_argument("model")
    versions.set_defaults(handler=run_versions)

    rollback = add_command(
        commands, "rollback", "serve another version of a model (roll back or forward)", json_output=True
    )
    rollback.add_argument("model")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--reason", default="rollback from the CLI")
    rollback.set_defaults(handler=run_rollback)

    promote = add_command(commands, "promote", "accept a version the forgetting gate rejected", json_output=True)
    promote.add_argument("task_id", type=int)
    promote.set_defaults(handler=run_promote)

    remove = add_command(
        commands,
        "delete",
        "delete a model, or one of its versions, and the artifacts nothing else refers to (admin)",
        json_output=True,
    )
    remove.add_argument("model")
    remove.add_argument(
        "version", type=int, nargs="?", help="only this version (not serving, no version learnt from it)"
    )
    remove.add_argument("--yes", action="store_true", help="really delete (there is no undo)")
    remove.set_defaults(handler=run_delete)

    collect = add_command(
        commands, "gc", "remove artifacts no row refers to, older than the grace period (admin)", json_output=True
    )
    collect.add_argument("--dry-run", action="store_true", help="count what would be removed; remove nothing")
    collect.set_defaults(handler=run_gc)


def run_models(client: RetainClient, args: argparse.Namespace) -> int:
    return print_answer(args, client.get("/models"), render.show_models)


def run_versions(client: RetainClient, args: argparse.Namespace) -> int:
    versions = client.get(f"/models/{args.model}/versions")
    return print_answer(args, versions, lambda versions: render.show_versions(args.model, versions))


def run_rollback(client: RetainClient, args: argparse.Namespace) -> int:
    body = {"version": args.version, "reason": args.reason}
    answer = client.request("PUT", f"/models/{args.model}/serving-version", json=body)
    return print_answer(
        args,
        answer,
        lambda answer: render.console.print(
            f"Model [bold]{args.model}[/] now serves version {answer['serving_version']}{render.was(answer)}"
        ),
    )


def run_promote(client: RetainClient, args: argparse.Namespace) -> int:
    answer = client.request("POST", f"/tasks/{args.task_id}/promote")
    return print_answer(
        args,
        answer,
        lambda answer: render.console.print(
            f"Task {args.task_id}: version {answer['model_version']} of {answer['model']} is promoted and serving"
            f"{render.was(answer)}"
        ),
    )


def run_delete(client: RetainClient, args: argparse.Namespace) -> int:
    what = f"version {args.version} of model {args.model}" if args.version else f"model {args.model} and all it holds"
    if not args.yes:
        raise ClientError(f"deleting {what} cannot be undone: run again with --yes")
    path = f"/models/{args.model}" + (f"/versions/{args.version}" if args.version else "")
    answer = client.request("DELETE", path)
    return print_answer(args, answer, render.show_deleted)


def run_gc(client: RetainClient, args: argparse.Namespace) -> int:
    answer = client.request("POST", "/artifacts/gc", params={"dry_run": "true" if args.dry_run else "false"})
    return print_answer(args, answer, render.show_collection)
