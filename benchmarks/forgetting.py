"""The forgetting benchmark: how much of every old task each method keeps, with numbers.

Learns a sequence of tasks in order with every method, from the same seed and on the same
samples, and records the accuracy matrix R[i][j] (test accuracy on task j after update i),
average accuracy, BWT, and task 0's accuracy right after it was learnt and at the end. Tasks:

* ``--tasks DIR``          ``task0.npz … task{N-1}.npz`` (default: pmnist-conflict)
* ``--split-mnist [NPZ]``  split MNIST from one labelled npz (default ``mnist_5k.npz``): task k
                           holds the digits 2k and 2k+1 (0/1, 2/3, 4/5, 6/7, 8/9); each task's
                           samples are split, seeded and stratified, 80/20 into train and test
                           (``--test-fraction``). Task-incremental: every method is evaluated
                           task-aware.
* ``--scenario class``     class-incremental split MNIST (van de Ven et al. 2022): the split tasks above,
                           evaluated over the whole vocabulary (no task given at test time); each
                           update is also judged as the service judges it (forgetting gate at
                           ``--max-forgetting``, the new task's learning check), and
                           ``all_test_accuracy`` is the accuracy on every task's test samples together.
* ``--digits-tasks N``     N small tasks from scikit-learn's bundled 8x8 digits (~1,290 train
                           samples each): task 0 as is, task k>0 with its pixels and labels
                           permuted; same 20% test split as ``--split-mnist``.

Methods:

* ``finetune``     plain training on each task (the baseline that forgets)
* ``ewc_separate`` EWC, one Fisher + anchor per past task (Kirkpatrick et al. 2017)
* ``ewc_online``   online EWC, one running Fisher + anchor (Schwarz et al. 2018)
* ``replay``       experience replay: a bounded, per-task-balanced memory of training samples
                   (``--memory-size``) filling half of every batch of later updates
* ``ewc_replay``   EWC and replay together (λ as for EWC; with ``auto``, ``--replay-lambda`` once
                   the memory holds samples)
* ``auto``         the service's default: ``ewc`` for a task of known labels, ``ewc_replay`` for one that
                   brings new labels, every task's samples kept in the memory from the first on
* ``ewc``          ``ewc_separate`` under the service's name
* ``joint``        training from fresh weights on every task seen so far (the upper bound)
* ``ccll``         frozen base + per-task calibration modules and classifier (Singh et al. 2020);
                   cnn / resnet18 only; always evaluated task-aware (it predicts per task). The
                   parameters it adds per task are reported, absolute and as a % of the base.

Evaluation is *task-aware* (``evaluate(test, task_key=...)``: logits restricted to that
task's labels, or CCLL's own head) for ccll always, and for every method with ``--task-aware``
or on a split benchmark; otherwise the EWC family predicts over the whole label vocabulary.

λ is either a list (every EWC mode is run with each value; the best by final mean
*validation* accuracy is reported, the rest under ``"sweep"``) or ``auto`` (the learner's own
per-update search, as the service runs it). Validation data is a stratified, seeded 10% of
each task's train split, held out for every method alike and scored as test data is
(task-aware or not); test data is only ever reported. (With ``auto`` the learner scores its
candidates itself: over the whole vocabulary for the EWC family.)

    python benchmarks/forgetting.py --tasks ../shared/data/pmnist-conflict --n-tasks 5 \\
        --lambda auto --json benchmarks/results/pmnist_5tasks_auto.json
    python benchmarks/forgetting.py --split-mnist --arch cnn --methods finetune,ewc_separate,ccll \\
        --optimizer adam --epochs 4 --lambda 1000,10000,100000 --json benchmarks/results/split_mnist_ccll.json
"""

from __future__ import annotations

import argparse
import time
from statistics import mean

import numpy as np
from baselines import Joint
from common import (
    SHARED_DATA,
    console,
    input_scale_for,
    load_digits_tasks,
    load_split_tasks,
    load_tasks,
    parse_floats,
    progress_bar,
    write_json,
)

