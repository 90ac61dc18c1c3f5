"""What the prediction log costs serving: POST /predict req/s at 32 connections with logging on
(log_rate 1.0) and off, in the same run, against the same server.

Starts `retain serve` (embedded default: SQLite, embedded worker) on loopback, teaches it
scikit-learn's digits (MLP 64-100-100-10) through the API, then drives POST /predict (one sample per
request) with wrk (``--connections`` keep-alive connections, one wrk thread, ``--duration`` seconds a
run) in ``--pairs`` pairs of runs, off then on, on then off, alternately (A B B A A B ...). The policy
is set through PUT /models/digits/feedback-policy before each run, as a user would, and the server's
prediction log is given a second to write what it still holds before the next run starts, so each
run pays for the rows its own requests logged. Each pair gives a ratio on/off of req/s; the result is
their median: a host whose speed drifts (other tenants, frequency) weighs on both runs of a pair
alike, so the pairs' ratios scatter far less than the runs' req/s do. Each run also reports the CPU
seconds the server process spent per request (its user + system time over the run and the settling
second after it, the log's writer thread included): what logging adds to a request's CPU cost, a
figure other tenants of the host disturb much less than req/s.

The server runs with one torch thread; wrk and the server share the machine's cores, so compare the
two columns of one run, not runs across machines. The load average before and after is recorded.

    python benchmarks/feedback_logging.py --json benchmarks/results/feedback_logging.json

``--writer-rows N`` measures the log's writer alone first, in this process on a fresh SQLite file: the
CPU time per row of `PredictionLog.flush` in batches of 2,000 one-sample predictions until the log
holds N rows, with the ids serving gives (time-ordered) and with purely random ids, to show what
the order of the ids does to the cost of a write as the log grows.

Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import console, write_json
from serving import MODEL, digits_file, run_wrk, teach, wrk_script

from app.processes import LocalServer

SETTLE_S = 1.0  # after a run: the log's writer (every feedback_flush_interval, 0.5 s) has written its rows


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server process and its children (the embedded worker runs in it)."""
    import psutil

    process = psutil.Process(pid)
    times = [process.cpu_times(), *(child.cpu_times() for child in process.children(recursive=True))]
    return sum(t.user + t.system for t in times)


def other_cpus(server_cpus: str) -> str:
    """The CPUs not in the taskset list ``server_cpus`` (all of them if it names every one)."""
    taken = set()
    for part in server_cpus.split(","):
        low, _, high = part.partition("-")
        taken.update(range(int(low), int(high or low) + 1))
    rest = [cpu for cpu in sorted(os.sched_getaffinity(0)) if cpu not in taken]
    return ",".join(map(str, rest or sorted(taken)))


