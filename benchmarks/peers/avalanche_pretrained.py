"""Avalanche's peer of benchmarks/pretrained.py: the same pretrained ResNet-18 taught digits 5-9 by Avalanche.

The data split and the pretrained model are benchmarks/pretrained.py's own (its ``load`` and
``pretrain``, same seed and arguments): torchvision's ResNet-18 (``weights=None``) pretrained on
MNIST-5k digits 0-4 (3x28x28, scaled to [0, 1] as retain's import does). Then, for Avalanche's Naive,
EWC (λ ``--ewc-lambda``, retain's runs' 100) and Replay (``mem_size`` = ``--memory-size``, retain's
300), with retain's update settings (SGD, momentum 0.9, lr 0.005, 2 epochs, batch 64), and with
BatchNorm frozen (as retain's import does by default) and trained (Avalanche's way): experience 0 is
the base data (0 epochs: importances and buffer only, see avalanche_common.py), then digits 5-9 as
``--new-tasks`` experiences, the head an IncrementalClassifier grown from 5 to 10 outputs.

Reported per run: task 0's test accuracy at the start and after the last update (and their ratio),
each new task's, the all-class accuracy, seconds per update (``strategy.train`` of the experience,
its after-experience work included: EWC's importances, Replay's buffer update). ``--retain``
strategies (default ewc_replay) are run by benchmarks/pretrained.py's own ``run`` (trainable all) in
the same process on the same pretrained weights, so the seconds compare on the same machine load.
``--append`` adds this invocation's runs to an existing ``--json`` (the pretrained model is the same:
same seed and arguments), so the BatchNorm variants can run as two shorter invocations.

    bash benchmarks/peers/setup.sh avalanche
    nice -n 5 benchmarks/peers/.venvs/avalanche/bin/python benchmarks/peers/avalanche_pretrained.py \\
        --batchnorm frozen --json benchmarks/results/pretrained_avalanche.json
    nice -n 5 benchmarks/peers/.venvs/avalanche/bin/python benchmarks/peers/avalanche_pretrained.py \\
        --batchnorm train --retain '' --append --json benchmarks/results/pretrained_avalanche.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: pretrained, common
from avalanche_common import (
    STRATEGIES,
    FrozenBatchNorm,
    accuracy,
    add_replay_batch_argument,
    classification_dataset,
    incremental_head,
    machine,
    strategy,
    stream,
    timed_train,
)
from common import console
from pretrained import add_setup_arguments, load, pretrain
from pretrained import run as retain_run


def images(task) -> torch.Tensor:
    return torch.tensor(task.x).float() / 255


def run(name: str, batchnorm: str, pretrained: dict, base, tasks, args) -> dict:
    torch.manual_seed(args.seed)
    net = torchvision.models.resnet18(weights=None, num_classes=5)
    net.load_state_dict(pretrained)
    net.fc = incremental_head(net.fc)
    model = FrozenBatchNorm(net) if batchnorm == "frozen" else net
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    base_test = images(base[1])
    at_start = accuracy(model, base_test, base[1].y)

    sizes = [5] + [len(np.unique(t[0].y)) for t in tasks]
    all_x = torch.cat([base_test, *[images(t[1]) for t in tasks]])
    all_y = np.concatenate([base[1].y, *[t[1].y for t in tasks]])
    train_x = torch.cat([images(base[0]), *[images(t[0]) for t in tasks]])
    train_y = np.concatenate([base[0].y, *[t[0].y for t in tasks]])
    train, test = classification_dataset(train_x, train_y), classification_dataset(all_x, all_y)
    experiences = list(stream(train, test, sizes).train_stream)
    learner = strategy(name, model, optimizer, args, epochs=0)
    adopt_seconds = timed_train(learner, experiences[0])
    learner.train_epochs = args.epochs
    seconds = [timed_train(learner, experience) for experience in experiences[1:]]
    final = accuracy(model, base_test, base[1].y)
    return {
        "strategy": name,
        "batchnorm": batchnorm,
        "task0_at_start": at_start,
        "task0_final": final,
        "task0_kept": final / at_start if at_start else None,
        "new_tasks_final": [accuracy(model, images(t[1]), t[1].y) for t in tasks],
        "all_classes_final": accuracy(model, all_x, all_y),
        "head_outputs": net.fc.classifier.out_features,
        "adopt_seconds": adopt_seconds,
        "update_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(parser)  # benchmarks/pretrained.py's: the same split, model and update settings
    parser.add_argument("--batch-size", type=int, default=64, help="retain's TrainConfig default")
    parser.add_argument("--retain", default="ewc_replay", help="retain strategies to run here too ('' for none)")
    # Avalanche's runs
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    add_replay_batch_argument(parser)
    parser.add_argument("--batchnorm", default="frozen,train", help="frozen (retain's import default) | train")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--append", action="store_true", help="add the runs to an existing --json")
    args = parser.parse_args()

    invocation = {"command": " ".join(sys.argv), "machine": machine()}
    if args.append and args.json and args.json.exists():
        results = json.loads(args.json.read_text())
    else:
        results = {"settings": {k: str(v) for k, v in vars(args).items()}, "invocations": [], "runs": []}
        results["retain_runs"] = []
    results["invocations"].append(invocation)

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))

    torch.manual_seed(args.seed)  # as benchmarks/pretrained.py's main
    base, tasks = load(args.data, args.n_base, args.n_new, args.n_test, args.new_tasks, args.seed)
    started = time.perf_counter()
    model = pretrain(base[0], args.pretrain_epochs, args.seed)
    invocation["pretrain_seconds"] = time.perf_counter() - started
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    invocation["pretrained_checksum"] = float(sum(v.double().sum() for v in pretrained.values()))
    retain_strategies = [s for s in args.retain.split(",") if s]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "resnet18.safetensors"
        save_file(model.state_dict(), path)
        for index, batchnorm in enumerate(args.batchnorm.split(",")):
            for name in args.strategies.split(","):
                entry = run(name, batchnorm, pretrained, base, tasks, args)
                entry["loadavg_after"] = os.getloadavg()
                console.print(entry)
                results["runs"].append(entry)
                save()
            if index == 0:  # retain between the two BatchNorm variants, under the same load
                for name in retain_strategies:
                    entry = retain_run(path, "all", name, base, tasks, args)
                    entry["loadavg_after"] = os.getloadavg()
                    console.print(entry)
                    results["retain_runs"].append(entry)
                    save()
    best = max(results["runs"], key=lambda r: r["all_classes_final"])
    results["avalanche_best"] = {k: best[k] for k in ("strategy", "batchnorm", "task0_final", "all_classes_final")}
    results["avalanche_best"]["update_seconds"] = best["update_seconds"]
    invocation["loadavg_at_end"] = os.getloadavg()
    save()


if __name__ == "__main__":
    main()