from app.learning import (
    ARCHITECTURES,
    ContinualLearner,
    EWCConfig,
    FisherConfig,
    TaskData,
    TrainConfig,
    accuracy_matrix_metrics,
    strategy_class,
)
from app.learning.data import plain_labels, unique_in_order
from app.learning.state import to_safetensors_bytes
from app.learning.strategies.ewc import DEFAULT_MEMORY_SIZE
from app.updates.gate import forgetting_gate, learning_check

EWC_METHODS = {"ewc_separate": "separate", "ewc_online": "online", "ewc": "separate"}
REPLAY_METHODS = ("replay", "ewc_replay", "auto")  # the methods that keep a rehearsal memory
LAMBDA_METHODS = (*EWC_METHODS, "ewc_replay", "auto")  # the methods λ weighs (swept, or searched with auto)
ALL_METHODS = ("finetune", "ewc_separate", "ewc_online", "ewc", "replay", "ewc_replay", "auto", "joint", "ccll")
CLASS_METHODS = ("auto", "ewc", "replay", "ewc_replay", "finetune", "joint")  # --scenario class's default
DEFAULT_METHODS = ("finetune", "ewc_separate", "ewc_online", "joint", "ccll")  # the replay methods when asked
CONV_ARCHITECTURES = strategy_class("ccll").architectures
SPLIT_MNIST = SHARED_DATA / "mnist_5k.npz"
# Conventional learning rates when the optimizer is not the library default's (whose lr is TrainConfig's).
CONVENTIONAL_LR = {"sgd": 0.05, "adam": 1e-3}


