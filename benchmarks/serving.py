"""What serving costs over a hand-rolled endpoint: latency and throughput under wrk, in one run.

Starts, on loopback:
  * the service on its embedded default (`retain serve`: SQLite, embedded worker, uvicorn with
    httptools/uvloop, no access log), with a model taught scikit-learn's digits (64 features,
    10 classes) as an MLP 64-100-100-10 through the real API and worker;
  * a hand-rolled FastAPI + torch endpoint serving the same weights (this script, --serve hand-rolled);
  * the same FastAPI app without a model: the ceiling of FastAPI + uvicorn here (--serve ceiling);
then drives each with wrk (a Lua script sets the POST body), one sample per request, on 1 and 32
connections, ``--duration`` seconds each after a short warm-up, in ``--repeats`` rounds that
interleave the endpoints, and reports the median p50 / p99 latency and req/s for POST /predict,
OIP JSON and OIP binary, with ratios to the hand-rolled endpoint and to the ceiling. Then /predict
and OIP binary at 32 connections in ``--ab-pairs`` back-to-back A/B pairs, for the one target that
compares two of retain's own routes. Every server runs with one torch thread, so the comparison is
like for like.

    python benchmarks/serving.py --json benchmarks/results/serving.json

Needs wrk (Debian: apt-get install wrk). Timings are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO_ROOT, console, write_json

from app.client import RetainClient
from app.processes import LocalServer

MODEL = "digits"
CONNECTIONS = (1, 32)
LUA = """
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
{headers}
"""


def digits_file(directory: Path) -> tuple[Path, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = directory / "digits.npz"
    np.savez(path, x=digits.data.astype(np.float32), y=digits.target.astype(np.int64))
    return path, digits.data[0].astype(np.float32)


def teach(url: str, api_key: str, path: Path) -> None:
    with RetainClient(url, api_key=api_key) as client:
        job = client.submit_task(
            path,
            {
                "model": MODEL,
                "architecture": "mlp",
                "strategy": "ewc",
                "architecture_options": json.dumps({"hidden": [100, 100]}),
                "epochs": "10",
                "ewc_lambda": "100",
            },
        )
        final = client.follow_job(job["job_id"], timeout=600)
        if final["status"] != "succeeded":
            raise SystemExit(f"teaching the digits task failed: {final}")


# ------------------------------------------------------------------------------ the comparison apps
def comparison_app(data_dir: Path | None):
    """A hand-rolled FastAPI + torch endpoint on the service's serving version (or, with no
    ``data_dir``, the same app without a model: the ceiling)."""
    import torch
    from fastapi import FastAPI
    from sqlalchemy.orm import Session

    app = FastAPI()
    if data_dir is None:

        @app.post("/predict")
        def no_model(body: dict) -> dict:
            return {"label": 0, "probability": 1.0}

        return app

    from app.db.session import get_engine
    from app.db.tables import Model, ModelVersion
    from app.registry.versions import load_version
    from app.settings import Settings
    from app.storage.artifacts import artifact_store

    settings = Settings(database_url=f"sqlite:///{data_dir / 'retain.db'}", artifact_uri=str(data_dir / "artifacts"))
    with Session(get_engine(settings)) as session:
        model = session.query(Model).filter_by(name=MODEL).one()
        learner = load_version(
            artifact_store(settings), session.get(ModelVersion, model.serving_version_id), with_consolidation=False
        )
    network, scale, labels = learner.network.eval(), learner.input_scale, learner.labels

    @app.post("/predict")
    def predict(body: dict) -> dict:
        x = torch.tensor(body["inputs"], dtype=torch.float32) * scale
        with torch.no_grad():
            probabilities = torch.softmax(network(x), dim=-1)
        probability, index = probabilities.max(dim=-1)
        return {"label": labels[int(index[0])], "probability": float(probability[0])}

    return app


def serve_comparison(kind: str, port: int, data_dir: Path | None) -> None:
    import torch
    import uvicorn

    torch.set_num_threads(1)
    uvicorn.run(
        comparison_app(data_dir if kind == "hand-rolled" else None),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_comparison(kind: str, data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}/predict", json={"inputs": [[0.0] * 64]}, timeout=2).raise_for_status()
            return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the {kind} endpoint did not start: {log.read_text()[-2000:]}")


# ------------------------------------------------------------------------------------------- wrk
def wrk_script(directory: Path, name: str, body: bytes, headers: dict[str, str]) -> Path:
    body_path = directory / f"{name}.body"
    body_path.write_bytes(body)
    script = directory / f"{name}.lua"
    script.write_text(
        LUA.format(
            body=body_path, headers="\n".join(f'wrk.headers["{key}"] = "{value}"' for key, value in headers.items())
        )
    )
    return script


def seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)$", output, re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "connections": connections,
        "requests": requests,
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": seconds(latency["50"]) * 1e3,
        "p99_ms": seconds(latency["99"]) * 1e3,
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
    }


def median_run(rows: list[dict]) -> dict:
    """The median of each figure over the rounds (errors summed)."""
    return {
        "connections": rows[0]["connections"],
        "rounds": len(rows),
        "requests": sum(r["requests"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        **{key: statistics.median(r[key] for r in rows) for key in ("req_per_s", "p50_ms", "p99_ms")},
        "req_per_s_per_round": [r["req_per_s"] for r in rows],
    }


def bodies(sample: np.ndarray, api_key: str) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """endpoint label -> (path, body, headers) of one-sample requests; retain's carry the API key."""
    values = sample.tolist()
    key = {"Authorization": f"Bearer {api_key}"}
    json_header = {"Content-Type": "application/json"}
    tensor = {"name": "input-0", "shape": [1, 64], "datatype": "FP32"}
    oip_json = {"inputs": [{**tensor, "data": values}], "outputs": [{"name": "label"}, {"name": "probability"}]}
    header = json.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": 256}}], "parameters": {"binary_data_output": True}}
    ).encode()
    return {
        "retain POST /predict": (
            "/predict",
            json.dumps({"model": MODEL, "inputs": [values]}).encode(),
            {**json_header, **key},
        ),
        "retain OIP JSON": (f"/v2/models/{MODEL}/infer", json.dumps(oip_json).encode(), {**json_header, **key}),
        "retain OIP binary": (
            f"/v2/models/{MODEL}/infer",
            header + sample.astype("<f4").tobytes(),
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header)), **key},
        ),
        "hand-rolled FastAPI+torch": ("/predict", json.dumps({"inputs": [values]}).encode(), json_header),
        "ceiling (FastAPI, no model)": ("/predict", json.dumps({"inputs": [values]}).encode(), json_header),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per endpoint and concurrency")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all endpoints; medians are reported")
    parser.add_argument(
        "--ab-pairs",
        type=int,
        default=8,
        help="then /predict against OIP binary at 32 connections, in this many A/B pairs",
    )
    parser.add_argument("--ab-duration", type=int, default=3, help="seconds of wrk per run of an A/B pair")
    parser.add_argument("--json", help="write the results here (e.g. benchmarks/results/serving.json)")
    parser.add_argument("--serve", choices=["hand-rolled", "ceiling"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_comparison(args.serve, args.port, args.data_dir)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="retain-serving-"))
    path, sample = digits_file(work)
    results, processes = {}, []
    env = {"RETAIN_TORCH_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    with LocalServer(work / "service", extra_env=env) as server:
        console.print(f"service at {server.url}; teaching {MODEL} (MLP 64-100-100-10) through the API")
        teach(server.url, server.api_key, path)  # auth is on, as deployed: every retain request carries a key
        try:
            urls = {"retain": server.url}
            for kind in ("hand-rolled", "ceiling"):
                process, urls[kind] = start_comparison(kind, work / "service", work / f"{kind}.log")
                processes.append(process)
            targets = {}
            for label, (route, body, headers) in bodies(sample, server.api_key).items():
                base = urls[
                    "retain" if label.startswith("retain") else "hand-rolled" if label.startswith("hand") else "ceiling"
                ]
                targets[label] = (base + route, wrk_script(work, re.sub(r"\W+", "_", label), body, headers))
                run_wrk(*targets[label], 4, 1)  # warm-up: the learner load, first forwards
            runs = {label: {c: [] for c in CONNECTIONS} for label in targets}
            for round_ in range(args.repeats):
                # Rounds interleave the endpoints so that load from elsewhere hits all of them; within a
                # round every endpoint runs back to back at one concurrency, in an order that reverses
                # every other round, so no endpoint always runs first (a warm cache) or last (a drifting host).
                order = list(targets) if round_ % 2 == 0 else list(targets)[::-1]
                for c in CONNECTIONS:
                    for label in order:
                        url, script = targets[label]
                        row = run_wrk(url, script, c, args.duration)
                        runs[label][c].append(row)
                        console.print(
                            f"round {round_ + 1} {label:30} c={c:<3} p50 {row['p50_ms']:.2f} ms  "
                            f"p99 {row['p99_ms']:.2f} ms  {row['req_per_s']:.0f} req/s  "
                            f"errors {row['errors']}"
                        )
            results = {label: [median_run(runs[label][c]) for c in CONNECTIONS] for label in targets}
            ab = ab_comparison(
                targets["retain POST /predict"], targets["retain OIP binary"], args.ab_pairs, args.ab_duration
            )
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    shutil.rmtree(work, ignore_errors=True)
    report(results, ab, args)


def ab_comparison(a: tuple[str, Path], b: tuple[str, Path], pairs: int, duration: int) -> dict:
    """B's c32 throughput over A's, measured as A B B A A B ...: each run next to one of the other
    kind, so a host that drifts between runs (other tenants, frequency) weighs on both alike. The
    rounds above space two endpoints' runs up to a minute apart; on a shared host that alone moves
    req/s by ±30%, more than the difference this target asks about."""
    requests = {"a": 0, "b": 0}
    pair_ratios = []
    for i in range(pairs):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        rows = {}
        for kind in order:
            rows[kind] = run_wrk(*(a if kind == "a" else b), 32, duration)
            requests[kind] += rows[kind]["requests"]
        pair_ratios.append(rows["b"]["req_per_s"] / rows["a"]["req_per_s"])
        console.print(f"A/B pair {i + 1}: {rows['a']['req_per_s']:.0f} vs {rows['b']['req_per_s']:.0f} req/s")
    return {
        "pairs": pairs,
        "duration_s": duration,
        "requests_a": requests["a"],
        "requests_b": requests["b"],
        "ratio": requests["b"] / requests["a"],
        "pair_ratios": pair_ratios,
    }


def report(results: dict, ab: dict, args) -> None:
    hand, ceiling = results["hand-rolled FastAPI+torch"], results["ceiling (FastAPI, no model)"]
    console.print(
        "\n| endpoint | conns | p50 ms | p99 ms | req/s | errors | p50 / hand-rolled | req/s / hand-rolled "
        "| req/s / ceiling |\n|---|---|---|---|---|---|---|---|---|"
    )
    for label, rows in results.items():
        for i, row in enumerate(rows):
            row["p50_vs_hand_rolled"] = row["p50_ms"] / hand[i]["p50_ms"]
            row["req_per_s_vs_hand_rolled"] = row["req_per_s"] / hand[i]["req_per_s"]
            row["req_per_s_vs_ceiling"] = row["req_per_s"] / ceiling[i]["req_per_s"]
            console.print(
                f"| {label} | {row['connections']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['req_per_s']:.0f} | {row['errors']} | {row['p50_vs_hand_rolled']:.2f}x | "
                f"{row['req_per_s_vs_hand_rolled']:.2f}x | {row['req_per_s_vs_ceiling']:.2f}x |"
            )
    predict, binary = results["retain POST /predict"], results["retain OIP binary"]
    targets = {
        "c1: /predict p50 <= 1.3x hand-rolled": predict[0]["p50_vs_hand_rolled"] <= 1.3,
        "c32: /predict req/s >= 2x hand-rolled": predict[1]["req_per_s_vs_hand_rolled"] >= 2.0,
        "c32: /predict req/s >= 0.7x ceiling": predict[1]["req_per_s_vs_ceiling"] >= 0.7,
        "c32: zero errors": all(rows[1]["errors"] == 0 for rows in results.values()),
        "OIP binary at least as fast as /predict (c32 req/s, A/B)": ab["ratio"] >= 1.0,
    }
    console.print(
        f"c32 OIP binary / /predict, on the rounds' medians: "
        f"{binary[1]['req_per_s'] / predict[1]['req_per_s']:.2f}x; A/B: {ab['ratio']:.2f}x "
        f"(pairs {', '.join(f'{r:.2f}' for r in ab['pair_ratios'])})"
    )
    for target, met in targets.items():
        console.print(f"{'met    ' if met else 'NOT met'}  {target}")
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "serving",
                "duration_s": args.duration,
                "repeats": args.repeats,
                "results": results,
                "oip_binary_vs_predict_c32_ab": ab,
                "targets": targets,
            },
        )


if __name__ == "__main__":
    main()
