"""One update across two processes (app/learning/distributed.py, gloo on CPU): the Fisher equals
the single-process Fisher on the same samples, its all-reduce moves one float32 per parameter
(+ the count), and a two-process update learns what one process learns."""

import json

import numpy as np
import torch
from torch import nn

from app.learning import ContinualLearner, TaskData, TrainConfig, distributed
from app.learning.fisher import diagonal_fisher
from app.learning.state import from_safetensors_bytes, to_safetensors_bytes

N_SAMPLES = 37  # odd: the two shards differ in size
LABEL_MODES = ("true", "empirical")


def conv_and_dense() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small net with a convolution (the vmap path) and a wide dense layer (the factored path)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 40), nn.ReLU(),
                          nn.Linear(40, 4))
    x = torch.randn(N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (N_SAMPLES,), generator=torch.Generator().manual_seed(2))
    return model, x, y


def fisher_on_rank(rank: int, world: int, device: str, out: str) -> None:
    model, x, y = conv_and_dense()
    for label_mode in LABEL_MODES:
        distributed.traffic.clear()
        fisher = diagonal_fisher(model, x, y, label_mode=label_mode, chunk_size=8)
        with open(f"{out}/fisher-{label_mode}-{rank}.safetensors", "wb") as handle:
            handle.write(to_safetensors_bytes(fisher, {"fisher_bytes": str(distributed.traffic["fisher"])}))


def test_the_two_process_fisher_equals_the_single_process_fisher(tmp_path):
    model, x, y = conv_and_dense()
    n_parameters = sum(p.numel() for p in model.parameters())
    distributed.spawn(fisher_on_rank, 2, "cpu", str(tmp_path))
    for label_mode in LABEL_MODES:
        single = diagonal_fisher(model, x, y, label_mode=label_mode, chunk_size=8)
        for rank in (0, 1):
            path = tmp_path / f"fisher-{label_mode}-{rank}.safetensors"
            fisher, metadata = from_safetensors_bytes(path.read_bytes())
            assert set(fisher) == set(single)
            for name in single:
                torch.testing.assert_close(fisher[name], single[name], rtol=1e-6, atol=1e-6)
            # one all_reduce of the sums and the sample count: (parameters + 1) float32 per rank
            assert int(metadata["fisher_bytes"]) == 4 * (n_parameters + 1)


def two_tasks() -> list[tuple[TaskData, TaskData, TaskData]]:
    """Two tasks on 20 features: four Gaussian clusters each, in different places, labels 0-3."""
    rng = np.random.default_rng(0)
    tasks = []
    for permutation in ([0, 1, 2, 3], [2, 3, 0, 1]):
        centres = rng.normal(0, 2.0, size=(4, 20))
        splits = []
        for n in (203, 40, 80):  # train (odd: short last batch), validation, test
            labels = rng.integers(0, 4, n)
            x = centres[labels] + rng.normal(0, 1.5, size=(n, 20))
            splits.append(TaskData(x=x.astype(np.float32), y=[int(permutation[label]) for label in labels]))
        tasks.append(tuple(splits))
    return tasks


def learn_two_tasks(rank: int = 0, world: int = 1, device: str = "cpu", out: str | None = None) -> dict:
    """Both tasks, λ by search on validation; the accuracy table on test after each update."""
    learner = ContinualLearner.create("mlp", (20,), architecture_options={"hidden": [32]})
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, device=device)
    tasks, table = two_tasks(), {}
    for key, (train, validation, _) in zip(("a", "b"), tasks):
        validations = {k: v for k, (_, v, _) in zip(("a", "b"), tasks) if k in (*learner.task_keys, key)}
        result = learner.learn_task(key, train, validation=validations, train_config=config, ewc_lambda="auto")
        table[key] = {"lambda": result.ewc_lambda, **{k: learner.evaluate(test).accuracy
                                                     for k, (_, _, test) in zip(("a", "b"), tasks)
                                                     if k in learner.task_keys}}
    if out is not None:
        with open(f"{out}/table{rank}.json", "w") as handle:
            json.dump({"table": table, "gradient_bytes": distributed.traffic["gradients"]}, handle)
    return table


def test_a_two_process_update_learns_what_one_process_learns(tmp_path):
    """Each rank trains on its half of every global batch and the gradients are summed weighted by
    shard size: the global batch's mean-loss gradient, so the two runs differ only by float32
    summation order (all-reduce vs one matmul), amplified through training. Tolerance: 2 of 80 test
    samples (0.025) per entry; the same λ must win the search."""
    single = learn_two_tasks()
    distributed.spawn(learn_two_tasks, 2, "cpu", str(tmp_path))
    tables = [json.loads((tmp_path / f"table{rank}.json").read_text()) for rank in (0, 1)]
    assert tables[0]["table"] == tables[1]["table"]  # every rank agrees, exactly
    assert tables[0]["gradient_bytes"] > 0
    for key, row in single.items():
        two = tables[0]["table"][key]
        assert two["lambda"] == row["lambda"]
        for task, accuracy in row.items():
            if task != "lambda":
                assert abs(two[task] - accuracy) <= 0.025, (key, task, two, row)
