"""`retain serve` and `retain worker`: the service's own processes, run in this one.

Unlike the other commands these are no HTTP client: `serve` runs uvicorn here (on the
embedded default it also trains, in a worker thread) and `worker` is
`python -m workers` with its options passed through untouched.

`serve --workers N` (RETAIN_WORKERS) runs N API processes on one port under uvicorn's own process
manager. This process is then their supervisor: it migrates and opens access once before they start
(each would race the others for it), and the embedded worker trains here, in a thread of the
supervisor, so training runs once however many replicas serve (docs/replicas.md).
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
    serve.add_argument(
        "--workers",
        type=workers_argument,
        default=None,
        help="API processes serving this port (uvicorn's process manager); auto = one per core "
        "(default: RETAIN_WORKERS, else 1)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--no-access-log", action="store_true", help="do not log every request")
    serve.set_defaults(handler=run_serve, local=True)

    # Listed for --help; main() hands everything after `worker` to run_worker untouched.
    commands.add_parser("worker", help="run a worker process (`retain worker --help` for its options)")


def workers_argument(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"a number of processes (1 or more) or auto; got {text!r}")
    return count


def run_serve(args: argparse.Namespace) -> int:
    """Run the API in this process; on the embedded default it also trains (worker thread).
    With more than one worker, run them as replicas under uvicorn's supervisor (`serve_replicas`).

    The schema is brought to the migration head first, so one command serves a fresh
    clone; deployments that migrate separately (compose's `migrate`) pass --no-migrate.
    """
    import uvicorn

    from app.settings import get_settings

    if args.no_embedded_worker:
        os.environ["RETAIN_EMBEDDED_WORKER"] = "false"
    if args.workers is not None:
        os.environ["RETAIN_WORKERS"] = str(args.workers)
    get_settings.cache_clear()  # the settings as this command's options left the environment
    settings = get_settings()
    if not args.no_migrate:
        upgrade_schema()
    workers = settings.worker_count
    where = f"http://{args.host}:{args.port}" if args.port else f"a free port of {args.host}"
    processes = f", {workers} API processes" if workers > 1 else ""
    render.console.print(f"retain serving on {where}{processes}  (API docs at /docs, Ctrl-C to stop)")
    if workers > 1:
        return serve_replicas(args, settings, workers)
    uvicorn.run(
        "app.main:app", host=args.host, port=args.port, log_level=args.log_level, access_log=not args.no_access_log
    )
    return EXIT_OK


REPLICA_START_SECONDS = 60.0
"""How long uvicorn's supervisor waits for a replica's health answer (its default, 5 s, is shorter than
importing torch takes on a loaded machine, and a replica that misses it is killed and started again)."""


def serve_replicas(args: argparse.Namespace, settings, workers: int) -> int:
    """``workers`` API processes on one port, started, watched and stopped by uvicorn's supervisor.

    What must happen once happens here, before any replica starts: the schema migrated (run_serve),
    the admin key made (`prepare_service`); the replicas are told not to (``prepare_on_start``).
    Training runs once, in a thread of this supervising process (not in a replica, where it would
    slow that replica's answers), started before the replicas and stopped after they exit: a job in
    training goes back to the queue. Each replica is its own process, with its own learner cache and
    batcher; promotions and rollbacks reach it through the alias stamp, as they reach any replica.
    """
    import uvicorn

    from app.db.session import get_engine
    from app.startup import prepare_service

    engine = get_engine(settings)
    try:
        prepare_service(settings, engine)
    finally:
        engine.dispose()  # no connection of the supervisor outlives its use
    os.environ.update(replica_environment(settings, workers))
    trainer = None
    if settings.embedded_worker:
        from app.updates.loop import start_embedded_worker

        trainer = start_embedded_worker(settings)
    try:
        uvicorn.run(
            "app.main:app",
            host=args.host,
            port=args.port,
            workers=workers,
            log_level=args.log_level,
            access_log=not args.no_access_log,
            timeout_worker_healthcheck=REPLICA_START_SECONDS,
        )
    finally:
        if trainer is not None:
            trainer.stop()
    return EXIT_OK


def replica_environment(settings, workers: int) -> dict[str, str]:
    """The settings every replica starts with, over the supervisor's: no embedded worker, no second
    preparation, and (unless torch_threads is set) the cores shared out, one torch thread pool each."""
    environment = {"RETAIN_EMBEDDED_WORKER": "false", "RETAIN_PREPARE_ON_START": "false", "RETAIN_WORKERS": "1"}
    if settings.torch_threads is None:
        from app.settings import available_cores

        environment["RETAIN_TORCH_THREADS"] = str(max(1, available_cores() // workers))
    return environment


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
