"""What every command module shares: how a command is declared, and the exit statuses.

Each command module has a `register(commands)` that adds its subcommands with
`add_command` and points each at its handler, right beside it. A handler is
``run(client, args) -> exit status`` for the HTTP commands; local commands (serve,
demo) set ``local=True`` and are called as ``run(args)``, with no client.
"""

from __future__ import annotations

import argparse

from app.client import DEFAULT_KEY_FILE, DEFAULT_URL

# A rejected update was stored but not promoted (the forgetting gate); a script
# following it must be able to tell that apart from success and from failure.
EXIT_OK, EXIT_ERROR, EXIT_REJECTED = 0, 1, 3

# --url (and --api-key) are accepted before or after the command: `retain --url U jobs` and `retain jobs --url U`.
URL_OPTION = argparse.ArgumentParser(add_help=False)
URL_OPTION.add_argument(
    "--url",
    default=argparse.SUPPRESS,
    help=f"the retain API (default: $RETAIN_URL or {DEFAULT_URL})",
)
URL_OPTION.add_argument(
    "--api-key",
    default=argparse.SUPPRESS,
    help=f"API key (default: $RETAIN_API_KEY, else the admin key in {DEFAULT_KEY_FILE} that the server here wrote)",
)
JSON_OPTION = argparse.ArgumentParser(add_help=False)
JSON_OPTION.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")

Subcommands = argparse._SubParsersAction  # what `add_subparsers()` returns


def add_command(
    commands: Subcommands, name: str, help_text: str, *, json_output: bool = False, description: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand taking --url (and --json when json_output), its help also its description."""
    parents = [URL_OPTION, JSON_OPTION] if json_output else [URL_OPTION]
    return commands.add_parser(name, help=help_text, description=description or help_text, parents=parents)


def print_answer(args: argparse.Namespace, answer, show) -> int:
    """What every read command ends with: the server's JSON unchanged under ``--json``, else ``show(answer)``."""
    from app.cli import render

    if args.json:
        render.print_json(answer)
    else:
        show(answer)
    return EXIT_OK
