"""What one prediction request costs the server, in CPU instructions: repeatable where req/s is not.

On a shared 2-core host two runs of the same endpoint under wrk differ by ±15-30% in req/s,
more than the difference between two of retain's own routes (benchmarks/serving.py). Instructions
counted by valgrind's callgrind do not depend on what else the machine is doing. This script:

  * teaches the service (embedded default) the digits MLP 64-100-100-10 through the API, as
    benchmarks/serving.py does, then restarts it under callgrind with instrumentation off and no
    embedded worker;
  * warms every route up, switches instrumentation on, then sends ``--requests`` one-sample requests
    of one kind at a time, one after another, in the order /predict, OIP binary, OIP JSON, OIP
    binary, /predict, and dumps the count after each block;
  * reports instructions per request (the whole server process, every thread: parsing, routing,
    auth, the forward pass, the answer), each kind's mean over its blocks and the ratios;
  * then, as under load, /predict and OIP binary with ``--connections`` requests in flight
    (``--concurrent-requests`` per block, blocks in the order /predict, OIP binary, OIP binary,
    /predict), counting the event loop's thread apart: at 32 connections that thread is what
    saturates (about 0.8 of a core, the serving thread about 0.2), so its instructions per request
    are what req/s at 32 connections is the inverse of.

Requests go one at a time in the first part, so every forward pass is a batch of one: the same
work for every kind; the two blocks of a kind differ by up to about 1% (allocator and cache
state), which is the resolution. Under load, batches form as they do in production (the server
runs some 30x slower under callgrind, so they are full), and blocks of a kind differ by up to
about 2%.

    python benchmarks/serving_instructions.py --json benchmarks/results/serving_instructions.json

Needs valgrind (Debian: apt-get install valgrind). Takes about 5 minutes (the server starts in
about a minute under callgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx
from common import console, write_json
from serving import MODEL, bodies, digits_file, teach

from app.processes import LocalServer

ORDER = ("retain POST /predict", "retain OIP binary", "retain OIP JSON", "retain OIP binary", "retain POST /predict")
LOADED_ORDER = ("retain POST /predict", "retain OIP binary", "retain OIP binary", "retain POST /predict")
EVENT_LOOP_THREAD = "01"  # uvicorn runs the event loop on the process's main thread: callgrind's thread 1


def callgrind(pid: int, *arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments, str(pid)], check=True, capture_output=True, timeout=120)


def dumped_totals(out: Path, block: int) -> dict[str, int]:
    """Thread number ("01", "02", ...) -> its instruction count in one callgrind dump (--separate-threads)."""
    return {
        path.name.rsplit("-", 1)[1]: int(
            re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.MULTILINE).group(1)
        )
        for path in out.parent.glob(f"{out.name}.{block}-*")
    }


async def send_concurrently(url: str, request: tuple[str, bytes, dict[str, str]], total: int, connections: int) -> None:
    """``total`` requests, ``connections`` of them in flight at any time (1: one after another, on one
    kept-alive connection)."""
    route, body, headers = request
    left = total
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=connections)) as client:

        async def connection() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                answer = await client.post(route, content=body, headers=headers)
                if answer.status_code != 200:
                    raise SystemExit(f"{route}: {answer.status_code} {answer.text}")

        await asyncio.gather(*(connection() for _ in range(connections)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per block, one at a time")
    parser.add_argument("--connections", type=int, default=32, help="requests in flight under load")
    parser.add_argument("--concurrent-requests", type=int, default=1280, help="requests per block under load")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")

    work = Path(tempfile.mkdtemp(prefix="retain-instructions-"))
    path, sample = digits_file(work)
    env = {"RETAIN_TORCH_THREADS": "1"}
    with LocalServer(work / "service", extra_env=env) as server:
        console.print(f"teaching {MODEL} through the API at {server.url}")
        teach(server.url, server.api_key, path)
    out = work / "callgrind.out"
    prefix = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}",
    ]
    console.print("restarting the service under callgrind (about a minute)")
    with LocalServer(
        work / "service", embedded_worker=False, extra_env=env, startup_timeout=900, command_prefix=prefix
    ) as server:
        requests = bodies(sample, server.api_key)
        pid = server.process.pid

        def send(label: str, n: int, connections: int = 1) -> None:
            asyncio.run(send_concurrently(server.url, requests[label], n, connections))

        for label in dict.fromkeys(ORDER):
            send(label, 20)  # warm-up: the learner load, first forwards, caches
        callgrind(pid, "--instr=on")
        for label in dict.fromkeys(ORDER):
            send(label, 20)  # and again instrumented: the first block would otherwise pay for the switch
        per_request: dict[str, list[float]] = {label: [] for label in ORDER}
        for block, label in enumerate(ORDER, start=1):
            callgrind(pid, "--zero")
            send(label, args.requests)
            callgrind(pid, f"--dump=block{block}")
            per_request[label].append(sum(dumped_totals(out, block).values()) / args.requests)
            console.print(f"block {block}: {label:22} {per_request[label][-1]:,.0f} instructions a request")
        loaded: dict[str, list[float]] = {label: [] for label in LOADED_ORDER}
        for block, label in enumerate(LOADED_ORDER, start=len(ORDER) + 1):
            callgrind(pid, "--zero")
            send(label, args.concurrent_requests, args.connections)
            callgrind(pid, f"--dump=block{block}")
            loaded[label].append(dumped_totals(out, block)[EVENT_LOOP_THREAD] / args.concurrent_requests)
            console.print(
                f"block {block}: {label:22} c={args.connections}: {loaded[label][-1]:,.0f} "
                "event-loop instructions a request"
            )
    shutil.rmtree(work, ignore_errors=True)

    predict = statistics.mean(per_request["retain POST /predict"])
    console.print(
        "\n| request | instructions a request (mean of its blocks) | blocks | / POST /predict |\n|---|---|---|---|"
    )
    results = {}
    for label, counts in per_request.items():
        mean = statistics.mean(counts)
        results[label] = {"instructions_per_request": mean, "blocks": counts, "vs_predict": mean / predict}
        console.print(f"| {label} | {mean:,.0f} | {' / '.join(f'{c:,.0f}' for c in counts)} | {mean / predict:.3f}x |")
    predict_loop = statistics.mean(loaded["retain POST /predict"])
    console.print(
        f"\n| request, {args.connections} in flight | event loop's instructions a request (mean of its blocks) "
        "| blocks | / POST /predict |\n|---|---|---|---|"
    )
    under_load = {}
    for label, counts in loaded.items():
        loop = statistics.mean(counts)
        under_load[label] = {
            "event_loop_instructions_per_request": loop,
            "blocks": counts,
            "vs_predict": loop / predict_loop,
        }
        console.print(
            f"| {label} | {loop:,.0f} | {' / '.join(f'{c:,.0f}' for c in counts)} | {loop / predict_loop:.3f}x |"
        )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "serving_instructions",
                "requests_per_block": args.requests,
                "order": list(ORDER),
                "results": results,
                "connections": args.connections,
                "concurrent_requests_per_block": args.concurrent_requests,
                "under_load": under_load,
            },
        )


if __name__ == "__main__":
    main()
