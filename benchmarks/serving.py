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

With ``--peers`` (default: every peer whose virtual environment benchmarks/peers/setup.sh made) the
same rounds also drive real inference servers serving the same weights (TorchServe with batching off
and on, Triton via PyTriton, MLServer with adaptive batching off and on, KServe; see serving_peers.py),
and retain with ``--retain-workers`` processes where ``retain serve`` has ``--workers``; every server's
answers are checked against retain's first, and its processes, RSS and time to first inference are
reported with its latency and req/s:

    python benchmarks/serving.py --peers torchserve,pytriton --json benchmarks/results/serving_peers.json

Needs wrk (Debian: apt-get install wrk). Timings are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
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
from serving_peers import (
    PEERS,
    Server,
    export_weights,
    free_port,
    installed_peers,
    oip_label,
    package_version,
    plain_label,
)

from app.client import RetainClient
from app.processes import LocalServer

MODEL = "digits"
CONNECTIONS = (1, 32)
CHECKED_SAMPLES = 20
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
def serving_network(data_dir: Path):
    """The serving version of the digits model in the service's data dir: (network, its input scaling
    (raw samples -> network inputs: the scale, and the standardization fitted on the first task), labels)."""
    from sqlalchemy.orm import Session

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
    return learner.network.eval(), learner.input_scaling, learner.labels


def comparison_app(data_dir: Path | None):
    """A hand-rolled FastAPI + torch endpoint on the service's serving version (or, with no
    ``data_dir``, the same app without a model: the ceiling)."""
    import torch
    from fastapi import FastAPI

    app = FastAPI()
    if data_dir is None:

        @app.post("/predict")
        def no_model(body: dict) -> dict:
            return {"label": 0, "probability": 1.0}

        return app

    network, scaling, labels = serving_network(data_dir)

    @app.post("/predict")
    def predict(body: dict) -> dict:
        x = scaling(torch.tensor(body["inputs"], dtype=torch.float32))
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


def start_comparison(kind: str, data_dir: Path, log: Path) -> Server:
    """The hand-rolled endpoint or the ceiling in a child process, timed to its first answer."""
    import httpx

    port = free_port()
    started = time.monotonic()
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
            return Server(kind, url, process, process.pid, first_inference_s=time.monotonic() - started)
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the {kind} endpoint did not start: {log.read_text()[-2000:]}")


def start_retain(
    data_dir: Path, env: dict[str, str], body: bytes, headers: dict[str, str]
) -> tuple[LocalServer, Server]:
    """`retain serve` on a data dir that already holds the taught model, timed from the start of the
    process to its first answered prediction (readiness is polled every 0.25 s, then the prediction)."""
    import httpx

    local = LocalServer(data_dir, extra_env=env)
    started = time.monotonic()
    local.__enter__()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (
            httpx.post(f"{local.url}/v2/models/{MODEL}/infer", content=body, headers=headers, timeout=10).status_code
            == 200
        ):
            break
        time.sleep(0.05)
    else:
        local.stop()
        raise SystemExit(f"retain gave no prediction: {local.log()[-2000:]}")
    first = time.monotonic() - started
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT)
    version = f"retain {commit.stdout.strip() or '?'}, torch {torch_version()}"
    return local, Server("retain", local.url, None, local.process.pid, first_inference_s=first, version=version)


def torch_version() -> str:
    import torch

    return torch.__version__


def retain_has_workers() -> bool:
    """Whether this checkout's `retain serve` runs replicas (--workers)."""
    command = [sys.executable, "-m", "app.cli", "serve", "--help"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    help_text = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT).stdout
    return "--workers" in help_text


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


