"""A drifting stream played through the service: served accuracy with the feedback loop on, per trigger
policy, against the same model with no loop (static) and against retraining from scratch at the
same trigger points (the cost bound).

Two streams, each on a fresh `retain serve` (embedded default, the worker in the API process):

* ``pmnist``: a model taught pmnist-conflict task 0, then the test samples of tasks 0 → 4 arriving one
  task after the other (the same digits, pixels and labels permuted per task: a shift at each boundary);
* ``mnist``: a model taught MNIST-5k digits 0 and 1, then segments in which digit 2, 3, ... appears,
  each segment holding all digits seen so far in equal shares (new classes: class-incremental updates).

The stream is played at ``--rate`` samples per second in requests of ``--batch`` samples: each batch is
predicted (POST /predict; whether each answer was right is what "served accuracy" counts), then its
true labels are sent back (POST /feedback). Policies: ``static`` (no triggers), ``every_n_labels``,
``accuracy_drop`` and ``drift`` (app/feedback/triggers.py). For the scratch bound, at each trigger point
whose update the loop promoted, a new model (the same architecture, strategy and epochs rule as the
updates) is taught from scratch on the initial task plus every label the trigger had seen, and its
served accuracy is what that model would have answered on the samples the loop's update served (from
where it started serving until the next).

Reported per stream and policy: the mean served accuracy (area under the served accuracy curve,
normalised), the number of updates, the training seconds (the versions' ``train_seconds``), and per
shift the samples until the rolling served accuracy (window ``--window``) is back within 5 points of
its level before the shift, and how many trigger-made updates that took.

    python benchmarks/stream.py --per-segment 400 --rate 30 --epochs 10 \\
        --json benchmarks/results/stream.json --plot docs/stream.svg
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SHARED_DATA, console, write_json

from app.client import RetainClient
from app.processes import LocalServer

FORM = {
    "architecture": "mlp",
    "architecture_options": json.dumps({"hidden": [100]}),
    "max_forgetting": "1.0",  # the stream decides what matters now; the gate would keep the old mapping
}


def form(args) -> dict:
    """The first task's form (the model: its architecture and the strategy its updates keep)."""
    return {**FORM, "strategy": args.strategy, "ewc_lambda": args.ewc_lambda}


POLICIES = {
    "static": [],
    "every_n_labels": [{"kind": "every_n_labels", "n": 300}],
    "accuracy_drop": [{"kind": "accuracy_drop", "drop": 0.15, "min_samples": 60}],
    "drift": [{"kind": "drift", "alpha": 0.01, "window": 100, "min_samples": 100, "reference_samples": 300}],
}


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def pmnist_stream(data_dir: Path, per_segment: int, initial: int) -> tuple[tuple[np.ndarray, np.ndarray], list]:
    tasks = [np.load(data_dir / "pmnist-conflict" / f"task{k}.npz") for k in range(5)]
    first = (tasks[0]["x"][:initial], tasks[0]["y"][:initial])
    segments = [(task["x_test"][:per_segment], task["y_test"][:per_segment]) for task in tasks]
    return first, segments


