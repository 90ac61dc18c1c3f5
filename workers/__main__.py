"""`python -m workers`: one worker process; run as many as you like, on as many machines.

Every worker polls the same jobs table (DATABASE_URL) and reads/writes the same artifact
store (RETAIN_ARTIFACT_URI); settings come from the environment like the API's, and the
options below override them. SIGTERM or Ctrl-C stops gracefully: no new claims, and a job
in training goes back to the queue for another worker; a second signal exits at once (the
job's lease then expires and it is retried).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading

from app.settings import Settings
from app.updates.loop import default_worker_id, run_worker


def device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not auto, cpu, cuda or cuda:K (K a GPU index)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        type=device_name,
        metavar="auto|cpu|cuda|cuda:K",
        help="where to train (default: RETAIN_DEVICE, else auto = cuda when present); cuda:K "
        "is GPU K: start one worker per GPU",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        metavar="SECONDS",
        help="wait between polls of an empty queue (default: RETAIN_POLL_INTERVAL, else 0.5)",
    )
    parser.add_argument("--once", action="store_true", help="run at most one job, then exit")
    parser.add_argument("--worker-id", default=None, help="name in job leases (default: HOSTNAME-PID)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    overrides = {"device": args.device, "poll_interval": args.poll_interval}
    settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    worker_id = args.worker_id or default_worker_id()
    stop_event = threading.Event()

    def stop(signum, _frame) -> None:
        if stop_event.is_set():
            logging.getLogger("workers").warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        logging.getLogger("workers").info(
            "%s: finishing gracefully (a running job goes back to the queue)", signal.Signals(signum).name
        )
        stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("workers").info(
        "worker %s on %s, device %s, database %s",
        worker_id,
        settings.artifact_uri,
        settings.device,
        settings.database_url.split("@")[-1],
    )
    jobs_run = run_worker(settings, stop_event, once=args.once, worker_id=worker_id)
    logging.getLogger("workers").info("worker %s stopped after %d job(s)", worker_id, jobs_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
