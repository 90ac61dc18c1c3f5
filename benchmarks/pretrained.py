"""Bring a pretrained model and keep teaching it: a ResNet-18 imported with base data, then new classes.

1. "Pretrain" torchvision's ResNet-18 (``weights=None``, nothing downloaded) on MNIST-5k digits
   0-4 (grayscale repeated to 3 channels, 28x28), export it as safetensors.
2. For every ``trainable`` (all, last:1, lora) x strategy (finetune, ewc, ewc_replay): import it
   exactly as POST /models does (``plan_import`` then ``ContinualLearner.import_model``), record the
   base data as task 0 (``adopt_base_task``: Fisher on the trainable parameters, replay memory), then
   teach digits 5-9 as ``--new-tasks`` tasks. Reported: task 0's test accuracy at import and after
   the last update (and their ratio), the all-class accuracy at the end, seconds per update,
   consolidation bytes per task against 2 x 4 bytes x trainable parameters.
3. ``joint``: the same pretrained import (trainable all) trained once on every task's data together,
   the all-class upper bound.
4. Import cost: seconds and peak RSS of ``plan_import`` + ``import_model`` of the ResNet-18 file in a
   fresh process (RSS before and after, and the weights' size).

    python benchmarks/pretrained.py --json benchmarks/results/pretrained_resnet18.json

Avalanche is not run here (it would need its own environment; see docs/import.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from common import SHARED_DATA, console
from safetensors.torch import save_file

from app.learning import ContinualLearner, TaskData, TrainConfig
from app.learning.imported import plan_import

SHAPE = (3, 28, 28)
RSS_PROBE = """
import sys, time
from pathlib import Path
import torch, torchvision
from app.learning import ContinualLearner
from app.learning.imported import plan_import

def high_water():  # VmHWM: the process's peak resident set so far, in bytes
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