def parse_args() -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", help=f"directory of task<K>.npz (default: {SHARED_DATA / 'pmnist-conflict'})")
    parser.add_argument(
        "--split-mnist",
        nargs="?",
        const=str(SPLIT_MNIST),
        metavar="NPZ",
        help=f"split benchmark from one npz with x, y (default file: {SPLIT_MNIST}); evaluated task-aware",
    )
    parser.add_argument(
        "--digits-tasks",
        type=int,
        metavar="N",
        help="N small tasks from scikit-learn's 8x8 digits, task k>0 permuting pixels and labels",
    )
    parser.add_argument(
        "--scenario",
        choices=("task", "class"),
        help="class: class-incremental split MNIST (--split-mnist's tasks, evaluated over every label; "
        f"methods {', '.join(CLASS_METHODS)}, λ auto, unless given)",
    )
    parser.add_argument(
        "--max-forgetting",
        type=float,
        default=0.1,
        help="--scenario class: the forgetting gate each update is judged by (the service's default 0.1)",
    )
    parser.add_argument("--classes-per-task", type=int, default=2, help="with --split-mnist (default 2)")
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="with --split-mnist: share of each task's samples held out for test (default 0.2)",
    )
    parser.add_argument(
        "--task-aware",
        action="store_true",
        help="evaluate every method task-aware (always on with --split-mnist; ccll always is)",
    )
    parser.add_argument("--n-tasks", type=int, default=None, help="first N tasks (default: all)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--methods",
        help=f"comma-separated subset of {', '.join(ALL_METHODS)} (default: all that apply to the architecture)",
    )
    parser.add_argument("--arch", choices=ARCHITECTURES, default="mlp")
    parser.add_argument("--hidden", default="100,100", help="mlp hidden sizes (default 100,100)")
    parser.add_argument("--alpha", type=int, default=1, help="ccll: channels per group of the spatial calibration")
    parser.add_argument("--beta", type=int, default=1, help="ccll: channels per group of the channel-wise calibration")
    parser.add_argument(
        "--lambda",
        dest="ewc_lambda",
        help="'auto' or comma-separated values to sweep (default 1,10,100,1000,10000; --scenario class: auto)",
    )
    parser.add_argument(
        "--lambda-candidates",
        help="with --lambda auto: the candidates searched "
        f"(default: the library's, {','.join(f'{c:g}' for c in EWCConfig().lambda_candidates)})",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument(
        "--min-steps",
        type=int,
        default=defaults.min_steps,
        help=f"least optimizer steps per update, in whole epochs (default {defaults.min_steps}; 0: off)",
    )
    parser.add_argument(
        "--replay-min-steps",
        type=int,
        default=defaults.replay_min_steps,
        help=f"the same floor for a replaying update (default {defaults.replay_min_steps})",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help=f"early stopping above the floor: epochs without a better validation score before it "
        f"stops (default {defaults.patience}; 0: train the floor exactly)",
    )
    parser.add_argument(
        "--max-epochs-factor",
        type=int,
        default=defaults.max_epochs_factor,
        help=f"early stopping's cap, in floors (default {defaults.max_epochs_factor})",
    )
    parser.add_argument(
        "--replay-lambda",
        type=float,
        default=EWCConfig().replay_lambda,
        help=f"ewc_replay with --lambda auto: λ once the memory holds samples, no search "
        f"(default {EWCConfig().replay_lambda:g})",
    )
    parser.add_argument(
        "--max-old-task-drop",
        type=float,
        default=EWCConfig().max_old_task_drop,
        help="λ search: candidates dropping an old task's validation accuracy by more rank last "
        f"(default {EWCConfig().max_old_task_drop}; 1 = plain mean)",
    )
    parser.add_argument(
        "--memory-size",
        type=int,
        default=DEFAULT_MEMORY_SIZE,
        help=f"replay methods: samples kept in all (default {DEFAULT_MEMORY_SIZE})",
    )
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=defaults.optimizer)
    parser.add_argument("--lr", type=float, help="default: the library's for its optimizer, else sgd 0.05 / adam 1e-3")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--fisher", choices=("true", "empirical"), default=FisherConfig().label_mode, help="Fisher label mode"
    )
    parser.add_argument(
        "--fisher-samples",
        type=int,
        default=FisherConfig().max_samples,
        help="most samples of a task its Fisher is estimated on",
    )
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--device", default="cpu", help="cpu (default, for comparable timings), cuda or auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.scenario == "class":
        args.split_mnist = args.split_mnist or str(SPLIT_MNIST)
        args.methods = args.methods or ",".join(CLASS_METHODS)
    if args.ewc_lambda is None:  # the service's default in the class scenario, a sweep otherwise
        args.ewc_lambda = "auto" if args.scenario == "class" else "1,10,100,1000,10000"

    if sum(bool(source) for source in (args.tasks, args.split_mnist, args.digits_tasks)) > 1:
        parser.error("give one of --tasks, --split-mnist, --digits-tasks")
    if args.digits_tasks is not None and args.digits_tasks < 1:
        parser.error("--digits-tasks needs at least one task")
    if not args.split_mnist and not args.digits_tasks:
        args.tasks = args.tasks or str(SHARED_DATA / "pmnist-conflict")
    args.task_aware = args.task_aware or (bool(args.split_mnist) and args.scenario != "class")
    available = [m for m in DEFAULT_METHODS if m != "ccll" or args.arch in CONV_ARCHITECTURES]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else available
    if not args.methods:
        parser.error("--methods names no method")
    unknown = [m for m in args.methods if m not in ALL_METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    if "ccll" in args.methods and args.arch not in CONV_ARCHITECTURES:
        parser.error(f"ccll calibrates conv blocks and needs --arch cnn or resnet18, not --arch {args.arch}")
    args.auto = args.ewc_lambda.strip() == "auto"
    args.lambdas = None if args.auto else parse_floats(args.ewc_lambda)
    if args.lambda_candidates and not args.auto:
        parser.error("--lambda-candidates only applies with --lambda auto")
    args.lambda_candidates = parse_floats(args.lambda_candidates) if args.lambda_candidates else None
    if args.lr is None:
        args.lr = defaults.lr if args.optimizer == defaults.optimizer else CONVENTIONAL_LR[args.optimizer]
    args.hidden = [int(h) for h in args.hidden.split(",")]
    return args


def run_method(method: str, ewc_lambda, tasks, args, bar, bar_task) -> dict:
    """Learn every task in order with one method (and one λ); return its matrix and metrics."""
    ccll = method == "ccll"
    options = {"alpha": args.alpha, "beta": args.beta} if ccll else None
    if args.arch == "mlp":
        options = {"hidden": args.hidden}
    if method in REPLAY_METHODS:
        options = {**(options or {}), "memory_size": args.memory_size}
    task_aware = ccll or args.task_aware
    ewc = EWCConfig(
        consolidation=EWC_METHODS.get(method, "separate"),
        fisher=FisherConfig(label_mode=args.fisher, max_samples=args.fisher_samples),
        **({"lambda_candidates": tuple(args.lambda_candidates)} if args.lambda_candidates else {}),
        max_old_task_drop=args.max_old_task_drop,
        replay_lambda=args.replay_lambda,
    )
    learner = ContinualLearner.create(
        args.arch,
        tasks[0].input_shape,
        family="ccll" if ccll else "ewc",
        architecture_options=options,
        ewc=ewc,
        input_scale=input_scale_for(tasks[0].train),
        seed=args.seed,
    )
    config = TrainConfig(
        optimizer=args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        min_steps=args.min_steps,
        replay_min_steps=args.replay_min_steps,
        patience=args.patience,
        max_epochs_factor=args.max_epochs_factor,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
    )
    # joint keeps every task's data: one instance for all of this learner's tasks
    strategy = Joint() if method == "joint" else "ewc" if method in EWC_METHODS else method
    judged = []  # --scenario class: each update judged as the service judges it
    label = method if ewc_lambda is None else f"{method} λ={ewc_lambda}"
    matrix, updates = [], []
    for i, task in enumerate(tasks):
        bar.update(bar_task, status=f"{label}: task {i + 1}/{len(tasks)}")
        result = learner.learn_task(
            task.key,
            task.train,
            strategy=strategy,
            train_config=config,
            validation={t.key: t.validation for t in tasks[: i + 1]},
            ewc_lambda=ewc_lambda if method in LAMBDA_METHODS else None,
        )
        if args.scenario == "class":
            not_learnt = learning_check(
                task.key,
                result.validation_after.get(task.key),
                plain_labels(task.validation.y),
                plain_labels(task.train.y),
                result.train_config,
            )
            gate = forgetting_gate(result, args.max_forgetting, not_learnt)
            judged.append(
                {
                    "promoted": gate.passed,
                    "tripped_by": gate.tripped_by,
                    "not_learnt": not_learnt["reason"] if not_learnt else None,
                    "strategy_choice": result.strategy_choice,
                }
            )
        # CCLL needs the task at prediction time; the others predict over the whole vocabulary
        # unless the benchmark is task-aware (a split benchmark, or --task-aware).
        matrix.append(
            [
                learner.evaluate(t.test, task_key=t.key if task_aware else None).accuracy if j <= i else None
                for j, t in enumerate(tasks)
            ]
        )
        updates.append(
            {
                "task": task.key,
                "ewc_lambda": result.ewc_lambda,
                "train_seconds": result.train_seconds,
                "search_seconds": result.search_seconds,
                "lambda_search": result.lambda_search,
                "validation_after": result.validation_after,
                "parameters_added": result.parameters_added,
                "epochs_trained": result.train_config["epochs_trained"],
                "budget": result.train_config["budget"],
                "capacity_warning": result.capacity_warning,
            }
        )
        bar.advance(bar_task)
    # scored as test is: what a λ sweep chooses by
    validation_accuracy = [
        learner.evaluate(t.validation, task_key=t.key if task_aware else None).accuracy for t in tasks
    ]
    metrics = accuracy_matrix_metrics(matrix)
    chosen = [u["ewc_lambda"] for u in updates if u["ewc_lambda"] is not None]
    outcome = {
        "lambda": (chosen[-1] if chosen else None) if ewc_lambda == "auto" else ewc_lambda,
        "matrix": matrix,
        "avg_acc": metrics["average_accuracy"],
        "bwt": metrics["bwt"],
        "forgetting": metrics["forgetting"],
        "task0_initial": matrix[0][0],
        "task0_final": matrix[-1][0],
        "task0_kept": matrix[-1][0] / matrix[0][0] if matrix[0][0] else None,
        "validation_avg_acc": mean(validation_accuracy),
        "evaluation": "task-aware" if task_aware else "vocabulary",
        "train_seconds": sum(u["train_seconds"] for u in updates),
        "lambda_per_update": [u["ewc_lambda"] for u in updates] if method in LAMBDA_METHODS else None,
        "state_bytes": state_bytes(learner),
        "updates": updates,
        "last_update_cost": None,
        "fisher_recipe": ewc.recipe() if not ccll else None,
        "train_config": config.as_dict(),
    }
    outcome["last_update_cost"] = last_update_cost(outcome)
    if args.scenario == "class":
        every = TaskData(
            np.concatenate([np.asarray(t.test.x) for t in tasks]), np.concatenate([np.asarray(t.test.y) for t in tasks])
        )
        outcome["all_test_accuracy"] = learner.evaluate(every).accuracy
        outcome["gate"] = judged
        outcome["every_update_promoted"] = all(entry["promoted"] for entry in judged)
    if ccll:
        outcome["parameters"] = ccll_parameters(learner.parameter_counts())
        outcome["architecture_options"] = options
    return outcome


def state_bytes(learner: ContinualLearner) -> dict:
    """What the last version stores: its two safetensors payloads, and the rehearsal memory's share."""
    memory = learner.memory.tensors() if learner.memory is not None else {}
    return {
        "weights": len(to_safetensors_bytes(*learner.export_weights())),
        "consolidation": len(to_safetensors_bytes(*learner.export_consolidation())),
        "memory_tensors": sum(t.numel() * t.element_size() for t in memory.values()),
        "memory_samples": len(learner.memory) if learner.memory is not None else 0,
    }


def ccll_parameters(counts: dict) -> dict:
    """What CCLL pays for not forgetting: its calibration modules + classifier per task, next to the base.

    ``counts`` is ``ContinualLearner.parameter_counts()``: the shared conv base, each task's own
    parameters (what ``learn_task`` reports as ``parameters_added``) and the total.
    """
    base, per_task = counts["base"], counts["per_task"]
    added = list(per_task.values())
    return {
        "base": base,
        "per_task": {key: {"added": n, "percent_of_base": 100.0 * n / base} for key, n in per_task.items()},
        "added_per_task_mean": mean(added),
        "percent_of_base_per_task_mean": 100.0 * mean(added) / base,
        "total": counts["total"],
    }


def search_overhead(results: dict) -> dict | None:
    """What ``--lambda auto`` costs over a plain update of the same task (one update at the budget's floor).

    The cost is the search (every candidate's steps) plus its winner's early stopping. In training steps
    (exact: over the floor's steps) and in seconds (over the floor's steps at fine-tuning's measured
    seconds per step on the same task; noisy on a shared machine).
    """
    plain = results.get("finetune")
    overhead = {}
    for method in LAMBDA_METHODS:
        if method not in results:
            continue
        searched = [u for u in results[method]["updates"] if u["lambda_search"]]
        if not searched:
            continue
        floor_steps = {u["task"]: max(e["steps"] for e in u["lambda_search"]) for u in searched}
        step_ratios = [u["budget"]["steps_run"] / floor_steps[u["task"]] for u in searched]
        overhead[method] = {
            "steps_ratio_per_update": step_ratios,
            "steps_ratio_mean": mean(step_ratios),
            "steps_ratio_max": max(step_ratios),
        }
        if plain is not None:
            by_task = {u["task"]: u for u in plain["updates"]}
            plain_seconds = {
                u["task"]: by_task[u["task"]]["train_seconds"]
                / by_task[u["task"]]["budget"]["steps_run"]
                * floor_steps[u["task"]]
                for u in searched
            }
            seconds = [u["search_seconds"] / plain_seconds[u["task"]] for u in searched]
            overhead[method] |= {
                "seconds_ratio_per_update": seconds,
                "seconds_ratio_mean": mean(seconds),
                "search_seconds_total": sum(u["search_seconds"] for u in searched),
                "plain_seconds_total": sum(plain_seconds.values()),
            }
    return overhead or None


def last_update_cost(outcome: dict) -> dict:
    """What the last update trained: seconds, steps and per-sample gradients (steps x batch: a replay
    batch holds the same number of samples, half of them replayed)."""
    budget = outcome["updates"][-1]["budget"]
    return {
        "seconds": outcome["updates"][-1]["train_seconds"],
        "steps": budget["steps_run"],
        "gradients": budget["steps_run"] * budget["samples_per_step"],
        "epochs_trained": budget["epochs_trained"],
        "epochs_run": budget["epochs_run"],
        "floor_epochs": budget["floor_epochs"],
    }


def print_table(results: dict, args) -> None:
    from rich.table import Table

    table = Table(
        title=f"{len(next(iter(results.values()))['matrix'])} tasks, {args.arch}, {args.optimizer} "
        f"lr={args.lr}, {args.epochs} epochs, λ={args.ewc_lambda}" + (", task-aware" if args.task_aware else "")
    )
    columns = ["method", "λ", "avg acc", "BWT", "task 0 initial → final", "kept", "train s"]
    if args.scenario == "class":
        columns += ["all digits", "promoted"]
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, r in results.items():
        lam = r["lambda"]
        lam_text = (
            "auto: " + ",".join(f"{v:g}" for v in r["lambda_per_update"][1:] if v is not None)
            if args.auto and lam is not None
            else ("–" if lam is None else f"{lam:g}")
        )
        table.add_row(
            method,
            lam_text,
            f"{r['avg_acc']:.3f}",
            "–" if r["bwt"] is None else f"{r['bwt']:+.3f}",
            f"{r['task0_initial']:.3f} → {r['task0_final']:.3f}",
            "–" if r["task0_kept"] is None else f"{r['task0_kept']:.3f}",
            f"{r['train_seconds']:.1f}",
            *(
                [f"{r['all_test_accuracy']:.3f}", f"{sum(g['promoted'] for g in r['gate'])}/{len(r['gate'])}"]
                if args.scenario == "class"
                else []
            ),
        )
    console.print(table)


def print_matrices(results: dict, tasks) -> None:
    """R[i][j] of every method, and what CCLL adds per task."""
    width = max(6, *(len(t.key) for t in tasks)) + 1
    for method, r in results.items():
        console.print(
            f"{method} ({r['evaluation']}): R[i][j] = test accuracy on task j (columns) after learning task i (rows)",
            markup=False,
        )
        console.print(" " * (width + 6) + "".join(f"{t.key:>{width}}" for t in tasks), highlight=False)
        for task, row in zip(tasks, r["matrix"], strict=True):
            cells = "".join(f"{'–' if a is None else f'{a:.3f}':>{width}}" for a in row)
            console.print(f"after {task.key:<{width}}{cells}", highlight=False)
    for method, r in results.items():
        if "parameters" in r:
            p = r["parameters"]
            per_task = ", ".join(
                f"{key} {v['added']:,} ({v['percent_of_base']:.2f}%)" for key, v in p["per_task"].items()
            )
            console.print(
                f"{method} parameters: shared base {p['base']:,}; "
                f"per task (calibration modules + classifier): {per_task}",
                highlight=False,
                markup=False,
            )


def main() -> None:
    args = parse_args()
    if args.digits_tasks:
        tasks = load_digits_tasks(args.digits_tasks, args.test_fraction, args.validation_fraction, args.seed)
    elif args.split_mnist:
        tasks = load_split_tasks(
            args.split_mnist,
            args.classes_per_task,
            args.n_tasks,
            args.test_fraction,
            args.validation_fraction,
            args.seed,
        )
    else:
        tasks = load_tasks(args.tasks, args.n_tasks, args.validation_fraction, args.seed)
    source = "scikit-learn digits" if args.digits_tasks else args.split_mnist or args.tasks
    console.print(
        f"{len(tasks)} tasks from {source}, input shape {tasks[0].input_shape}, "
        f"{len(tasks[0].train)} train / {len(tasks[0].validation)} validation / "
        f"{len(tasks[0].test)} test per task" + (", task-aware evaluation" if args.task_aware else "")
    )
    runs = [
        (m, lam)
        for m in args.methods
        for lam in (["auto"] if args.auto else args.lambdas if m in LAMBDA_METHODS else [None])
    ]
    results, sweep = {}, {}
    started = time.perf_counter()
    with progress_bar() as bar:
        bar_task = bar.add_task("forgetting", total=len(runs) * len(tasks), status="")
        for method, ewc_lambda in runs:
            outcome = run_method(method, ewc_lambda, tasks, args, bar, bar_task)
            if method in LAMBDA_METHODS and not args.auto:
                sweep.setdefault(method, []).append(
                    {
                        k: outcome[k]
                        for k in (
                            "lambda",
                            "avg_acc",
                            "bwt",
                            "task0_final",
                            "task0_kept",
                            "validation_avg_acc",
                            "train_seconds",
                        )
                    }
                )
                best = results.get(method)
                # Chosen on validation, never test: the sweep must not be an oracle.
                if best is None or outcome["validation_avg_acc"] > best["validation_avg_acc"]:
                    results[method] = outcome
            else:
                results[method] = outcome
    results = {m: results[m] for m in args.methods}  # the order asked for
    print_table(results, args)
    print_matrices(results, tasks)
    for method, r in results.items():
        b, last = r["state_bytes"], r["last_update_cost"]
        warnings = sum(u["capacity_warning"] is not None for u in r["updates"])
        console.print(
            f"{method}: last update trained {last['seconds']:.1f} s ({last['epochs_trained']} epochs kept of "
            f"{last['epochs_run']} run, floor {last['floor_epochs']}; {last['steps']} steps, "
            f"{last['gradients']:,} per-sample gradients); stored state {b['weights']:,} B weights + "
            f"{b['consolidation']:,} B consolidation"
            + (
                f", of which {b['memory_tensors']:,} B are {b['memory_samples']} replay samples"
                if b["memory_samples"]
                else ""
            )
            + (f"; capacity warnings on {warnings} update(s)" if warnings else ""),
            highlight=False,
        )
    overhead = search_overhead(results) if args.auto else None
    if overhead:
        for method, o in overhead.items():
            line = (
                f"λ search + budget cost ({method}): {o['steps_ratio_mean']:.2f}× (at most "
                f"{o['steps_ratio_max']:.2f}×) a plain update's training steps"
            )
            if "seconds_ratio_mean" in o:
                line += (
                    f"; {o['search_seconds_total']:.1f} s vs {o['plain_seconds_total']:.1f} s for plain updates "
                    f"of the same tasks at fine-tuning's speed "
                    f"({o['search_seconds_total'] / o['plain_seconds_total']:.2f}×)"
                )
            console.print(line)
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "digits" if args.digits_tasks else "split" if args.split_mnist else "task-files",
                "scenario": args.scenario or ("task" if args.task_aware else "domain"),
                "tasks": [
                    {
                        "key": t.key,
                        "labels": unique_in_order(t.train.y),
                        "n_train": len(t.train),
                        "n_validation": len(t.validation),
                        "n_test": len(t.test),
                    }
                    for t in tasks
                ],
                "methods": results,
                "sweep": sweep,
                "lambda_search_cost": overhead,
                "settings": {k: v for k, v in vars(args).items() if k not in ("lambdas",)},
                "n_tasks": len(tasks),
                "input_shape": list(tasks[0].input_shape),
                "wall_seconds": time.perf_counter() - started,
            },
        )


if __name__ == "__main__":
    main()
