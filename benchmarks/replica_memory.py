"""Memory of `retain serve --workers N`: RSS and PSS of every process, for N = 1 and each N asked for.

RSS counts every page a process maps, shared or not, so adding the RSS of N processes counts the
shared libraries (libtorch and the rest) N times; PSS divides each shared page among the processes
mapping it, so the PSS of a tree adds up to what it really takes. Both are read from
/proc/<pid>/smaps_rollup after the service has answered predictions on every replica (each replica
has loaded the model), as a deployment holds them.

The service is the embedded default (SQLite, the embedded worker training in the supervisor when
N > 1; with --no-embedded-worker it only serves, as compose's api does), taught the digits MLP
64-100-100-10 once, through the API, as benchmarks/serving.py does.

    python benchmarks/replica_memory.py --workers 2 --json benchmarks/results/replica_memory.json
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from common import console, write_json
from serving import MODEL, digits_file, teach

from app.processes import LocalServer


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss, Pss, Pss_Anon, Pss_File, ... of one process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields


def role(process: psutil.Process, supervisor: int) -> str:
    command = " ".join(process.cmdline())
    if process.pid == supervisor:
        return "supervisor" if "spawn_main" not in command else "replica"
    if "resource_tracker" in command:
        return "multiprocessing resource tracker"
    return "replica" if "spawn_main" in command else "other"


def measure(data_dir: Path, workers: int, sample: list[float], requests: int, embedded_worker: bool) -> dict:
    env = {"RETAIN_WORKERS": str(workers), "OMP_NUM_THREADS": "1"}
    if not embedded_worker:
        env["RETAIN_EMBEDDED_WORKER"] = "false"
    with LocalServer(data_dir, extra_env=env, startup_timeout=300) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}

        def predict(_: int) -> int:
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:  # a fresh connection
                answer = client.post("/predict", json={"model": MODEL, "inputs": [sample]})
                answer.raise_for_status()
                return client.get("/livez").json()["process"]

        with ThreadPoolExecutor(8) as pool:
            answered = set(pool.map(predict, range(requests)))
        supervisor = psutil.Process(server.process.pid)
        tree = [supervisor, *supervisor.children(recursive=True)]
        rows = []
        for process in tree:
            rollup = smaps_rollup(process.pid)
            rows.append(
                {
                    "pid": process.pid,
                    "role": role(process, supervisor.pid),
                    "answered_predictions": process.pid in answered,
                    "rss_mib": round(rollup["Rss"] / 1024, 1),
                    "pss_mib": round(rollup["Pss"] / 1024, 1),
                    "pss_anon_mib": round(rollup.get("Pss_Anon", 0) / 1024, 1),
                    "pss_file_mib": round(rollup.get("Pss_File", 0) / 1024, 1),
                }
            )
    return {
        "workers": workers,
        "embedded_worker": embedded_worker,
        "processes": rows,
        "replicas_that_answered": len(answered),
        "total_rss_mib": round(sum(row["rss_mib"] for row in rows), 1),
        "total_pss_mib": round(sum(row["pss_mib"] for row in rows), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="replica counts to measure beside 1")
    parser.add_argument("--requests", type=int, default=200, help="predictions sent before measuring")
    parser.add_argument(
        "--no-embedded-worker",
        action="store_true",
        help="serve only (training elsewhere, as compose does): the supervisor then loads no torch",
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retain-replica-memory-") as directory:
        data_dir = Path(directory)
        path, sample_array = digits_file(data_dir)
        with LocalServer(data_dir / "service", extra_env={"OMP_NUM_THREADS": "1"}) as server:
            teach(server.url, server.api_key, path)
        sample = sample_array.tolist()
        embedded = not args.no_embedded_worker
        runs = [measure(data_dir / "service", n, sample, args.requests, embedded) for n in [1, *args.workers]]
    one = runs[0]
    for run in runs:
        run["pss_vs_one_worker"] = round(run["total_pss_mib"] / one["total_pss_mib"], 2)
        run["rss_vs_one_worker"] = round(run["total_rss_mib"] / one["total_rss_mib"], 2)
        replicas = [row for row in run["processes"] if row["role"] == "replica"]
        console.print(
            f"workers={run['workers']}: total RSS {run['total_rss_mib']:,.0f} MiB "
            f"({run['rss_vs_one_worker']}x one worker), total PSS {run['total_pss_mib']:,.0f} MiB "
            f"({run['pss_vs_one_worker']}x); {len(replicas)} replicas, {run['replicas_that_answered']} answered"
        )
        for row in run["processes"]:
            console.print(
                f"  {row['role']:<34} pid {row['pid']:>7}  RSS {row['rss_mib']:>7.1f}  PSS {row['pss_mib']:>7.1f} "
                f"(anon {row['pss_anon_mib']:.1f}, file {row['pss_file_mib']:.1f}) MiB"
            )
    if args.json:
        write_json(args.json, {"runs": runs})


if __name__ == "__main__":
    main()
