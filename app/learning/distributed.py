"""One update across N processes with ``torch.distributed``: the strategy-independent layer.

Every rank runs the same update on the same data (same seeds, same λ candidates, same
validation and test splits); what is split is the work inside the two loops that cost:

* training (``Trainer``): every rank draws the same global mini-batch (same seeded order),
  keeps its contiguous share of it (``shard``), and after backward the gradients are
  combined with one bucketed ``all_reduce(SUM)`` of ``grad · n_rank / n_batch``
  (``average_gradients``): exactly the gradient of the global batch's mean loss, so the
  EWC penalty (added to ``.grad`` or applied as a proximal step after the optimizer step)
  acts identically on every rank, and every rank's weights stay identical;
* the Fisher (``app.learning.fisher.diagonal_fisher``): the samples are split into disjoint
  shards, each rank sums its samples' squared per-sample scores, and one
  ``all_reduce(SUM)`` of those sums with the sample count (``all_reduce_sums``) gives every
  rank the single-process Fisher on the same samples. (Under DDP, squaring gradients that
  were already averaged across ranks, as batch-gradient Fisher estimates do, is wrong twice.)

Since weights are identical everywhere (every rank applies the same all-reduced gradient),
λ search scores and the accuracy table come out the same on every rank with no further
coordination, and rank 0's result stands for all (``app.updates.ranks``).

Backends: gloo on CPU, nccl on CUDA (one GPU per rank, ``cuda:{rank}``); ``spawn`` starts the
ranks with ``torch.multiprocessing``, or run under ``torchrun`` (its ``RANK``/``WORLD_SIZE``/
``MASTER_ADDR`` environment) and call ``init_from_env``. Outside an initialised process group
of more than one rank every function here is the identity, so single-process code pays nothing.

``traffic`` counts the bytes each rank contributed to all-reduces, per kind (``fisher``,
``gradients``), for the benchmarks' figures.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

logger = logging.getLogger(__name__)
FINISHED_KEY = "retain/finished/"  # + rank: set in the launcher's store once the rank's work is done

traffic: Counter = Counter()  # kind -> bytes this rank put into all_reduce


def active() -> bool:
    """Whether this process is one rank of an initialised group of more than one."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def shard(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous share of tensors with the same first dimension (all of them, alone)."""
    if not active():
        return tensors
    n, size, me = len(tensors[0]), world_size(), rank()
    start, end = n * me // size, n * (me + 1) // size
    return tuple(t[start:end] for t in tensors)


def _all_reduce_flat(tensors: Sequence[torch.Tensor], kind: str) -> list[torch.Tensor]:
    """One all_reduce(SUM) of the tensors concatenated into a single float32 bucket."""
    flat = torch.cat([t.reshape(-1).to(torch.float32) for t in tensors])
    traffic[kind] += flat.numel() * flat.element_size()
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out


def all_reduce_sums(sums: dict[str, torch.Tensor], count: int) -> tuple[dict[str, torch.Tensor], int]:
    """Every rank's per-parameter sums and sample count, summed over ranks (one all_reduce of
    the parameter count + 1 floats)."""
    if not active():
        return sums, count
    names = list(sums)
    device = next(iter(sums.values())).device
    *reduced, total = _all_reduce_flat(
        [*(sums[n] for n in names), torch.tensor([float(count)], device=device)], "fisher"
    )
    return dict(zip(names, reduced, strict=True)), int(round(float(total.item())))


def average_gradients(parameters: Sequence[nn.Parameter], n_local: int, n_global: int) -> None:
    """``grad ← Σ_ranks grad_rank · n_rank / n_global``: the gradient of the global batch's mean loss."""
    if not active():
        return
    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    weight = n_local / n_global
    reduced = _all_reduce_flat([g * weight for g in grads], "gradients")
    for p, g in zip(params, reduced, strict=True):
        p.grad = g


def backend_for(device: str) -> str:
    return "nccl" if str(device).startswith("cuda") else "gloo"


def device_of_rank(device: str, rank_: int) -> str:
    """One GPU per rank (``cuda:{rank}``); CPU ranks share the CPU."""
    return f"cuda:{rank_}" if str(device).startswith("cuda") else "cpu"


def join(device: str, rank_: int, world: int, timeout_seconds: float = 120.0, **rendezvous) -> None:
    """Join the process group through ``rendezvous`` (``store=`` or ``init_method=``). A rank that is
    lost makes the others' collectives fail after ``timeout_seconds``, so the update fails as a
    whole, never half."""
    from datetime import timedelta

    timeout = timedelta(seconds=timeout_seconds)
    dist.init_process_group(backend_for(device), rank=rank_, world_size=world, timeout=timeout, **rendezvous)
    if str(device).startswith("cuda"):
        torch.cuda.set_device(device_of_rank(device, rank_))


def init_from_env(device: str) -> None:
    """Join the group torchrun describes (RANK, WORLD_SIZE, and its agent's store at
    MASTER_ADDR:MASTER_PORT)."""
    join(device, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), init_method="env://")


def _finished_keys(world: int) -> list[str]:
    """The store keys of every rank's work done."""
    return [f"{FINISHED_KEY}{r}" for r in range(world)]


def _run_rank(rank_: int, fn: Callable, world: int, device: str, port: int, args: tuple) -> None:
    store = dist.TCPStore("127.0.0.1", port, is_master=False)
    join(device, rank_, world, store=store)
    try:
        fn(rank_, world, device_of_rank(device, rank_), *args)
        # Every rank's work is done before any tears its connections down (a barrier on the
        # launcher's store), and the launcher can tell a death at teardown from one at work.
        store.set(f"{FINISHED_KEY}{rank_}", "1")
        store.wait(_finished_keys(world))
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, nproc: int, device: str, *args) -> None:
    """Run ``fn(rank, world_size, device, *args)`` in ``nproc`` new processes on this machine, in one
    group; raises if any rank fails or dies before every rank has done its work
    (``torch.multiprocessing.ProcessRaisedException`` / ``ProcessExitedException``), after the
    others are stopped.

    The rendezvous store is this launcher's, as torchrun's agent hosts it for its ranks: it listens
    on a port the system picks (no window in which another process can take a port chosen
    beforehand), and it outlives every rank, so no rank's exit takes down a server a peer still
    talks to. A rank killed by a signal after every rank recorded its work done there died in
    teardown (gloo's threads at interpreter exit have aborted a rank this way, rarely, on a loaded
    machine): the work stands, and the death is logged."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    try:
        mp.spawn(_run_rank, args=(fn, nproc, device, store.port, args), nprocs=nproc, join=True)
    except mp.ProcessExitedException as exited:
        if not exited.signal_name or not store.check(_finished_keys(nproc)):
            raise
        logger.warning("rank %d died in teardown (%s) after every rank had done its work", exited.error_index, exited)