def run_wrk(url: str, script: Path, connections: int, duration: int, prefix: list[str] | None = None) -> dict:
    """One wrk run; ``prefix`` runs it under another program (taskset)."""
    command = [*(prefix or []), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
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
        help="then /predict against OIP binary at 32 connections, in this many A/B pairs (0: none)",
    )
    parser.add_argument("--ab-duration", type=int, default=3, help="seconds of wrk per run of an A/B pair")
    parser.add_argument(
        "--peers",
        default=None,
        help=f"comma-separated inference servers to compare with ({', '.join(PEERS)}); default: those whose "
        "virtual environment benchmarks/peers/setup.sh made; 'none' for none",
    )
    parser.add_argument(
        "--retain-workers",
        type=int,
        default=2,
        help="with peers, also retain serve --workers N (0: not; skipped where retain serve has no --workers)",
    )
    parser.add_argument("--json", help="write the results here (e.g. benchmarks/results/serving.json)")
    parser.add_argument("--serve", choices=["hand-rolled", "ceiling"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_comparison(args.serve, args.port, args.data_dir)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    peers = chosen_peers(args.peers)
    workers = args.retain_workers if peers and args.retain_workers > 1 and retain_has_workers() else 0
    if peers and args.retain_workers > 1 and not workers:
        console.print("retain serve has no --workers in this checkout: retain runs with 1 process only")

    work = Path(tempfile.mkdtemp(prefix="retain-serving-"))
    path, sample = digits_file(work)
    env = {"RETAIN_TORCH_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    with LocalServer(work / "service", extra_env=env) as server:
        console.print(f"service at {server.url}; teaching {MODEL} (MLP 64-100-100-10) through the API")
        teach(server.url, server.api_key, path)  # auth is on, as deployed: every retain request carries a key
        api_key = server.api_key
    # The taught service is restarted on its data, so its start is timed like every other server's.
    requests = bodies(sample, api_key)
    if workers:
        shutil.copytree(work / "service", work / "service-replicas")
    servers: dict[str, Server] = {}
    locals_: list[LocalServer] = []
    try:
        _, oip_body, oip_headers = requests["retain OIP JSON"]
        local, servers["retain"] = start_retain(work / "service", env, oip_body, oip_headers)
        locals_.append(local)
        for kind in ("hand-rolled", "ceiling"):
            servers[kind] = start_comparison(kind, work / "service", work / f"{kind}.log")
        if workers:
            replica_env = {**env, "RETAIN_WORKERS": str(workers)}
            local, servers[f"retain-{workers}"] = start_retain(
                work / "service-replicas", replica_env, oip_body, oip_headers
            )
            locals_.append(local)
            requests[f"retain OIP JSON, {workers} workers"] = requests["retain OIP JSON"]
        if peers:
            network, scaling, labels = serving_network(work / "service")
            weights = export_weights(network, scaling, labels, work / "weights")
            for name in peers:
                peer = PEERS[name]
                console.print(f"starting {peer.label} ({peer.venv} venv)")
                servers[name] = peer.start(weights, work, sample)
                servers[name].version = (
                    servers[name].version or f"{peer.package} {package_version(peer.venv, peer.package)}"
                )
                requests[peer.label] = (peer.route, peer.body(sample), peer.headers)
        endpoint_server = {label: server_of(label, workers, peers) for label in requests}
        answers = check_answers(requests, endpoint_server, servers, api_key, peers)
        targets = {}
        for label, (route, body, headers) in requests.items():
            base = servers[endpoint_server[label]].url
            targets[label] = (base + route, wrk_script(work, re.sub(r"\W+", "_", label), body, headers))
            run_wrk(*targets[label], 4, 1)  # warm-up: the learner load, first forwards
        for server_ in servers.values():
            server_.sample_memory()
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
                        f"round {round_ + 1} {label:38} c={c:<3} p50 {row['p50_ms']:.2f} ms  "
                        f"p99 {row['p99_ms']:.2f} ms  {row['req_per_s']:.0f} req/s  "
                        f"errors {row['errors']}"
                    )
                    servers[endpoint_server[label]].sample_memory()
        results = {label: [median_run(runs[label][c]) for c in CONNECTIONS] for label in targets}
        ab = (
            ab_comparison(
                targets["retain POST /predict"], targets["retain OIP binary"], args.ab_pairs, args.ab_duration
            )
            if args.ab_pairs > 0
            else None
        )
    finally:
        for server_ in servers.values():
            server_.stop()
        for local in locals_:
            local.stop()
    shutil.rmtree(work, ignore_errors=True)
    report(results, ab, args, servers_table(results, servers, endpoint_server, answers) if peers else None)


def chosen_peers(option: str | None) -> list[str]:
    if option is None:
        return installed_peers()
    names = [name.strip() for name in option.split(",") if name.strip() and name.strip() != "none"]
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    missing = [name for name in names if name not in installed_peers()]
    if missing:
        raise SystemExit(f"no virtual environment for {missing}: bash benchmarks/peers/setup.sh")
    return names


def server_of(label: str, workers: int, peers: list[str]) -> str:
    """Which server answers an endpoint label."""
    if workers and label.endswith(f"{workers} workers"):
        return f"retain-{workers}"
    if label.startswith("retain"):
        return "retain"
    if label.startswith("hand"):
        return "hand-rolled"
    if label.startswith("ceiling"):
        return "ceiling"
    return next(name for name in peers if PEERS[name].label == label)


def check_answers(requests: dict, endpoint_server: dict, servers: dict, api_key: str, peers: list[str]) -> dict:
    """Before any timing: every endpoint that serves the model gives retain's labels on the same
    samples (one-sample requests, as timed), and the size of one answer is recorded."""
    import httpx
    from sklearn.datasets import load_digits

    samples = load_digits().data[:CHECKED_SAMPLES].astype(np.float32)
    retain = servers["retain"].url
    expected = httpx.post(
        f"{retain}/predict",
        json={"model": MODEL, "inputs": samples.tolist()},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    ).json()["predictions"]
    expected = [int(p["label"]) for p in expected]
    readers = {
        "retain POST /predict": lambda a: int(a["predictions"][0]["label"]),
        "hand-rolled FastAPI+torch": plain_label,
        **{PEERS[name].label: PEERS[name].answer_label for name in peers},
    }
    found = {}
    for label, (route, body, headers) in requests.items():
        url = servers[endpoint_server[label]].url + route
        answer = httpx.post(url, content=body, headers=headers, timeout=30)
        answer.raise_for_status()
        found[label] = {"answer_bytes": len(answer.content)}
        reader = readers.get(label) or (oip_label if "OIP JSON" in label else None)
        if reader is None:
            continue  # the ceiling (no model) and OIP binary (retain's own, same forward as OIP JSON)
        labels = []
        for sample in samples:
            one = re_body(body, sample)
            labels.append(reader(httpx.post(url, content=one, headers=headers, timeout=30).json()))
        if labels != expected:
            raise SystemExit(f"{label} answers {labels}, retain {expected}: not the same model")
        found[label]["labels_agree"] = len(labels)
    console.print(f"every model endpoint gave retain's labels on {len(samples)} digits")
    return found


def re_body(template: bytes, sample: np.ndarray) -> bytes:
    """The endpoint's one-sample body (as `template`) for another sample."""
    body = json.loads(template)
    if "inputs" in body and isinstance(body["inputs"][0], dict):
        body["inputs"][0]["data"] = sample.tolist()
    else:
        body["inputs"] = [sample.tolist()]
    return json.dumps(body).encode()


def servers_table(results: dict, servers: dict, endpoint_server: dict, answers: dict) -> dict:
    """Per endpoint: its server's processes, RSS (after warm-up, and the largest seen after a run),
    time to first inference and version, with the c1 / c32 figures of the rounds."""
    table = {}
    for label, rows in results.items():
        server = servers[endpoint_server[label]]
        table[label] = {
            "server": server.name,
            "version": server.version,
            "processes": server.processes,
            "rss_mib_after_warmup": round(server.rss_mib[0], 1),
            "rss_mib_peak": round(max(server.rss_mib), 1),
            "first_inference_s": round(server.first_inference_s, 2),
            "answer_bytes": answers.get(label, {}).get("answer_bytes"),
            "labels_agree": answers.get(label, {}).get("labels_agree"),
            "notes": next((p.notes for p in PEERS.values() if p.label == label), ""),
            "c1_p50_ms": rows[0]["p50_ms"],
            "c1_p99_ms": rows[0]["p99_ms"],
            "c1_req_per_s": rows[0]["req_per_s"],
            "c32_p50_ms": rows[1]["p50_ms"],
            "c32_p99_ms": rows[1]["p99_ms"],
            "c32_req_per_s": rows[1]["req_per_s"],
        }
    return table


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


def report(results: dict, ab: dict | None, args, servers: dict | None = None) -> None:
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
    }
    if ab is not None:
        targets["OIP binary at least as fast as /predict (c32 req/s, A/B)"] = ab["ratio"] >= 1.0
        console.print(
            f"c32 OIP binary / /predict, on the rounds' medians: "
            f"{binary[1]['req_per_s'] / predict[1]['req_per_s']:.2f}x; A/B: {ab['ratio']:.2f}x "
            f"(pairs {', '.join(f'{r:.2f}' for r in ab['pair_ratios'])})"
        )
    if servers:
        targets.update(peer_targets(results, servers))
        print_servers(servers)
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
                **({"oip_binary_vs_predict_c32_ab": ab} if ab is not None else {}),
                **({"servers": servers} if servers else {}),
                "targets": targets,
            },
        )


