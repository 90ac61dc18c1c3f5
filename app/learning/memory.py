"""Rehearsal memory: a bounded, per-task-balanced store of training samples to replay in later updates.

The memory holds at most ``capacity`` samples (and, when ``max_bytes`` is set, as many as fit in it:
a text model's samples are ``max_length`` token ids each), shared equally among the tasks stored so far:
after k tasks each keeps ``capacity // k`` (the remainder goes to the earliest tasks, one
each). A task's samples are a seeded random choice of its training set, stored in that random
order, so shrinking a task's share when a new task arrives keeps a prefix, still a uniform
sample of the task. Inputs are stored as the learner trains on them (scaled); targets as
indices into the learner's label vocabulary, which only ever grows, so they stay valid.

``sample`` draws a replay batch uniformly over every stored sample. The memory exports as
plain tensors (``memory.<task>.x`` / ``memory.<task>.y``) and lives in the consolidation
payload: a stored version carries it; serving copies never load it.
"""

from __future__ import annotations

import torch

PREFIX = "memory."


class RehearsalMemory:
    """Per-task inputs and targets, at most ``capacity`` samples in all."""

    def __init__(self, capacity: int, max_bytes: int | None = None):
        if capacity < 0:
            raise ValueError(f"memory_size must be non-negative, got {capacity}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"memory_bytes must be non-negative, got {max_bytes}")
        self.capacity = int(capacity)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.tasks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # task key -> (inputs, target indices)

    def __len__(self) -> int:
        return sum(len(y) for _, y in self.tasks.values())

    @property
    def is_empty(self) -> bool:
        return len(self) == 0

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes + y.nbytes for x, y in self.tasks.values())

    def samples_that_fit(self, sample_bytes: int) -> int:
        """``capacity``, or fewer when ``max_bytes`` cannot hold that many samples of ``sample_bytes``."""
        if self.max_bytes is None or sample_bytes <= 0:
            return self.capacity
        return min(self.capacity, self.max_bytes // sample_bytes)

    def shares(self, n_tasks: int, capacity: int | None = None) -> list[int]:
        """How many samples each of ``n_tasks`` tasks keeps (balanced; remainder to the earliest)."""
        base, extra = divmod(self.capacity if capacity is None else capacity, max(1, n_tasks))
        return [base + (1 if i < extra else 0) for i in range(n_tasks)]

    def add_task(self, task_key: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
        """Store a seeded random share of the task's samples and shrink the others' to theirs."""
        if task_key in self.tasks:
            raise ValueError(f"task {task_key!r} is already in the rehearsal memory")
        sample_bytes = (x[:1].nbytes + y[:1].nbytes) if len(x) else 0
        shares = self.shares(len(self.tasks) + 1, self.samples_that_fit(sample_bytes))
        for (key, (old_x, old_y)), share in zip(list(self.tasks.items()), shares[:-1], strict=True):
            self.tasks[key] = (old_x[:share], old_y[:share])
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: shares[-1]].to(x.device)
        self.tasks[task_key] = (x[order].detach().clone(), y[order].detach().clone())

    def sampler(self, batch_size: int, seed: int) -> ReplaySampler:
        """Replay batches uniform over the memory (see ReplaySampler)."""
        x = torch.cat([x for x, _ in self.tasks.values()])
        y = torch.cat([y for _, y in self.tasks.values()])
        return ReplaySampler(x, y, batch_size, seed)

    def to(self, device: torch.device) -> RehearsalMemory:
        self.tasks = {key: (x.to(device), y.to(device)) for key, (x, y) in self.tasks.items()}
        return self

    # --------------------------------------------------------------------------- state
    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for key, (x, y) in self.tasks.items():
            tensors[f"{PREFIX}{key}.x"], tensors[f"{PREFIX}{key}.y"] = x.contiguous(), y.contiguous()
        return tensors

    def metadata(self) -> dict:
        return {"capacity": self.capacity, "max_bytes": self.max_bytes, "order": list(self.tasks)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> RehearsalMemory:
        memory = cls(metadata["capacity"], metadata.get("max_bytes"))
        for key in metadata["order"]:
            memory.tasks[key] = (tensors[f"{PREFIX}{key}.x"], tensors[f"{PREFIX}{key}.y"])
        return memory


class ReplaySampler:
    """One replay batch (inputs, targets) per call, drawn uniformly from the memory's samples; the
    trainer reads ``targets`` (all of them) to know which classes the replayed half brings."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
        self.x, self.targets = x, y
        self.batch_size = min(batch_size, len(y))
        self.generator = torch.Generator().manual_seed(seed + 1)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(self.targets), (self.batch_size,), generator=self.generator).to(self.targets.device)
        return self.x[index], self.targets[index]
