"""What the prediction log costs serving: POST /predict req/s and latency with logging on (log_rate 1.0)
and off, in the same run, against the same server.

Starts `retain serve` (embedded default: SQLite, embedded worker) on loopback, teaches it
scikit-learn's digits (MLP 64-100-100-10) through the API, then drives POST /predict (one sample per
request) from a separate load process holding ``--connections`` keep-alive connections, for
``--duration`` seconds per round, in ``--rounds`` rounds that alternate the policy off / on (set
through PUT /models/digits/feedback-policy, as a user would). Reports the median req/s and p50/p99 of
each and the ratio on/off. The load generator is Python (httpx), so on a small machine it shares the
CPU with the server: compare the two columns of one run, not across machines.

    python benchmarks/feedback_logging.py --json benchmarks/results/feedback_logging.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import console, write_json
from serving import MODEL, digits_file, teach

from app.processes import LocalServer


async def drive(url: str, api_key: str, body: bytes, connections: int, duration: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        end = time.perf_counter() + duration

        async def one_connection() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                start = time.perf_counter()
                response = await client.post("/predict", content=body)
                if response.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def load_process(url: str, api_key: str, body: Path, connections: int, duration: float) -> dict:
    """One round from a separate process (the server's CPU is not shared with this script's)."""
    out = subprocess.run(
        [sys.executable, __file__, "--drive", url, api_key, str(body), str(connections), str(duration)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--drive", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        url, api_key, body, connections, duration = args.drive
        result = asyncio.run(drive(url, api_key, Path(body).read_bytes(), int(connections), float(duration)))
        print(json.dumps(result))
        return

    import httpx

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        path, sample = digits_file(directory)
        body = directory / "body.json"
        body.write_text(json.dumps({"model": MODEL, "inputs": [sample.tolist()]}))
        env = {"RETAIN_TORCH_THREADS": "1", "RETAIN_FEEDBACK_CHECK_INTERVAL": "3600"}
        with LocalServer(directory / "service", extra_env=env) as server:
            teach(server.url, server.api_key, path)
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"})
            runs: dict[str, list[dict]] = {"off": [], "on": []}
            load_process(server.url, server.api_key, body, args.connections, min(args.duration, 3))  # warm-up
            for round_number in range(args.rounds):
                for mode in ("off", "on"):
                    policy = {"log_rate": 1.0 if mode == "on" else 0.0, "log_max_samples": 1_000_000}
                    api.put(f"/models/{MODEL}/feedback-policy", json=policy).raise_for_status()
                    result = load_process(server.url, server.api_key, body, args.connections, args.duration)
                    runs[mode].append(result)
                    console.print(
                        f"round {round_number + 1} logging {mode:>3}: {result['req_per_s']:8.1f} req/s, "
                        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}"
                    )
            logged = api.get(f"/models/{MODEL}/triggers").json()  # the model answers; the log was written
            api.close()
    summary = {
        mode: {key: statistics.median(r[key] for r in rows) for key in ("req_per_s", "p50_ms", "p99_ms")}
        for mode, rows in runs.items()
    }
    ratio = summary["on"]["req_per_s"] / summary["off"]["req_per_s"]
    console.print(
        f"median req/s at {args.connections} connections: off {summary['off']['req_per_s']:.1f}, "
        f"on {summary['on']['req_per_s']:.1f} (on/off {ratio:.3f}; target >= 0.90)"
    )
    if args.json:
        write_json(
            args.json,
            {
                "command": "python benchmarks/feedback_logging.py " + " ".join(sys.argv[1:]),
                "connections": args.connections,
                "duration_s": args.duration,
                "rounds": runs,
                "median": summary,
                "on_over_off_req_per_s": ratio,
                "model_answered_after": logged["model"],
            },
        )


if __name__ == "__main__":
    main()
