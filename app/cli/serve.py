"""`retain serve` and `retain worker`: the service's own processes, run in this one.

Unlike the other commands these are no HTTP client: `serve` runs uvicorn here (on the
embedded default it also trains, in a worker thread) and `worker` is
`python -m workers` with its options passed through untouched.

`serve --workers N` (RETAIN_WORKERS) runs N API processes on one port: replicas running uvicorn
(uvicorn-worker's class), forked by gunicorn's master, a pre-forking process manager. uvicorn's own
(`uvicorn.run(workers=N)`) starts every replica as a fresh interpreter that imports torch again,
some 350 MiB of private memory each; forked after this process imported torch and the app and froze
the collector, a replica shares those pages (docs/replicas.md has the figures).

This process is their supervisor. It migrates and opens access once before they start (each would
race the others for it), imports what they share, forks the master, and only then starts the embedded
worker's training thread, here: training runs once however many replicas serve, and no process that
runs a thread ever forks (a child forked while another thread holds a lock of torch, OpenMP or the
allocator can hang). Why each step is where it is: `serve_replicas`.
"""

from __future__ import annotations

import argparse
import os
import signal
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
        help="API processes serving this port (forked by gunicorn's master); auto = one per core "
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
    With more than one worker, run them as replicas forked by gunicorn's master (`serve_replicas`);
    with one, plain uvicorn, as always.

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


REPLICA_START_SECONDS = 60
"""gunicorn's worker timeout: how long a replica may go without telling the master it is alive (its
default, 30 s, is shorter than a replica's start can take on a loaded machine, and a replica that misses
it is killed and started again)."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve_replicas(args: argparse.Namespace, settings, workers: int) -> int:
    """``workers`` API processes on one port, forked, watched and stopped by gunicorn's master.

    The order is what makes the replicas share memory and keeps every fork safe:

    1. What must happen once happens here first: the schema migrated (run_serve), the admin key made
       (`prepare_service`), its connections closed; the replicas are told not to (``prepare_on_start``).
    2. torch and the app's modules are imported here with the collector off, then frozen
       (``gc.freeze()``): every process forked afterwards shares those pages copy-on-write, and no
       reference count or collection in a child writes to them (Python's documented recipe for fork).
    3. With the embedded worker (the default), this process forks the gunicorn master and only then
       starts the training thread, here: training runs once, never in a replica (where it would slow
       that replica's answers) nor in the master (which forks a new replica whenever one dies, and a
       child forked while another thread holds a lock of torch, OpenMP or the allocator can hang).
       This process never forks again; it forwards SIGTERM and SIGINT to the master, waits for it to
       stop its replicas, then stops training (a job in training goes back to the queue). Without the
       embedded worker (compose: training is `retain worker`'s) this process is the master itself.
    4. The master (gunicorn's arbiter, public `BaseApplication` API) binds the port and forks the
       replicas; each makes its own app after the fork (`run_replica_master`): its own engines,
       learner cache, batcher and threads, none inherited.
    """
    import gc

    from app.db.session import get_engine
    from app.settings import get_settings
    from app.startup import prepare_service

    engine = get_engine(settings)
    try:
        prepare_service(settings, engine)
    finally:
        engine.dispose()  # no connection exists when the processes fork
    os.environ.update(replica_environment(settings, workers))
    get_settings.cache_clear()  # the replicas' settings from here on
    gc.disable()  # no collection leaves holes in the pages the children will share
    import app.main  # noqa: F401  torch and every module of the app, loaded once for every replica

    options = replica_server_options(args, workers)
    if not settings.embedded_worker:
        gc.freeze()
        gc.enable()
        return run_replica_master(options)
    return serve_replicas_and_train(settings, options)


def serve_replicas_and_train(settings, options: dict) -> int:
    """Fork the gunicorn master, then train in this process until the master exits (see serve_replicas)."""
    import gc
    import threading

    from app.updates.loop import start_embedded_worker

    if threading.active_count() != 1:
        raise RuntimeError("the replicas' master must be forked from a process with no other thread")
    master: dict[str, int] = {}
    stop_asked: list[int] = []

    def forward(signum: int, _frame) -> None:
        """A stop asked of this process is a graceful stop of the master (it stops its replicas)."""
        stop_asked.append(signum)
        if "pid" in master:
            os.kill(master["pid"], signal.SIGTERM)

    for stop_signal in STOP_SIGNALS:  # set before the fork: a signal that comes during it is not lost
        signal.signal(stop_signal, forward)
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the master: gunicorn's own signal handling, then never back into this function
        code = EXIT_ERROR
        try:
            for stop_signal in STOP_SIGNALS:
                signal.signal(stop_signal, signal.SIG_DFL)
            gc.enable()
            code = run_replica_master(options)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    master["pid"] = pid
    if stop_asked:
        os.kill(pid, signal.SIGTERM)
    gc.enable()
    trainer = start_embedded_worker(settings)  # after the fork: this process forks no more
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        trainer.stop()
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def replica_server_options(args: argparse.Namespace, workers: int) -> dict:
    """gunicorn settings: uvicorn's worker class, the port, the replica count, logs like uvicorn's."""
    return {
        "bind": f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}",  # IPv6 bracketed
        "workers": workers,
        "worker_class": "uvicorn_worker.UvicornWorker",
        "timeout": REPLICA_START_SECONDS,
        "graceful_timeout": 30,
        "keepalive": 5,  # uvicorn's own keep-alive timeout (gunicorn's default is 2 s)
        "loglevel": args.log_level,
        "errorlog": "-",
        "accesslog": None if args.no_access_log else "-",
        "preload_app": False,  # the modules are loaded before the fork (serve_replicas); the app is made after
        "pre_fork": freeze_before_fork,
        "control_socket_disable": True,  # its default path is one per user: two services would share it
    }


def freeze_before_fork(_arbiter, _worker) -> None:
    """What the master allocated since it was forked is frozen too before it forks a replica."""
    import gc

    gc.freeze()


def run_replica_master(options: dict) -> int:
    """gunicorn's master (its arbiter) in this process, until it stops; its exit status."""
    from gunicorn.app.base import BaseApplication

    class ReplicaServer(BaseApplication):
        """gunicorn run from Python, its documented custom application: options given, not read from argv."""

        def load_config(self) -> None:
            for name, value in options.items():
                if name in self.cfg.settings:  # control_socket_disable is gunicorn 25's and later
                    self.cfg.set(name, value)

        def load(self):
            """In each replica, after the fork: engines and the app made here, none inherited."""
            from app.db.session import forget_inherited_engines
            from app.main import create_app

            forget_inherited_engines()
            return create_app()

    try:
        ReplicaServer().run()
    except SystemExit as stopped:
        return stopped.code if isinstance(stopped.code, int) else (0 if stopped.code is None else EXIT_ERROR)
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