def writer_cost(rows: int, batch: int = 2000) -> dict:
    """CPU µs per row of PredictionLog.flush over a log growing to ``rows`` rows, by kind of id."""
    import secrets

    import torch

    import app.feedback.prediction_log as prediction_log
    from app.db.migrate import upgrade
    from app.db.session import engine_for
    from app.learning import Prediction

    served_ids = prediction_log.new_prediction_id
    result = {}
    for kind, make_id in (("time-ordered", served_ids), ("random", lambda: secrets.token_hex(16))):
        prediction_log.new_prediction_id = make_id
        try:
            with tempfile.TemporaryDirectory() as scratch:
                url = f"sqlite:///{Path(scratch) / 'retain.db'}"
                upgrade(url)
                engine = engine_for(url)
                with engine.begin() as connection:
                    connection.exec_driver_sql(
                        "INSERT INTO models (id, name, architecture, family, input_shape, options, created_at) "
                        "VALUES (1, 'm', 'mlp', 'ewc', '[64]', '{}', '2026-01-01 00:00:00.000000')"
                    )
                log = prediction_log.PredictionLog(engine, flush_interval=3600, policy_interval=3600)
                policy = prediction_log.LogPolicy(1, 1.0, 2 * rows)  # never trimmed
                sample, served = torch.rand(1, 64), [Prediction(3, 0.9, [])]
                per_row = []
                for _ in range(rows // batch):
                    for _ in range(batch):
                        log.record(policy, None, sample, served)
                    started = time.process_time()
                    written = log.flush()
                    per_row.append(1e6 * (time.process_time() - started) / written)
                engine.dispose()
        finally:
            prediction_log.new_prediction_id = served_ids
        tenth = max(1, len(per_row) // 10)
        result[kind] = {
            "first_batches_cpu_us_per_row": statistics.median(per_row[:tenth]),
            "last_batches_cpu_us_per_row": statistics.median(per_row[-tenth:]),
        }
        console.print(
            f"writer, {kind} ids: {result[kind]['first_batches_cpu_us_per_row']:.1f} us of CPU per row at first, "
            f"{result[kind]['last_batches_cpu_us_per_row']:.1f} us as the log reaches {rows} rows"
        )
    return {"rows": rows, "batch": batch, **result}


def logged_rows(data_dir: Path) -> int:
    """Rows in the server's prediction log (read from its SQLite file, as another process would)."""
    import sqlite3

    with sqlite3.connect(data_dir / "retain.db", timeout=30) as connection:
        return connection.execute("SELECT count(*) FROM logged_samples").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per run")
    parser.add_argument("--pairs", type=int, default=10, help="off/on pairs of runs, alternating their order")
    parser.add_argument("--log-max-samples", type=int, default=1_000_000, help="the policy's log_max_samples")
    parser.add_argument(
        "--server-cpus",
        help="run the server on these CPUs and wrk on the others (taskset lists, e.g. 0): they stop competing "
        "for one core, and the server's extra work shows in its req/s as it would on a busy server",
    )
    parser.add_argument("--writer-rows", type=int, default=0, help="measure the writer alone up to this many rows")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    import httpx

    writer = writer_cost(args.writer_rows) if args.writer_rows else None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        path, sample = digits_file(directory)
        env = {"RETAIN_TORCH_THREADS": "1", "RETAIN_FEEDBACK_CHECK_INTERVAL": "3600"}
        prefix = ["taskset", "-c", args.server_cpus] if args.server_cpus else []
        with LocalServer(directory / "service", extra_env=env, command_prefix=prefix) as server:
            teach(server.url, server.api_key, path)
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"})
            body = json.dumps({"model": MODEL, "inputs": [sample.tolist()]}).encode()
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {server.api_key}"}
            script = wrk_script(directory, "predict", body, headers)
            url = server.url + "/predict"

            def run(mode: str) -> dict:
                policy = {"log_rate": 1.0 if mode == "on" else 0.0, "log_max_samples": args.log_max_samples}
                api.put(f"/models/{MODEL}/feedback-policy", json=policy).raise_for_status()
                before, cpu_before = logged_rows(server.data_dir), cpu_seconds(server.process.pid)
                result = run_wrk(url, script, args.connections, args.duration, wrk_prefix)
                time.sleep(SETTLE_S)
                result["server_cpu_us_per_request"] = (
                    1e6 * (cpu_seconds(server.process.pid) - cpu_before) / max(1, result["requests"])
                )
                result["rows_logged"] = logged_rows(server.data_dir) - before
                return result

            wrk_prefix = ["taskset", "-c", other_cpus(args.server_cpus)] if args.server_cpus else []
            run_wrk(url, script, args.connections, 2, wrk_prefix)  # warm-up: the learner load, the first forwards
            pairs = []
            for index in range(args.pairs):
                order = ("off", "on") if index % 2 == 0 else ("on", "off")
                rows = {mode: run(mode) for mode in order}
                ratio = rows["on"]["req_per_s"] / rows["off"]["req_per_s"]
                cpu_ratio = rows["on"]["server_cpu_us_per_request"] / rows["off"]["server_cpu_us_per_request"]
                pairs.append({"order": list(order), **rows, "on_over_off": ratio, "cpu_on_over_off": cpu_ratio})
                console.print(
                    f"pair {index + 1} ({' then '.join(order)}): off {rows['off']['req_per_s']:7.0f} req/s "
                    f"(p99 {rows['off']['p99_ms']:.1f} ms), on {rows['on']['req_per_s']:7.0f} req/s "
                    f"(p99 {rows['on']['p99_ms']:.1f} ms, {rows['on']['rows_logged']} rows logged): "
                    f"on/off {ratio:.3f}; server CPU per request off "
                    f"{rows['off']['server_cpu_us_per_request']:.0f} us, "
                    f"on {rows['on']['server_cpu_us_per_request']:.0f} us"
                )
            total_logged = logged_rows(server.data_dir)
            api.close()
    load_after = os.getloadavg()

    ratios = [pair["on_over_off"] for pair in pairs]
    median = {
        mode: {key: statistics.median(pair[mode][key] for pair in pairs) for key in ("req_per_s", "p50_ms", "p99_ms")}
        for mode in ("off", "on")
    }
    ratio = statistics.median(ratios)
    cpu_ratio = statistics.median(pair["cpu_on_over_off"] for pair in pairs)
    cpu = {mode: statistics.median(pair[mode]["server_cpu_us_per_request"] for pair in pairs) for mode in ("off", "on")}
    served_on = sum(pair["on"]["requests"] for pair in pairs)
    logged_on = sum(pair["on"]["rows_logged"] for pair in pairs)
    logged_off = sum(pair["off"]["rows_logged"] for pair in pairs)
    console.print(
        f"median on/off of {len(pairs)} pairs at {args.connections} connections: {ratio:.3f} "
        f"(pairs {min(ratios):.3f}-{max(ratios):.3f}; target >= 0.90); median req/s off "
        f"{median['off']['req_per_s']:.0f}, on {median['on']['req_per_s']:.0f}; "
        f"server CPU per request off {cpu['off']:.0f} us, on {cpu['on']:.0f} us (median on/off {cpu_ratio:.3f}); "
        f"{logged_on} of {served_on} predictions logged in the on runs, {logged_off} in the off runs; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    if args.json:
        write_json(
            args.json,
            {
                "connections": args.connections,
                "server_cpus": args.server_cpus,
                "duration_s": args.duration,
                "median_on_over_off_req_per_s": ratio,
                "pair_ratios": ratios,
                "median_server_cpu_us_per_request": cpu,
                "median_cpu_on_over_off": cpu_ratio,
                "median": median,
                "target_on_over_off": 0.9,
                "predictions_served_on": served_on,
                "rows_logged_on": logged_on,
                "rows_logged_off": logged_off,
                "rows_in_log_at_end": total_logged,
                "load_average_before": list(load_before),
                "load_average_after": list(load_after),
                "pairs": pairs,
                "writer": writer,
            },
        )


if __name__ == "__main__":
    main()