def mnist_stream(data_dir: Path, per_segment: int, initial: int) -> tuple[tuple[np.ndarray, np.ndarray], list]:
    """Digits 0 and 1 give the first task at most half of their samples; the rest of every digit is its pool
    for the stream. A segment holds the digits seen so far in equal shares, each drawn from its pool in
    turn; a pool that runs out starts over (MNIST-5k has 500 samples a digit: without that, the first task
    would use up 0 and 1 and each segment would hold its new digit alone)."""
    data = np.load(data_dir / "mnist_5k.npz")
    x, y = data["x"], data["y"]
    rng = np.random.default_rng(0)
    pools = {label: rng.permutation(np.flatnonzero(y == label)) for label in range(10)}
    per_class = min(initial // 2, len(pools[0]) // 2, len(pools[1]) // 2)
    first = rng.permutation(np.concatenate([pools[0][:per_class], pools[1][:per_class]]))
    pools[0], pools[1] = pools[0][per_class:], pools[1][per_class:]
    taken = dict.fromkeys(pools, 0)
    segments = []
    for new in range(2, 10):
        shares = np.full(new + 1, per_segment // (new + 1))
        shares[-1] += per_segment - shares.sum()
        pick = []
        for label, count in enumerate(shares):
            pick.extend(pools[label][(taken[label] + np.arange(count)) % len(pools[label])])
            taken[label] += count
        pick = rng.permutation(np.array(pick))
        segments.append((x[pick], y[pick]))
    return (x[first], y[first]), segments


def play(client: RetainClient, model: str, segments: list, rate: float, batch: int) -> list[dict]:
    """Each batch predicted, then its labels sent back, at ``rate`` samples per second."""
    played = []
    position = 0
    start = time.monotonic()
    for segment, (x, y) in enumerate(segments):
        for first in range(0, len(y), batch):
            xs, ys = x[first : first + batch], y[first : first + batch]
            answer = client.request("POST", "/predict", json={"model": model, "inputs": xs.tolist()})
            predictions = answer["predictions"]
            correct = [p["label"] == int(label) for p, label in zip(predictions, ys, strict=True)]
            items = [
                {"prediction_id": p["prediction_id"], "label": int(label)}
                for p, label in zip(predictions, ys, strict=True)
            ]
            client.request("POST", "/feedback", json={"model": model, "items": items})
            played.append(
                {"position": position, "segment": segment, "version": answer["model_version"], "correct": correct}
            )
            position += len(ys)
            wait = start + position / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    return played


def served_curve(played: list[dict]) -> np.ndarray:
    return np.array([c for row in played for c in row["correct"]], dtype=np.float64)


def rolling(curve: np.ndarray, window: int) -> np.ndarray:
    sums = np.concatenate([[0.0], np.cumsum(curve)])
    ends = np.arange(1, len(curve) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def recoveries(curve: np.ndarray, played: list[dict], per_segment: int, window: int) -> list[dict]:
    """Per shift: samples until the rolling accuracy is within 5 points of its level before the shift."""
    line = rolling(curve, window)
    versions = np.repeat([row["version"] for row in played], [len(row["correct"]) for row in played])
    out = []
    for boundary in range(per_segment, len(curve), per_segment):
        before = line[boundary - 1]
        after = np.flatnonzero(line[boundary + window // 2 :] >= before - 0.05)
        recovered = None if after.size == 0 else int(after[0] + window // 2)
        updates = None
        if recovered is not None:
            updates = len(set(versions[boundary : boundary + recovered + 1].tolist()) - {versions[boundary - 1]})
        out.append({"shift_at": boundary, "before": float(before), "samples_to_recover": recovered, "updates": updates})
    return out


def trigger_points(played: list[dict]) -> list[int]:
    """Stream positions at which a version other than the first started serving (from the answers)."""
    points, last = [], played[0]["version"]
    for row in played:
        if row["version"] != last:
            points.append(row["position"])
            last = row["version"]
    return points


def trigger_updates(client: RetainClient, model: str, played: list[dict]) -> list[dict]:
    """The trigger-made updates in order: the stream position their labels ended at (the labels arrive in
    stream order, so the sizes of the tasks add up to it), their size, the epochs and steps they trained,
    whether they were promoted and the position from which they served."""
    tasks = [task for task in client.get("/tasks", model=model) if (task["name"] or "").startswith("feedback-")]
    versions = {v["task_id"]: v for v in client.get(f"/models/{model}/versions")}
    serving_from: dict[int, int] = {}
    for row in played:
        serving_from.setdefault(row["version"], row["position"])
    out, labels = [], 0
    for task in tasks:  # oldest first
        labels += task["dataset"]["n_train"] + task["dataset"]["n_validation"] + task["dataset"]["n_test"]
        version = versions.get(task["id"]) or {}
        budget = (version.get("train_config") or {}).get("budget") or {}
        out.append(
            {
                "queued_at": labels,
                "labels": labels - (out[-1]["queued_at"] if out else 0),
                "status": task["status"],
                "epochs": task["hyperparameters"].get("epochs"),  # None: the service chose them
                "epochs_trained": budget.get("epochs_trained"),
                "steps_run": budget.get("steps_run"),
                "train_seconds": version.get("train_seconds"),
                "serving_from": serving_from.get(task["model_version"]),
            }
        )
    return out


def train_seconds(client: RetainClient, model: str) -> float:
    """Seconds the model's updates trained, the first version (the initial model, the same for all) left out."""
    return sum(v.get("train_seconds") or 0.0 for v in client.get(f"/models/{model}/versions") if v["number"] > 1)


def teach(client: RetainClient, model: str, x, y, directory: Path, epochs: int | None, form: dict) -> dict:
    path = directory / f"{model}.npz"
    path.write_bytes(npz_bytes(x, y))
    epochs_field = {} if epochs is None else {"epochs": str(epochs)}  # None: the service chooses
    job = client.submit_task(path, {"model": model, **form, **epochs_field})
    final = client.follow_job(job["job_id"], timeout=1800)
    if final["status"] not in ("succeeded", "rejected"):
        raise SystemExit(f"teaching {model} failed: {final}")
    return final


def scratch_bound(client, name, first, segments, updates, directory, epochs, initial_epochs, form) -> dict:
    """Retraining from scratch, at each trigger point where the loop's update was promoted, on everything
    seen up to that point (the labels the update's trigger had, and those before), with the same model and
    the same epochs rule as the updates (``epochs``; None: the service chooses); served over the same
    samples as that update, from where it started serving until the next."""
    x_all = np.concatenate([x for x, _ in segments])
    y_all = np.concatenate([y for _, y in segments])
    served = [u for u in updates if u["serving_from"] is not None]
    correct = []
    seconds = 0.0
    seen = [0, *(u["queued_at"] for u in served)]
    boundaries = [0, *(u["serving_from"] for u in served), len(y_all)]
    for index, (start, end) in enumerate(zip(boundaries[:-1], boundaries[1:], strict=True)):
        model = f"{name}-scratch-{index}"
        x = np.concatenate([first[0], x_all[: seen[index]]])
        y = np.concatenate([first[1], y_all[: seen[index]]])
        teach(client, model, x, y, directory, epochs if index else initial_epochs, form)
        if index > 0:
            seconds += sum(v.get("train_seconds") or 0.0 for v in client.get(f"/models/{model}/versions"))
        for first_sample in range(start, end, 200):
            xs = x_all[first_sample : min(end, first_sample + 200)]
            answer = client.request("POST", "/predict", json={"model": model, "inputs": xs.tolist()})
            ys = y_all[first_sample : first_sample + len(xs)]
            correct.extend(p["label"] == int(label) for p, label in zip(answer["predictions"], ys, strict=True))
    return {
        "mean_served_accuracy": float(np.mean(correct)),
        "retrains": len(served),
        "train_seconds": seconds,  # the retrains only: the first model (index 0) is taught, not counted
    }


def run_stream(stream: str, args, directory: Path) -> dict:
    first, segments = (pmnist_stream if stream == "pmnist" else mnist_stream)(
        Path(args.data), args.per_segment, args.initial
    )
    env = {
        "RETAIN_DEVICE": "cpu",
        "RETAIN_POLL_INTERVAL": "0.1",
        "RETAIN_FEEDBACK_CHECK_INTERVAL": "0.5",
        "RETAIN_FEEDBACK_FLUSH_INTERVAL": "0.2",
        "RETAIN_TORCH_THREADS": "1",
    }
    results: dict = {"policies": {}}
    with (
        LocalServer(directory / f"service-{stream}", extra_env=env) as server,
        RetainClient(server.url, api_key=server.api_key, timeout=120) as client,
    ):
        for policy, triggers in POLICIES.items():
            if args.policies and policy not in args.policies:
                continue
            model = f"{stream}-{policy}"
            teach(client, model, *first, directory, args.initial_epochs, form(args))
            client.set_feedback_policy(
                model,
                {
                    "log_rate": 1.0,
                    "min_labels": args.min_labels,
                    "accuracy_window": 100,
                    "triggers": triggers,
                    "update": {} if args.epochs is None else {"epochs": args.epochs},
                },
            )
            console.print(f"[bold]{stream}[/] {policy}: playing {sum(len(y) for _, y in segments)} samples")
            played = play(client, model, segments, args.rate, args.batch)
            curve = served_curve(played)
            made = trigger_updates(client, model, played)
            results["policies"][policy] = {
                "mean_served_accuracy": float(curve.mean()),
                "segment_accuracy": [
                    float(curve[i : i + args.per_segment].mean()) for i in range(0, len(curve), args.per_segment)
                ],
                "updates": len({row["version"] for row in played}) - 1,
                "train_seconds": train_seconds(client, model),
                "recovery": recoveries(curve, played, args.per_segment, args.window),
                "rolling": rolling(curve, args.window)[:: args.batch].round(4).tolist(),
                "update_positions": trigger_points(played),
                "trigger_made_tasks": len(made),
                "trigger_made": made,
            }
            console.print(
                f"  mean served accuracy {curve.mean():.3f}, {results['policies'][policy]['updates']} updates, "
                f"{results['policies'][policy]['train_seconds']:.1f} s training"
            )
        for policy in ("accuracy_drop", "drift"):
            loop = results["policies"].get(policy)
            if not loop or not loop["trigger_made"] or args.no_scratch:
                continue
            bound = scratch_bound(
                client,
                f"{stream}-{policy}",
                first,
                segments,
                loop["trigger_made"],
                directory,
                loop["trigger_made"][0]["epochs"],  # the updates' epochs rule
                args.initial_epochs,
                form(args),
            )
            results[f"scratch_at_{policy}_points"] = bound
            console.print(
                f"  scratch at the {policy} points: mean served accuracy {bound['mean_served_accuracy']:.3f}, "
                f"{bound['train_seconds']:.1f} s training"
            )
    results.update(per_segment=args.per_segment, segments=len(segments), initial_samples=len(first[1]))
    return results


def plot(results: dict, path: str, window: int, batch: int) -> None:
    """The rolling served accuracy of every policy as an SVG (no plotting library needed)."""
    colours = ["#667085", "#1f6feb", "#d1242f", "#1a7f37", "#8250df"]
    width, height, left, top, panel = 900, 0, 50, 24, 230
    parts = []
    for index, (stream, data) in enumerate(results["streams"].items()):
        y0 = top + index * (panel + 40)
        plot_w, plot_h = width - left - 220, panel
        total = data["per_segment"] * data["segments"]

        def x_of(position, total=total, plot_w=plot_w):
            return left + position / max(total, 1) * plot_w

        def y_of(accuracy, y0=y0, plot_h=plot_h):
            return y0 + (1 - accuracy) * plot_h

        parts.append(
            f'<text x="{left}" y="{y0 - 8}" font-size="13">{stream}: served accuracy, rolling over {window} '
            "(dotted: updates; grey: shifts)</text>"
        )
        for tick in (0, 0.5, 1):
            parts.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y_of(tick)}" y2="{y_of(tick)}" stroke="#e3e6ec"/>'
                f'<text x="{left - 6}" y="{y_of(tick) + 4}" font-size="11" text-anchor="end">{tick}</text>'
            )
        for boundary in range(data["per_segment"], total, data["per_segment"]):
            parts.append(
                f'<line x1="{x_of(boundary)}" x2="{x_of(boundary)}" y1="{y0}" y2="{y0 + plot_h}" stroke="#98a2b3"/>'
            )
        for number, (policy, run) in enumerate(data["policies"].items()):
            colour = colours[number % len(colours)]
            points = " ".join(f"{x_of(i * batch):.1f},{y_of(value):.1f}" for i, value in enumerate(run["rolling"]))
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
            for position in run["update_positions"]:
                parts.append(
                    f'<line x1="{x_of(position)}" x2="{x_of(position)}" y1="{y0}" y2="{y0 + plot_h}" '
                    f'stroke="{colour}" stroke-dasharray="2 3"/>'
                )
            legend_y = y0 + 14 + number * 18
            parts.append(
                f'<line x1="{left + plot_w + 16}" x2="{left + plot_w + 36}" y1="{legend_y}" y2="{legend_y}" '
                f'stroke="{colour}" stroke-width="2"/><text x="{left + plot_w + 42}" y="{legend_y + 4}" '
                f'font-size="12">{policy} ({run["mean_served_accuracy"]:.2f}, {run["updates"]} updates)</text>'
            )
        height = y0 + plot_h + 30
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>{"".join(parts)}</svg>'
    )
    Path(path).write_text(svg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", nargs="*", default=["pmnist", "mnist"], choices=["pmnist", "mnist"])
    parser.add_argument("--policies", nargs="*", choices=list(POLICIES), help="default: all")
    parser.add_argument("--per-segment", type=int, default=400, help="samples per task (pmnist) or new class (mnist)")
    parser.add_argument("--initial", type=int, default=1000, help="samples the first model is taught")
    parser.add_argument("--initial-epochs", type=int, help="epochs of the first model (default: the service's choice)")
    parser.add_argument("--strategy", default="ewc", help="the model's strategy, which its updates keep")
    parser.add_argument("--ewc-lambda", default="100", help="the model's EWC lambda (a number or auto)")
    parser.add_argument("--epochs", type=int, help="epochs of each update and scratch retrain (default: the service's)")
    parser.add_argument("--min-labels", type=int, default=150, help="labels a trigger-made update needs")
    parser.add_argument("--rate", type=float, default=40.0, help="samples per second")
    parser.add_argument("--batch", type=int, default=10, help="samples per request")
    parser.add_argument("--window", type=int, default=100, help="rolling window of the served accuracy")
    parser.add_argument("--no-scratch", action="store_true", help="skip the retrain-from-scratch bound")
    parser.add_argument("--data", default=str(SHARED_DATA), help="folder of mnist_5k.npz and pmnist-conflict/")
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()
    results: dict = {"streams": {}, "load_average": {"start": os.getloadavg()}}  # a shared machine's load
    with tempfile.TemporaryDirectory() as scratch:
        for stream in args.streams:
            results["streams"][stream] = run_stream(stream, args, Path(scratch))
            results["load_average"][f"after_{stream}"] = os.getloadavg()
    results["command"] = "python benchmarks/stream.py " + " ".join(sys.argv[1:])
    if args.plot:
        plot(results, args.plot, args.window, args.batch)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
