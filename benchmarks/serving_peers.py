"""The real inference servers that benchmarks/serving.py compares retain with (``--peers``).

Each peer runs from its own virtual environment under benchmarks/peers/.venvs (made by
benchmarks/peers/setup.sh: their pins clash) and serves the weights retain serves, exported as
safetensors (`export_weights`) and rebuilt in plain torch by benchmarks/peers/digits_mlp.py. Each
is configured as its documentation recommends for a custom Python model:

* TorchServe: a custom handler in a model archive, one worker, batching off (batchSize 1) or on
  (batchSize 64, maxBatchDelay 1 ms), token auth off; Java front end + one Python worker.
* Triton through PyTriton: a bound Python function, dynamic batching (max batch 64, 1 ms queue delay).
* MLServer: a custom MLModel runtime, adaptive batching off or on (max_batch_size 64, max_batch_time
  1 ms), its default parallel inference pool (parallel_workers 1).
* KServe: a custom kserve.Model on ModelServer (one worker), V2 / Open Inference Protocol REST.

Every peer process runs with one torch thread (OMP_NUM_THREADS=1 and torch.set_num_threads(1)).
Nothing here imports a peer: they run as child processes, in their own session so that the whole
process tree (TorchServe's Java, Triton's server and stub) is stopped and measured together.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
VENVS = Path(os.environ.get("PEER_VENVS", PEERS_DIR / ".venvs"))
MODEL = "digits"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ the weights
def export_weights(network, scaling, labels: list, directory: Path) -> Path:
    """retain's serving MLP as safetensors: its Linear layers in order, the input scaling's per-feature
    mean and std when it standardizes, and the scale, the label vocabulary and the layer count as
    metadata (what benchmarks/peers/digits_mlp.py reads). ``scaling`` is the learner's ``input_scaling``
    (``scale``, ``mean``, ``std``) or a plain number (a scale alone)."""
    import torch
    from safetensors.torch import save_file

    linears = [module for module in network.modules() if isinstance(module, torch.nn.Linear)]
    tensors = {}
    for i, linear in enumerate(linears):
        tensors[f"layer{i}.weight"] = linear.weight.detach().cpu().contiguous()
        tensors[f"layer{i}.bias"] = linear.bias.detach().cpu().contiguous()
    scale = float(getattr(scaling, "scale", scaling))
    mean, std = getattr(scaling, "mean", None), getattr(scaling, "std", None)
    if mean is not None and std is not None:
        tensors["input.mean"] = mean.detach().cpu().reshape(-1).contiguous()
        tensors["input.std"] = std.detach().cpu().reshape(-1).contiguous()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "digits.safetensors"
    metadata = {"input_scale": repr(scale), "labels": json.dumps(list(labels)), "layers": str(len(linears))}
    save_file(tensors, str(path), metadata=metadata)
    shutil.copy(PEERS_DIR / "digits_mlp.py", directory / "digits_mlp.py")
    return directory


# ------------------------------------------------------------------------------------- processes
def process_tree(root: int) -> list[int]:
    """root and every descendant, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_rss_mib(root: int) -> tuple[float, int]:
    """Resident memory summed over root's process tree (VmRSS; shared pages count once per
    process, as RSS does), and the number of processes."""
    total, count = 0, 0
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    count += 1
        except OSError:
            continue
    return total / 1024, count


