"""A soak run of `retain serve --workers N`: mixed load for a while, watched minute by minute.

For ``--minutes`` (15 for the run the issue asks for): predictions from ``--connections`` (8)
connections spread over ``--models`` (10) models, a task taught to one of them every
``--teach-every`` (20) seconds (the embedded worker in the supervisor trains it), and a model's
serving version moved every ``--move-every`` (10) seconds (rolled back to an older version, then
forward to its newest). Every minute it prints the RSS and PSS of every process of the service, the
predictions' p50 and p99 and the errors; at the end it checks the targets:

* zero errors (predictions, uploads and version moves all answered 2xx);
* the service's total RSS after the first 3 minutes grows by less than 10% (runs of 4 minutes or
  more; a shorter run compares its last minute with its first and says so);
* the last minute's p99 within 1.5x the first's.

The models are small MLPs on synthetic data (no download), so the run measures the service, not
training. Wall-clock figures on a shared machine are noisy: the JSON records the load average.

    python benchmarks/soak.py --minutes 15 --workers auto --json benchmarks/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from common import console, write_json
from replica_memory import smaps_rollup

from app.processes import LocalServer

FEATURES = 16


def task_file(seed: int) -> bytes:
    """A small separable task: 4 classes by the signs of two random directions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, FEATURES)).astype(np.float32)
    directions = np.random.default_rng(seed % 7).normal(size=(FEATURES, 2))
    y = ((x @ directions) > 0).astype(np.int64) @ np.array([1, 2])
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