before = high_water()
started = time.perf_counter()
plan = plan_import("torchvision:resnet18", (3, 28, 28), Path(sys.argv[1]), {"labels": [0, 1, 2, 3, 4]})
learner = ContinualLearner.import_model(plan, input_scale=1 / 255)
seconds = time.perf_counter() - started
print(seconds, before, high_water())
"""


def rgb(x: np.ndarray) -> np.ndarray:
    return np.repeat(x, 3, axis=1)


def load(path: Path, n_base: int, n_new: int, n_test: int, new_tasks: int, seed: int):
    with np.load(path, allow_pickle=False) as data:
        x, y = rgb(data["x"]), data["y"]
    rng = np.random.default_rng(seed)
    low, high = rng.permutation(np.flatnonzero(y < 5)), rng.permutation(np.flatnonzero(y >= 5))
    base = (TaskData(x[low[:n_base]], y[low[:n_base]]), TaskData(x[low[-n_test:]], y[low[-n_test:]]))
    groups = np.array_split(np.arange(5, 10), new_tasks)
    tasks = []
    for group in groups:
        train = [i for i in high[:n_new] if y[i] in group]
        test = [i for i in high[-n_test:] if y[i] in group]
        tasks.append((TaskData(x[train], y[train]), TaskData(x[test], y[test])))
    return base, tasks


def pretrain(base: TaskData, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.tensor(base.x).float() / 255, torch.tensor(base.y)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def run(path: Path, trainable: str, strategy: str, base, tasks, args) -> dict:
    options = {"labels": [0, 1, 2, 3, 4], "trainable": trainable, "lora_rank": args.lora_rank}
    options["memory_size"] = args.memory_size
    learner = ContinualLearner.import_model(plan_import("torchvision:resnet18", SHAPE, path, options), 1 / 255)
    learner.ewc.fisher = replace(
        learner.ewc.fisher, max_samples=args.fisher_samples, chunk_size=args.fisher_chunk, label_mode=args.fisher_labels
    )
    config = TrainConfig(epochs=args.epochs, lr=args.lr, min_steps=0, replay_min_steps=0, patience=0, seed=args.seed)
    at_import = learner.evaluate(base[1]).accuracy
    trainable_count = sum(p.numel() for p in learner.network.parameters() if p.requires_grad)
    started = time.perf_counter()
    learner.adopt_base_task("0", base[0], config)
    adopt_seconds = time.perf_counter() - started
    bytes_after = [learner.consolidation.nbytes()]
    seconds = []
    for k, (train, _) in enumerate(tasks, start=1):
        started = time.perf_counter()
        learner.learn_task(str(k), train, strategy=strategy, train_config=config, ewc_lambda=args.ewc_lambda)
        seconds.append(time.perf_counter() - started)
        bytes_after.append(learner.consolidation.nbytes())
    final = learner.evaluate(base[1]).accuracy
    union = TaskData(
        np.concatenate([base[1].x, *[t[1].x for t in tasks]]), np.concatenate([base[1].y, *[t[1].y for t in tasks]])
    )
    per_task = [learner.evaluate(test).accuracy for _, test in tasks]
    return {
        "trainable": trainable,
        "strategy": strategy,
        "trainable_parameters": trainable_count,
        "task0_at_import": at_import,
        "task0_final": final,
        "task0_kept": final / at_import if at_import else None,
        "new_tasks_final": per_task,
        "all_classes_final": learner.evaluate(union).accuracy,
        "adopt_seconds": adopt_seconds,
        "update_seconds": seconds,
        "consolidation_bytes_per_task": bytes_after[0],
        "consolidation_bytes_bound": 2 * 4 * trainable_count,
    }


def joint(path: Path, base, tasks, args) -> dict:
    options = {"labels": [0, 1, 2, 3, 4], "trainable": "all"}
    learner = ContinualLearner.import_model(plan_import("torchvision:resnet18", SHAPE, path, options), 1 / 255)
    learner.ewc.fisher = replace(learner.ewc.fisher, max_samples=args.fisher_samples, chunk_size=args.fisher_chunk)
    train = TaskData(
        np.concatenate([base[0].x, *[t[0].x for t in tasks]]), np.concatenate([base[0].y, *[t[0].y for t in tasks]])
    )
    union = TaskData(
        np.concatenate([base[1].x, *[t[1].x for t in tasks]]), np.concatenate([base[1].y, *[t[1].y for t in tasks]])
    )
    config = TrainConfig(epochs=args.epochs, lr=args.lr, min_steps=0, patience=0, seed=args.seed)
    started = time.perf_counter()
    learner.learn_task("joint", train, strategy="finetune", train_config=config)
    return {
        "strategy": "joint",
        "seconds": time.perf_counter() - started,
        "task0_final": learner.evaluate(base[1]).accuracy,
        "all_classes_final": learner.evaluate(union).accuracy,
    }


def import_cost(path: Path) -> dict:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(path)],
        capture_output=True,
        text=True,
        cwd=repo,
        env={"PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    seconds, before, after = (float(v) for v in done.stdout.split())
    size = path.stat().st_size
    return {
        "seconds": seconds,
        "weights_bytes": size,
        "peak_rss_before_import": int(before),  # torch, torchvision and retain imported
        "peak_rss_after_import": int(after),
        "peak_rss_added_over_weights": (after - before) / size,
    }


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, pretraining and update settings: this benchmark's, and its peer's (the Avalanche
    script reads them from here, so both always run the same split, model and updates)."""
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "mnist_5k.npz")
    parser.add_argument("--n-base", type=int, default=1500, help="training samples of digits 0-4")
    parser.add_argument("--n-new", type=int, default=1500, help="training samples of digits 5-9, all new tasks")
    parser.add_argument("--n-test", type=int, default=400, help="test samples per half")
    parser.add_argument("--new-tasks", type=int, default=1)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--ewc-lambda", type=float, default=100.0)
    parser.add_argument(
        "--lr",
        type=float,
        default=0.005,
        help="SGD's learning rate for the updates (retain's default 0.05 drove this BatchNorm network to one class)",
    )
    parser.add_argument("--memory-size", type=int, default=300)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--fisher-samples", type=int, default=200)
    parser.add_argument("--fisher-chunk", type=int, default=16)
    parser.add_argument("--fisher-labels", default="true", help="true | empirical (one pass instead of one per class)")
    parser.add_argument("--seed", type=int, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(parser)
    parser.add_argument("--trainables", default="all,last:1,lora")
    parser.add_argument("--strategies", default="finetune,ewc,ewc_replay")
    parser.add_argument("--no-joint", action="store_true", help="skip the joint bound (a second invocation's runs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    base, tasks = load(args.data, args.n_base, args.n_new, args.n_test, args.new_tasks, args.seed)
    started = time.perf_counter()
    model = pretrain(base[0], args.pretrain_epochs, args.seed)
    pretrain_seconds = time.perf_counter() - started
    results: dict = {"command": " ".join(sys.argv), "settings": {k: str(v) for k, v in vars(args).items()}}
    results["torch_threads"] = torch.get_num_threads()
    results["loadavg_at_start"] = os.getloadavg()  # the machine is shared: wall-clock seconds depend on it
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "resnet18.safetensors"
        save_file(model.state_dict(), path)
        results["pretrain_seconds"] = pretrain_seconds
        results["import"] = import_cost(path)
        console.print(f"import: {results['import']}")
        if not args.no_joint:
            results["joint"] = joint(path, base, tasks, args)
            console.print(results["joint"])
        results["runs"] = []
        for trainable in args.trainables.split(","):
            for strategy in args.strategies.split(","):
                entry = run(path, trainable, strategy, base, tasks, args)
                console.print(entry)
                results["runs"].append(entry)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