@dataclass
class Server:
    """A server under test: its root process, its base URL, and what was seen while starting it."""

    name: str
    url: str
    process: subprocess.Popen | None
    root_pid: int
    first_inference_s: float | None = None
    version: str = ""
    rss_mib: list[float] = field(default_factory=list)
    processes: int = 0

    def sample_memory(self) -> None:
        rss, count = tree_rss_mib(self.root_pid)
        self.rss_mib.append(rss)
        self.processes = max(self.processes, count)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 20 s. A peer runs in a session of its own (`launch`): the signal
    goes to that process group, its children (TorchServe's Java and workers, Triton's server) included."""
    if process.poll() is not None:
        return
    own_group = os.getpgid(process.pid) == process.pid

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if own_group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(10)


def wait_for_answer(
    name: str, process: subprocess.Popen, post: Callable[[], httpx.Response], log: Path, timeout: float
) -> float:
    """Poll a prediction until it answers 200; returns seconds since `started` (set by the caller)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if post().status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{name} gave no prediction within {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


def launch(name: str, argv: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.Popen(
        argv, cwd=cwd, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def venv_python(peer_venv: str) -> Path:
    return VENVS / peer_venv / "bin" / "python"


def python_libdir(peer_venv: str) -> str:
    """Where the venv's Python keeps its libpython. Triton's Python backend stub links libpython
    dynamically; with a Python that is not the system's (pyenv, say), the stub must load this one,
    not the system's of another patch release, whose C modules disagree with the stdlib it runs."""
    libdir = subprocess.run(
        [str(venv_python(peer_venv)), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return ":".join(part for part in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if part)


def package_version(peer_venv: str, package: str) -> str:
    return subprocess.run(
        [str(venv_python(peer_venv)), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


# -------------------------------------------------------------------------------------- requests
def oip_json_body(sample: np.ndarray) -> bytes:
    tensor = {"name": "input-0", "shape": [1, len(sample)], "datatype": "FP32", "data": sample.tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def oip_label(answer: dict) -> int:
    output = next(o for o in answer["outputs"] if o["name"] == "label")
    data = output["data"]
    while isinstance(data, list):
        data = data[0]
    return int(data)


def plain_label(answer: dict) -> int:
    return int(answer["label"])


@dataclass
class Peer:
    """How to start one peer and talk to it: `start` returns a started Server; requests are
    (route, body of one sample, headers) and `label` reads the predicted label from an answer."""

    name: str
    label: str
    venv: str
    package: str
    route: str
    body: Callable[[np.ndarray], bytes]
    answer_label: Callable[[dict], int]
    start: Callable[[Path, Path, np.ndarray], Server]
    notes: str
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


def _started(name, process, url, route, body, log, started, timeout=240.0) -> Server:
    post = lambda: httpx.post(  # noqa: E731  (a one-line poll)
        url + route, content=body, headers={"Content-Type": "application/json"}, timeout=5
    )
    try:
        ready = wait_for_answer(name, process, post, log, timeout)
    except BaseException:
        stop_process(process)
        raise
    return Server(name=name, url=url, process=process, root_pid=process.pid, first_inference_s=ready - started)


def start_torchserve(batched: bool) -> Callable[[Path, Path, np.ndarray], Server]:
    def start(weights: Path, work: Path, sample: np.ndarray) -> Server:
        name = "torchserve-batched" if batched else "torchserve"
        home = work / name
        store = home / "store"
        store.mkdir(parents=True, exist_ok=True)
        (home / "model-config.yaml").write_text(
            "minWorkers: 1\nmaxWorkers: 1\nresponseTimeout: 120\n"
            + ("batchSize: 64\nmaxBatchDelay: 1\n" if batched else "batchSize: 1\n")
        )
        bin_dir = venv_python("torchserve").parent
        subprocess.run(
            [
                str(bin_dir / "torch-model-archiver"),
                "--model-name",
                MODEL,
                "--version",
                "1.0",
                "--handler",
                str(PEERS_DIR / "torchserve_handler.py"),
                "--extra-files",
                f"{weights / 'digits_mlp.py'},{weights / 'digits.safetensors'}",
                "--config-file",
                str(home / "model-config.yaml"),
                "--export-path",
                str(store),
                "--force",
            ],
            check=True,
            capture_output=True,
        )
        port, management, metrics = free_port(), free_port(), free_port()
        (home / "config.properties").write_text(
            "\n".join(
                [
                    f"inference_address=http://127.0.0.1:{port}",
                    f"management_address=http://127.0.0.1:{management}",
                    f"metrics_address=http://127.0.0.1:{metrics}",
                    f"grpc_inference_port={free_port()}",
                    f"grpc_management_port={free_port()}",
                    f"model_store={store}",
                    f"load_models={MODEL}.mar",
                    "default_workers_per_model=1",
                    "disable_token_authorization=true",
                    "install_py_dep_per_model=false",
                    "async_logging=true",
                    f"python={venv_python('torchserve')}",
                    "",
                ]
            )
        )
        log = home / "server.log"
        started = time.monotonic()
        process = launch(
            name,
            [
                str(bin_dir / "torchserve"),
                "--foreground",
                "--ncs",
                "--disable-token-auth",
                "--ts-config",
                str(home / "config.properties"),
                "--model-store",
                str(store),
            ],
            log,
            home,
            # TorchServe keeps one pid file in the temporary folder and refuses to start beside it.
            {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "TMPDIR": str(home)},
        )
        url = f"http://127.0.0.1:{port}"
        server = _started(name, process, url, f"/predictions/{MODEL}", plain_body(sample), log, started)
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
        server.version = f"torchserve {package_version('torchserve', 'torchserve')}, {java[0] if java else 'java ?'}"
        return server

    return start


def plain_body(sample: np.ndarray) -> bytes:
    return json.dumps({"inputs": [sample.tolist()]}).encode()


def start_pytriton(weights: Path, work: Path, sample: np.ndarray) -> Server:
    home = work / "pytriton"
    home.mkdir(parents=True, exist_ok=True)
    port, grpc, metrics = free_port(), free_port(), free_port()
    log = home / "server.log"
    started = time.monotonic()
    process = launch(
        "pytriton",
        [
            str(venv_python("pytriton")),
            str(PEERS_DIR / "pytriton_server.py"),
            str(weights),
            str(port),
            str(grpc),
            str(metrics),
        ],
        log,
        home,
        {"PYTRITON_HOME": str(home / "pytriton-home"), "LD_LIBRARY_PATH": python_libdir("pytriton")},
    )
    url = f"http://127.0.0.1:{port}"
    server = _started("pytriton", process, url, f"/v2/models/{MODEL}/infer", oip_json_body(sample), log, started)
    with contextlib.suppress(httpx.HTTPError, ValueError):
        server.version = "Triton " + httpx.get(f"{url}/v2", timeout=5).json().get("version", "?")
    return server


def start_mlserver(batched: bool) -> Callable[[Path, Path, np.ndarray], Server]:
    def start(weights: Path, work: Path, sample: np.ndarray) -> Server:
        name = "mlserver-batched" if batched else "mlserver"
        home = work / name
        model_dir = home / "models" / MODEL
        model_dir.mkdir(parents=True, exist_ok=True)
        for path in (weights / "digits_mlp.py", weights / "digits.safetensors", PEERS_DIR / "mlserver_digits.py"):
            shutil.copy(path, model_dir / path.name)
        settings = {
            "name": MODEL,
            "implementation": "mlserver_digits.DigitsRuntime",
            "parameters": {"uri": str(model_dir)},
        }
        if batched:
            settings.update(max_batch_size=64, max_batch_time=0.001)
        (model_dir / "model-settings.json").write_text(json.dumps(settings))
        port, grpc, metrics = free_port(), free_port(), free_port()
        (home / "models" / "settings.json").write_text(
            json.dumps(
                {"host": "127.0.0.1", "http_port": port, "grpc_port": grpc, "metrics_port": metrics, "debug": False}
            )
        )
        log = home / "server.log"
        started = time.monotonic()
        process = launch(
            name,
            [str(venv_python("mlserver").parent / "mlserver"), "start", str(home / "models")],
            log,
            home,
        )
        url = f"http://127.0.0.1:{port}"
        return _started(name, process, url, f"/v2/models/{MODEL}/infer", oip_json_body(sample), log, started)

    return start


def start_kserve(weights: Path, work: Path, sample: np.ndarray) -> Server:
    home = work / "kserve"
    home.mkdir(parents=True, exist_ok=True)
    port, grpc = free_port(), free_port()
    log = home / "server.log"
    started = time.monotonic()
    process = launch(
        "kserve",
        [str(venv_python("kserve")), str(PEERS_DIR / "kserve_server.py"), str(weights), str(port), str(grpc)],
        log,
        home,
    )
    url = f"http://127.0.0.1:{port}"
    return _started("kserve", process, url, f"/v2/models/{MODEL}/infer", oip_json_body(sample), log, started)


OIP_ROUTE = f"/v2/models/{MODEL}/infer"
PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer(
            "torchserve",
            "TorchServe, no batching",
            "torchserve",
            "torchserve",
            f"/predictions/{MODEL}",
            plain_body,
            plain_label,
            start_torchserve(batched=False),
            "custom handler, batchSize 1, 1 worker; Java front end + 1 Python worker",
        ),
        Peer(
            "torchserve-batched",
            "TorchServe, batch 64, 1 ms",
            "torchserve",
            "torchserve",
            f"/predictions/{MODEL}",
            plain_body,
            plain_label,
            start_torchserve(batched=True),
            "custom handler, batchSize 64, maxBatchDelay 1 ms, 1 worker; Java front end + 1 Python worker",
        ),
        Peer(
            "pytriton",
            "Triton via PyTriton, dynamic batching",
            "pytriton",
            "nvidia-pytriton",
            OIP_ROUTE,
            oip_json_body,
            oip_label,
            start_pytriton,
            "bound Python function, max_batch_size 64, dynamic batching 1 ms queue delay; tritonserver + Python",
        ),
        Peer(
            "mlserver",
            "MLServer, no batching",
            "mlserver",
            "mlserver",
            OIP_ROUTE,
            oip_json_body,
            oip_label,
            start_mlserver(batched=False),
            "custom MLModel, adaptive batching off, default parallel_workers 1 (a separate inference process)",
        ),
        Peer(
            "mlserver-batched",
            "MLServer, adaptive batching 64, 1 ms",
            "mlserver",
            "mlserver",
            OIP_ROUTE,
            oip_json_body,
            oip_label,
            start_mlserver(batched=True),
            "custom MLModel, max_batch_size 64, max_batch_time 1 ms, default parallel_workers 1",
        ),
        Peer(
            "kserve",
            "KServe ModelServer",
            "kserve",
            "kserve",
            OIP_ROUTE,
            oip_json_body,
            oip_label,
            start_kserve,
            "custom kserve.Model, ModelServer with 1 worker, V2 REST, gRPC off",
        ),
    )
}


def installed_peers() -> list[str]:
    """The peers whose virtual environment benchmarks/peers/setup.sh has made."""
    return [name for name, peer in PEERS.items() if venv_python(peer.venv).exists()]
