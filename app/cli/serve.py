"""`retain serve` and `retain worker`: the service's own processes, run in this one.

Unlike the other commands these are no HTTP client: `serve` runs uvicorn here (on the
embedded default it also trains, in a worker thread) and `worker` is
`python -m workers` with its options passed through untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from app.cli import render
from app.cli.command import EXIT_ERROR, EXIT_OK, Subcommands


def register(commands: Subcommands) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the API here (embedded worker on by default)",
        description="Run the API in this process. On the embedded default "
        "(SQLite under ./data, artifacts under ./data/artifacts) it also trains, in a worker thread.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port (uvicorn logs which)")
    serve.add_argument(
        "--no-embedded-worker", action="store_true", help="serve only; train in separate `retain worker` processes"
    )
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not bring the database schema to the migration head before serving",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--no-access-log", action="store_true", help="do not log every request")
    serve.set_defaults(handler=run_serve, local=True)

    # Listed for --help; main() hands everything after `worker` to run_worker untouched.
    commands.add_parser("worker", help="run a worker process (`retain worker --help` for its options)")


def run_serve(args: argparse.Namespace) -> int:
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
    render.console.print(f"retain serving on {where}  (API docs at /docs, Ctrl-C to stop)")
    uvicorn.run(
        "app.main:app", host=args.host, port=args.port, log_level=args.log_level, access_log=not args.no_access_log
    )
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
