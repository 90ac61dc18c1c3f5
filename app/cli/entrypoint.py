"""The `retain` parser and dispatch: every command module registers its own subcommands here.

A command's arguments sit beside its handler in its module; this file only orders
the modules (the order `retain --help` lists them in), resolves --url and turns a
ClientError into one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from app.cli import demo, feedback, keys, model_import, predict, registry, render, reports, serve, teach
from app.cli.command import EXIT_ERROR, URL_OPTION
from app.client import DEFAULT_URL, ClientError, RetainClient, find_api_key

COMMAND_MODULES = (serve, teach, model_import, reports, predict, feedback, registry, keys, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retain",
        parents=[URL_OPTION],
        description="Teach a model new tasks without forgetting the old ones.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def resolve_url(args: argparse.Namespace) -> str:
    return getattr(args, "url", None) or os.environ.get("RETAIN_URL") or DEFAULT_URL


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return serve.run_worker(argv[1:])
    args = build_parser().parse_args(argv)
    args.url_given = hasattr(args, "url")
    args.url = resolve_url(args)
    args.api_key = find_api_key(getattr(args, "api_key", None))
    try:
        if getattr(args, "local", False):
            return args.handler(args)
        with RetainClient(args.url, api_key=args.api_key) as client:
            return args.handler(client, args)
    except ClientError as exc:
        render.print_error(exc)
        return EXIT_ERROR