def peer_targets(results: dict, servers: dict) -> dict[str, bool]:
    """The issue's targets against the real servers: retain (most workers) at 32 connections
    >= 1.2x the best peer's req/s, and retain's c1 p50 (OIP JSON, one process) <= every peer's."""
    peer_labels = [label for label, row in servers.items() if row["notes"]]
    if not peer_labels:
        return {}
    retain_rows = [label for label in results if label.startswith("retain OIP JSON")]
    best_retain = max(retain_rows, key=lambda label: results[label][1]["req_per_s"])
    best_peer = max(peer_labels, key=lambda label: results[label][1]["req_per_s"])
    ratio = results[best_retain][1]["req_per_s"] / results[best_peer][1]["req_per_s"]
    c1 = results["retain OIP JSON"][0]["p50_ms"]
    return {
        f"c32: {best_retain} req/s >= 1.2x the best peer's ({best_peer}; {ratio:.2f}x)": ratio >= 1.2,
        "c1: retain OIP JSON p50 <= every peer's": all(c1 <= results[label][0]["p50_ms"] for label in peer_labels),
    }


def print_servers(servers: dict) -> None:
    console.print(
        "\n| server | c1 p50 ms | c1 p99 ms | c32 req/s | c32 p99 ms | processes | RSS MiB (peak) "
        "| first inference s | answer bytes | version |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for label, row in servers.items():
        console.print(
            f"| {label} | {row['c1_p50_ms']:.2f} | {row['c1_p99_ms']:.2f} | {row['c32_req_per_s']:.0f} "
            f"| {row['c32_p99_ms']:.2f} | {row['processes']} | {row['rss_mib_peak']:.0f} "
            f"| {row['first_inference_s']:.2f} | {row['answer_bytes']} | {row['version']} |"
        )


if __name__ == "__main__":
    main()
