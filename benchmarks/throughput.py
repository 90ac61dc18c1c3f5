"""What EWC costs: training-step time, Fisher estimation speed, and consolidation memory.

(a) Time per training step with the EWC pull vs plain fine-tuning, MLP and CNN, through the
    learner's own ``Trainer`` and ``Consolidation`` (SGD: proximal step after the optimizer;
    Adam: fused gradient added to ``.grad``). Target: ratio ≤ 1.10. The two are timed in
    alternating blocks and the median block is kept, so load from other processes hits both
    alike.
(b) Fisher samples/s: the learner's per-sample estimator (vmap(grad), with the exact
    factored shortcut for fully connected layers), the same with vmap for every layer, a
    per-sample Python loop (the reference both must equal; target ≥ 5×), and the biased
    batch-mean shortcut, with its bias (its total Fisher mass over the per-sample estimator's).
(c) Bytes of the consolidation payload (safetensors, as the service stores it) after 1…N
    tasks, ``separate`` (grows with tasks) vs ``online`` (constant).
(d) What λ = auto costs: the second update of pmnist-conflict (MLP, library defaults) with
    the λ search vs the same update at a fixed λ and as plain fine-tuning, alternated and
    repeated (median kept). The service allows the search at most 3× a plain update.

    python benchmarks/throughput.py --json benchmarks/results/throughput.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from baselines import fisher_batch_mean_shortcut, fisher_per_sample_loop
from common import SHARED_DATA, console, input_scale_for, load_tasks, progress_bar, timed, write_json

from app.learning import ContinualLearner, EWCConfig, FisherConfig, TrainConfig
from app.learning.ewc_penalty import Consolidation
from app.learning.fisher import diagonal_fisher
from app.learning.models import build_model
from app.learning.state import to_safetensors_bytes
from app.learning.training import Trainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--tasks", default=str(SHARED_DATA / "pmnist-conflict"), help="directory of task<K>.npz")
    parser.add_argument("--blocks", type=int, default=9, help="alternating timing blocks per model (median kept)")
    parser.add_argument("--block-seconds", type=float, default=1.0, help="minimum length of a timing block")
    parser.add_argument("--repeats", type=int, default=3, help="Fisher timings per estimator (fastest kept)")
    parser.add_argument("--fisher-samples", type=int, default=256, help="samples per Fisher estimate (mlp)")
    parser.add_argument("--max-tasks", type=int, default=10, help="consolidation state measured after 1..N tasks")
    parser.add_argument("--search-repeats", type=int, default=3, help="timings of each kind of update in (d)")
    parser.add_argument(
        "--search-train-samples",
        type=int,
        default=None,
        help="train samples per task in (d) (default: all; fewer for a quick check)",
    )
    return parser.parse_args()


def _inputs(task) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(task.train.x, dtype=torch.float32) * input_scale_for(task.train)
    return x, torch.as_tensor(task.train.y, dtype=torch.long)


def _consolidation_for(model: torch.nn.Module, n_tasks: int, mode: str = "separate") -> Consolidation:
    """A consolidation of ``n_tasks`` earlier tasks (positive Fisher, perturbed anchors) for timing only."""
    consolidation = Consolidation(mode)
    generator = torch.Generator().manual_seed(0)
    for t in range(n_tasks):
        fisher = {n: torch.rand(p.shape, generator=generator) * 1e-3 for n, p in model.named_parameters()}
        anchor = {n: p.detach() + 0.01 * torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}
        consolidation.consolidate(f"t{t}", fisher, anchor)
    return consolidation


def step_times(arch: str, x: torch.Tensor, y: torch.Tensor, optimizer: str, args, bar, bar_task) -> dict:
    """Seconds per step, fine-tune vs EWC, timed in alternating blocks on identical batches.

    Each block runs for at least ``--block-seconds`` (so a 1 ms MLP step is not timed over a
    few ms of a shared machine's noise); the ratio is the median of adjacent blocks' ratios.
    """
    config = TrainConfig(
        optimizer=optimizer,
        lr=TrainConfig().lr if optimizer == "sgd" else 1e-3,
        epochs=1_000_000,
        batch_size=64,
        device="cpu",
    )
    model = build_model(arch, tuple(x.shape[1:]), 10)
    consolidation = _consolidation_for(model, n_tasks=4)
    ewc_lambda = 100.0
    parameters = list(model.parameters())
    plain = Trainer(model, parameters, x, y, config)
    if optimizer == "sgd":  # exactly how the learner wires EWC into each optimizer
        ewc = Trainer(
            model, parameters, x, y, config, after_step=consolidation.proximal_step(model, ewc_lambda, config.lr)
        )
    else:
        ewc = Trainer(
            model, parameters, x, y, config, add_penalty_gradient=consolidation.penalty_gradient(model, ewc_lambda)
        )
    plain.run(3)  # warm-up (allocator, kernels, the proximal step's cached coefficients)
    ewc.run(3)
    started = time.perf_counter()
    plain.run(10)  # sizes the blocks from warm steps
    steps = max(3, round(args.block_seconds / ((time.perf_counter() - started) / 10)))
    blocks: dict[str, list[float]] = {"finetune": [], "ewc": []}
    for _ in range(args.blocks):
        for name, trainer in (("finetune", plain), ("ewc", ewc)):
            started = time.perf_counter()
            trainer.run(steps)
            blocks[name].append((time.perf_counter() - started) / steps)
        bar.advance(bar_task)
    ratios = [e / f for e, f in zip(blocks["ewc"], blocks["finetune"], strict=True)]
    return {
        "finetune_ms": 1e3 * statistics.median(blocks["finetune"]),
        "ewc_ms": 1e3 * statistics.median(blocks["ewc"]),
        "ratio": statistics.median(ratios),
        "steps_per_block": steps,
        "blocks": args.blocks,
        "parameters": sum(p.numel() for p in parameters),
        "batch_size": config.batch_size,
    }


def fisher_speeds(arch: str, x: torch.Tensor, y: torch.Tensor, n: int, label_mode: str, repeats: int) -> dict:
    """Samples/s of each estimator on the same n samples; the loop is also the correctness reference.

    The estimators are timed in turn, ``repeats`` times, and each keeps its fastest run: on a
    shared machine the minimum is the least disturbed measurement.
    """
    model = build_model(arch, tuple(x.shape[1:]), 10)
    x, y = x[:n], y[:n]
    diagonal_fisher(model, x[:8], y[:8], label_mode=label_mode)  # warm-up
    chunk = FisherConfig().chunk_size
    estimators = {
        "vmap": lambda: diagonal_fisher(model, x, y, label_mode=label_mode, chunk_size=chunk),
        "vmap_only": lambda: diagonal_fisher(model, x, y, label_mode=label_mode, chunk_size=chunk, traced=False),
        "loop": lambda: fisher_per_sample_loop(model, x, y, label_mode=label_mode),
        "shortcut": lambda: fisher_batch_mean_shortcut(model, x, y, batch_size=64),
    }
    seconds = {name: float("inf") for name in estimators}
    fishers = {}
    for _ in range(repeats):
        for name, estimate in estimators.items():
            elapsed, fishers[name] = timed(estimate)
            seconds[name] = min(seconds[name], elapsed)
    max_error = max(
        float((fishers[estimator][k] - fishers["loop"][k]).abs().max())
        for estimator in ("vmap", "vmap_only")
        for k in fishers["loop"]
    )
    # The shortcut estimates the empirical Fisher; compare its mass with the per-sample empirical one.
    empirical = fishers["vmap"] if label_mode == "empirical" else diagonal_fisher(model, x, y, label_mode="empirical")

    def mass(f):
        return sum(float(t.sum()) for t in f.values())

    return {
        "label_mode": label_mode,
        "n_samples": n,
        "repeats": repeats,
        "vmap_samples_per_s": n / seconds["vmap"],
        "vmap_only_samples_per_s": n / seconds["vmap_only"],
        "loop_samples_per_s": n / seconds["loop"],
        "shortcut_samples_per_s": n / seconds["shortcut"],
        "speedup_vs_loop": seconds["loop"] / seconds["vmap"],
        "vmap_only_speedup_vs_loop": seconds["loop"] / seconds["vmap_only"],
        "max_abs_difference_vs_loop": max_error,
        "shortcut_mass_over_per_sample": mass(fishers["shortcut"]) / mass(empirical),
        "shortcut_batch_size": 64,
    }


def state_bytes(tasks, max_tasks: int, bar, bar_task) -> dict:
    """Consolidation payload size after each of 1..max_tasks real (tiny) updates, per mode."""
    sizes: dict[str, dict[int, int]] = {}
    weights_bytes = None
    config = TrainConfig(epochs=1, batch_size=32, device="cpu")
    for mode in ("separate", "online"):
        ewc = EWCConfig(consolidation=mode, fisher=FisherConfig(label_mode="empirical", max_samples=32))
        learner = ContinualLearner.create(
            "mlp", tasks[0].input_shape, ewc=ewc, input_scale=input_scale_for(tasks[0].train)
        )
        sizes[mode] = {}
        for t in range(max_tasks):
            task = tasks[t % len(tasks)]
            sample = type(task.train)(task.train.x[:64], task.train.y[:64])
            learner.learn_task(f"task{t}", sample, train_config=config, ewc_lambda=1.0)
            sizes[mode][t + 1] = len(to_safetensors_bytes(*learner.export_consolidation()))
            bar.advance(bar_task)
        weights_bytes = len(to_safetensors_bytes(*learner.export_weights()))
    return {**sizes, "weights_bytes": weights_bytes, "model": "mlp 784-100-100-10"}


def search_overhead(directory: str, repeats: int, n_train: int | None, bar, bar_task) -> dict:
    """Training seconds of one update with the λ search vs a fixed-λ EWC update and fine-tuning."""
    first, second = load_tasks(directory, n_tasks=2)
    for task in (first, second):
        task.train = type(task.train)(task.train.x[:n_train], task.train.y[:n_train])
    config = TrainConfig(device="cpu")
    base = ContinualLearner.create("mlp", first.input_shape, input_scale=input_scale_for(first.train))
    base.learn_task(first.key, first.train, train_config=config, validation={first.key: first.validation})
    validation = {first.key: first.validation, second.key: second.validation}
    kinds = {"auto": ("ewc", "auto"), "fixed": ("ewc", EWCConfig().default_lambda), "finetune": ("finetune", None)}
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind, (strategy, ewc_lambda) in kinds.items():
            learner = copy.deepcopy(base)
            result = learner.learn_task(
                second.key,
                second.train,
                strategy=strategy,
                validation=validation,
                train_config=config,
                ewc_lambda=ewc_lambda,
            )
            seconds[kind].append(result.train_seconds)
        bar.advance(bar_task)
    median = {kind: statistics.median(values) for kind, values in seconds.items()}
    return {
        "seconds": seconds,
        "median_seconds": median,
        "auto_over_fixed": median["auto"] / median["fixed"],
        "auto_over_finetune": median["auto"] / median["finetune"],
        "candidates": list(EWCConfig().lambda_candidates),
        "fixed_lambda": EWCConfig().default_lambda,
    }


def main() -> None:
    args = parse_args()
    tasks = load_tasks(args.tasks, validation_fraction=0.0)
    x, y = _inputs(tasks[0])
    results: dict = {"step": {}, "fisher": {}}
    with progress_bar() as bar:
        bar_task = bar.add_task(
            "throughput", total=4 * args.blocks + 3 + 2 * args.max_tasks + args.search_repeats, status=""
        )
        for arch in ("mlp", "cnn"):
            for optimizer in ("sgd", "adam"):
                bar.update(bar_task, status=f"step time: {arch}, {optimizer}")
                results["step"][f"{arch}_{optimizer}"] = step_times(arch, x, y, optimizer, args, bar, bar_task)
        for arch, n, mode in (
            ("mlp", args.fisher_samples, "true"),
            ("mlp", args.fisher_samples, "empirical"),
            ("cnn", max(16, args.fisher_samples // 8), "empirical"),
        ):
            bar.update(bar_task, status=f"fisher: {arch}, {mode}")
            results["fisher"][f"{arch}_{mode}"] = fisher_speeds(arch, x, y, n, mode, args.repeats)
            bar.advance(bar_task)
        bar.update(bar_task, status="consolidation state")
        results["state"] = state_bytes(tasks, args.max_tasks, bar, bar_task)
        bar.update(bar_task, status="λ search cost")
        results["search"] = search_overhead(args.tasks, args.search_repeats, args.search_train_samples, bar, bar_task)

    from rich.table import Table

    steps = Table(title="(a) ms per training step, batch 64 (medians over alternating blocks)")
    for column in ("model", "optimizer", "fine-tune ms", "EWC ms", "ratio"):
        steps.add_column(column, justify="right")
    for key, r in results["step"].items():
        arch, optimizer = key.split("_")
        steps.add_row(arch, optimizer, f"{r['finetune_ms']:.2f}", f"{r['ewc_ms']:.2f}", f"{r['ratio']:.3f}")
    fisher = Table(title="(b) Fisher estimation, samples/s")
    for column in (
        "model",
        "label mode",
        "n",
        "estimator",
        "vmap only",
        "loop",
        "batch-mean shortcut",
        "estimator / loop",
        "vmap only / loop",
        "max |· − loop|",
        "shortcut mass / per-sample",
    ):
        fisher.add_column(column, justify="right")
    for key, r in results["fisher"].items():
        fisher.add_row(
            key.split("_")[0],
            r["label_mode"],
            str(r["n_samples"]),
            f"{r['vmap_samples_per_s']:.0f}",
            f"{r['vmap_only_samples_per_s']:.0f}",
            f"{r['loop_samples_per_s']:.0f}",
            f"{r['shortcut_samples_per_s']:.0f}",
            f"{r['speedup_vs_loop']:.1f}×",
            f"{r['vmap_only_speedup_vs_loop']:.1f}×",
            f"{r['max_abs_difference_vs_loop']:.1e}",
            f"{r['shortcut_mass_over_per_sample']:.4f}",
        )
    state = Table(
        title=f"(c) consolidation payload bytes ({results['state']['model']}; "
        f"weights payload {results['state']['weights_bytes']:,} B)"
    )
    state.add_column("tasks", justify="right")
    state.add_column("separate", justify="right")
    state.add_column("online", justify="right")
    for n in results["state"]["separate"]:
        state.add_row(str(n), f"{results['state']['separate'][n]:,}", f"{results['state']['online'][n]:,}")
    search = results["search"]
    cost = Table(
        title=f"(d) one update (pmnist-conflict task 1, mlp, defaults), training seconds, median of "
        f"{args.search_repeats}"
    )
    for column in ("fine-tune", f"EWC λ={search['fixed_lambda']:g}", "EWC λ=auto", "auto / fixed", "auto / fine-tune"):
        cost.add_column(column, justify="right")
    m = search["median_seconds"]
    cost.add_row(
        f"{m['finetune']:.2f}",
        f"{m['fixed']:.2f}",
        f"{m['auto']:.2f}",
        f"{search['auto_over_fixed']:.2f}×",
        f"{search['auto_over_finetune']:.2f}×",
    )
    for table in (steps, fisher, state, cost):
        console.print(table)

    default_optimizer = TrainConfig().optimizer
    summary = {
        "step_ratio_mlp": results["step"][f"mlp_{default_optimizer}"]["ratio"],
        "step_ratio_cnn": results["step"][f"cnn_{default_optimizer}"]["ratio"],
        "fisher_speedup_vs_loop": results["fisher"][f"mlp_{FisherConfig().label_mode}"]["speedup_vs_loop"],
        "state_bytes": {mode: results["state"][mode] for mode in ("separate", "online")},
        "lambda_search_over_plain_update": results["search"]["auto_over_fixed"],
    }
    console.print(
        f"step ratio (default optimizer {default_optimizer}): mlp {summary['step_ratio_mlp']:.3f}, "
        f"cnn {summary['step_ratio_cnn']:.3f} (target ≤ 1.10); Fisher vmap vs loop "
        f"({FisherConfig().label_mode}): {summary['fisher_speedup_vs_loop']:.1f}× (target ≥ 5×); λ search "
        f"{summary['lambda_search_over_plain_update']:.2f}× a fixed-λ update (budget ≤ 3×)"
    )
    if args.json:
        write_json(args.json, {**summary, "details": results})


if __name__ == "__main__":
    main()