class Soak:
    def __init__(self, server: LocalServer, args: argparse.Namespace):
        self.server = server
        self.args = args
        self.models = [f"soak{index}" for index in range(args.models)]
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {"predict": 0, "teach": 0, "move": 0}
        self.error_examples: list[str] = []
        self.taught = 0
        self.moves = 0
        self.seed = 1000
        self.stop = asyncio.Event()

    def error(self, kind: str, what: str) -> None:
        self.errors[kind] += 1
        if len(self.error_examples) < 20:
            self.error_examples.append(f"{kind}: {what}")

    async def teach(self, client: httpx.AsyncClient, model: str) -> int | None:
        self.seed += 1
        # the default training budget: a task trained too short is rightly not promoted (not learnt)
        form = {"model": model, "name": f"t{self.seed}", "ewc_lambda": "10"}
        answer = await client.post("/tasks", data=form, files={"file": ("t.npz", task_file(self.seed))})
        if answer.status_code != 202:
            self.error("teach", f"{answer.status_code} {answer.text[:200]}")
            return None
        self.taught += 1
        return answer.json()["job_id"]

    async def predictor(self, client: httpx.AsyncClient, sample: list[float]) -> None:
        while not self.stop.is_set():
            model = random.choice(self.models)
            started = time.perf_counter()
            try:
                answer = await client.post("/predict", json={"model": model, "inputs": [sample]})
                if answer.status_code == 200:
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.error("predict", f"{answer.status_code} {answer.text[:200]}")
            except httpx.HTTPError as error:
                self.error("predict", repr(error))

    async def teacher(self, client: httpx.AsyncClient) -> None:
        while not await self.sleep(self.args.teach_every):
            await self.teach(client, random.choice(self.models))

    async def mover(self, client: httpx.AsyncClient) -> None:
        backwards = True
        while not await self.sleep(self.args.move_every):
            model = random.choice(self.models)
            versions = (await client.get(f"/models/{model}/versions")).json()
            numbers = sorted(version["number"] for version in versions)
            if len(numbers) < 2:
                continue
            target = random.choice(numbers[:-1]) if backwards else numbers[-1]
            moved = await client.put(f"/models/{model}/serving-version", json={"version": target, "reason": "soak"})
            if moved.status_code != 200:
                self.error("move", f"{moved.status_code} {moved.text[:200]}")
            self.moves += 1
            backwards = not backwards

    async def sleep(self, seconds: float) -> bool:
        """Wait, or return True at once when the run is over."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
            return True
        except TimeoutError:
            return False

    def processes(self) -> list[dict]:
        supervisor = psutil.Process(self.server.process.pid)
        rows = []
        for process in [supervisor, *supervisor.children(recursive=True)]:
            try:
                rollup = smaps_rollup(process.pid)
            except OSError:
                continue
            rows.append({"pid": process.pid, "rss_mib": rollup["Rss"] / 1024, "pss_mib": rollup["Pss"] / 1024})
        return rows

    async def run(self) -> list[dict]:
        headers = {"Authorization": f"Bearer {self.server.api_key}"}
        limits = httpx.Limits(max_connections=self.args.connections + 4)
        async with httpx.AsyncClient(base_url=self.server.url, headers=headers, timeout=60, limits=limits) as client:
            jobs = [await self.teach(client, model) for model in self.models]
            for job in jobs:
                while (await client.get(f"/jobs/{job}")).json()["status"] in ("queued", "running"):
                    await asyncio.sleep(0.5)
            console.print(f"{len(self.models)} models taught; load for {self.args.minutes} minutes")
            sample = np.random.default_rng(0).normal(size=FEATURES).astype(np.float32).tolist()
            tasks = [asyncio.create_task(self.predictor(client, sample)) for _ in range(self.args.connections)]
            tasks += [asyncio.create_task(self.teacher(client)), asyncio.create_task(self.mover(client))]
            minutes = []
            started = time.monotonic()
            for minute in range(1, self.args.minutes + 1):
                await asyncio.sleep(max(0.0, started + 60 * minute - time.monotonic()))
                latencies, self.latencies = self.latencies, []
                processes = self.processes()
                row = {
                    "minute": minute,
                    "predictions": len(latencies),
                    "p50_ms": round(1000 * float(statistics.median(latencies)), 2) if latencies else None,
                    "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2) if latencies else None,
                    "errors": dict(self.errors),
                    "tasks_taught": self.taught,
                    "version_moves": self.moves,
                    "total_rss_mib": round(sum(p["rss_mib"] for p in processes), 1),
                    "total_pss_mib": round(sum(p["pss_mib"] for p in processes), 1),
                    "rss_mib_by_pid": {p["pid"]: round(p["rss_mib"], 1) for p in processes},
                    "load_average_1min": os.getloadavg()[0],
                }
                minutes.append(row)
                console.print(
                    f"minute {minute:>2}: {row['predictions']:>6} predictions, p50 {row['p50_ms']} ms, "
                    f"p99 {row['p99_ms']} ms, errors {sum(self.errors.values())}, taught {self.taught}, "
                    f"moves {self.moves}, RSS {row['total_rss_mib']:,.0f} MiB (PSS {row['total_pss_mib']:,.0f}) "
                    f"{row['rss_mib_by_pid']}, load {row['load_average_1min']:.1f}"
                )
            self.stop.set()
            await asyncio.gather(*tasks)
        return minutes


def verdict(minutes: list[dict], errors: dict[str, int]) -> dict:
    baseline_minute = 3 if len(minutes) >= 4 else 1
    baseline = minutes[baseline_minute - 1]["total_rss_mib"]
    growth = minutes[-1]["total_rss_mib"] / baseline - 1
    p99_ratio = (minutes[-1]["p99_ms"] or 0) / (minutes[0]["p99_ms"] or float("inf"))
    return {
        "errors": sum(errors.values()),
        "zero_errors": sum(errors.values()) == 0,
        "rss_growth_since_minute": baseline_minute,
        "rss_growth": round(growth, 4),
        "rss_growth_under_10_percent": bool(growth < 0.10),
        "p99_last_over_first": round(p99_ratio, 2),
        "p99_within_1_5x": bool(p99_ratio <= 1.5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=15)
    parser.add_argument("--workers", default="auto", help="API processes (a number or auto)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--teach-every", type=float, default=20.0, help="seconds between two uploads")
    parser.add_argument("--move-every", type=float, default=10.0, help="seconds between two serving version moves")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retain-soak-") as directory:
        env = {"RETAIN_WORKERS": args.workers, "OMP_NUM_THREADS": "1"}
        with LocalServer(Path(directory), extra_env=env, startup_timeout=300) as server:
            soak = Soak(server, args)
            minutes = asyncio.run(soak.run())
            log_tail = server.log()[-2000:]
    result = verdict(minutes, soak.errors)
    console.print(result)
    if soak.error_examples:
        console.print("errors:", soak.error_examples)
    if args.json:
        write_json(
            args.json,
            {
                "settings": vars(args),
                "minutes": minutes,
                "verdict": result,
                "error_examples": soak.error_examples,
                "server_log_tail": log_tail if soak.error_examples else None,
            },
        )


if __name__ == "__main__":
    main()
