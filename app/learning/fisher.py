"""Diagonal Fisher information from per-sample gradients.

    F_i = E_x E_{y ~ p(y|x)} [ (d log p(y|x) / d theta_i)^2 ]

is estimated as the mean, over samples, of *squared per-sample* gradients. Per-sample
gradients come from ``torch.func``: ``vmap(grad(log p))`` over a chunk of samples, so the
cost is a few batched backward passes while memory stays bounded by the chunk size.
Fully connected layers skip the per-sample gradients altogether: their squares factor into
squared output gradients times squared inputs, summed over samples by one matrix product
(exact, same result; see ``diagonal_fisher``). Text models, whose forwards vmap cannot trace,
get theirs from one batched pass too: a transformer's parameters all sit in linear, embedding
and layer-norm modules (and peft's LoRA adapters on them), whose per-sample gradients follow from
each module's input and output gradient (``_ModuleTrace``); the loop of one sample at a time is
left for any other module.

Label modes (named for what they are):
* ``true``: the expectation over y under the model's own predictive distribution, exact
  over classes: sum_c p(c|x) g_c(x)^2 (one vmapped pass per class).
* ``empirical``: y is the given label: g_y(x)^2.

Two other estimators it is measured against live in ``benchmarks/baselines.py``: a per-sample
Python loop (the slow reference this one must equal) and the common shortcut of squaring the
gradient of a *batch-mean* loss, which is biased (the square of a mean is not the mean of
squares: it underestimates F by about the batch size).

The model is evaluated in eval mode (dropout off, BatchNorm on running statistics) and
restored to its former mode afterwards.

Across N processes (``app.learning.distributed``) each rank takes a disjoint shard of the
samples and sums its squared scores; one all_reduce of the sums and the sample count makes the
mean over every sample: the single-process Fisher on the same samples.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from app.learning import distributed

Fisher = dict[str, torch.Tensor]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off, BatchNorm on running statistics) inside, the former mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


TRACED_MODULES = (nn.Linear, nn.Embedding, nn.LayerNorm)


def _lora_embedding_adapter(module: nn.Module) -> str | None:
    """The adapter of a peft LoRA embedding whose forward is the plain one, the base embedding plus
    ``scaling * embed(ids, A.T) @ B.T`` (one active adapter, unmerged, no variant such as DoRA, no
    embedding scale): ``_ModuleTrace`` traces A as an embedding table and B as a linear layer on
    ``embed(ids, A.T)``. None for any other module. Only text models import peft, so a process
    that has not imported it holds no such module."""
    lora = sys.modules.get("peft.tuners.lora")
    if lora is None or not isinstance(module, lora.Embedding) or module.merged or module.disable_adapters:
        return None
    adapters = [name for name in module.active_adapters if name in module.lora_embedding_A]
    base = module.get_base_layer()
    plain = len(adapters) == 1 and adapters[0] not in module.lora_variant and adapters[0] not in module.input_fns
    scaled = getattr(base, "embed_scale", None) is not None or base.max_norm is not None or base.scale_grad_by_freq
    return adapters[0] if plain and not scaled else None


def _traced_parameters(module: nn.Module) -> tuple[str, ...]:
    """The names, within ``module``, of the parameters ``_ModuleTrace`` computes squares for."""
    adapter = _lora_embedding_adapter(module)
    if adapter is not None:
        return (f"lora_embedding_A.{adapter}", f"lora_embedding_B.{adapter}")
    return ("weight", "bias") if isinstance(module, TRACED_MODULES) else ()


def _traceable_modules(
    model: nn.Module, params: dict[str, torch.Tensor], probe: torch.Tensor, every_kind: bool
) -> dict[str, nn.Module]:
    """The modules whose squared per-sample gradients ``_ModuleTrace`` computes: a trainable parameter,
    applied exactly once per forward to an input whose first dimension is the batch (or 1, broadcast
    over it: BERT's position embeddings). ``every_kind``: any of ``TRACED_MODULES`` on inputs of any
    rank (and peft's LoRA embeddings); otherwise only linear layers on a flat (batch, features) input,
    where the square factors."""
    calls: dict[str, list[tuple[int, int, int]]] = {}
    hooks = []
    for name, module in model.named_modules():
        kinds = _traced_parameters(module) if every_kind or isinstance(module, nn.Linear) else ()
        trainable = any(f"{name}.{kind}" in params for kind in kinds)
        if trainable and not getattr(module, "max_norm", None):

            def record(_module, inputs, output, name=name):
                calls.setdefault(name, []).append((inputs[0].dim(), inputs[0].shape[0], output.shape[0]))

            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for hook in hooks:
            hook.remove()
    modules = dict(model.named_modules())

    def traceable(dims: int, input_batch: int, output_batch: int) -> bool:
        return input_batch == output_batch in (1, len(probe)) and (dims == 2 or every_kind)

    return {name: modules[name] for name, seen in calls.items() if len(seen) == 1 and traceable(*seen[0])}


def diagonal_fisher(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    label_mode: str = "true",
    chunk_size: int = 128,
    traced: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Fisher:
    """Mean squared per-sample score of every trainable parameter, keyed by parameter name.

    Fully connected layers take an exact shortcut (Goodfellow 2015): sample b's gradient of
    ``nn.Linear`` weights is the outer product of the output gradient delta_b and the input
    a_b, so its square is delta_b^2 (x) a_b^2 and the sum over samples is one matrix product,
    sum_b w_b delta_b^2 a_b^2^T, with no per-sample gradient in memory. The deltas come from
    one batched backward pass per class (samples are independent in eval mode). Every other
    parameter (convolutions, calibration modules) takes the general path, ``vmap(grad)``. The
    shortcut costs a pass of its own, so it is taken only when fully connected layers hold at
    least half of the trainable parameters (an MLP, a CNN with a wide dense block), not for a
    small head. Networks whose forward vmap cannot trace (``per_sample_gradients_by_loop``: the
    Hugging Face text models) take the same batched pass for every linear, embedding and layer-norm
    parameter and every LoRA adapter on them (``_ModuleTrace``), and the loop of one sample at a time
    only when another module holds a trainable parameter. ``traced=False`` sends every parameter
    through the per-sample path (vmap, or the loop), which the tests and benchmarks compare against.
    ``on_chunk(done, total)`` is called after every chunk (progress of a long estimate).
    """
    if label_mode not in ("true", "empirical"):
        raise ValueError(f"label_mode must be 'true' or 'empirical', got {label_mode!r}")
    if label_mode == "empirical" and y is None:
        raise ValueError("the empirical Fisher needs the labels y")
    if len(x) == 0:
        raise ValueError("the Fisher needs at least one sample")
    probe = x[:2]  # a rank's shard may be empty (fewer samples than ranks); the probe never is
    x, *rest = distributed.shard(x, *([] if y is None else [y]))  # the identity in a single process
    y = rest[0] if rest else None
    empirical_labels = y if label_mode == "empirical" else None  # None: every class, by the model's probability
    params = _trainable(model)
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    by_loop = getattr(model, "per_sample_gradients_by_loop", False)  # forwards vmap cannot trace (HF models)
    with eval_mode(model):
        modules = _traceable_modules(model, params, probe, every_kind=by_loop) if traced else {}
        traced_names = {f"{name}.{kind}" for name, module in modules.items() for kind in _traced_parameters(module)}
        covered = traced_names & set(params)
        if by_loop and covered != set(params):
            modules, covered = {}, set()  # a module the trace does not know: the loop takes every parameter
        if 2 * sum(params[name].numel() for name in covered) < sum(p.numel() for p in params.values()):
            modules, covered = {}, set()  # a small head: its vmapped gradients cost less than one more pass
        vmapped = {name: p for name, p in params.items() if name not in covered}
        constant = {name: p for name, p in params.items() if name in covered}

        def log_prob(p, sample, label):
            logits = functional_call(model, ({**constant, **p}, buffers), (sample.unsqueeze(0),))
            return F.log_softmax(logits.float(), dim=-1)[0].gather(0, label.unsqueeze(0)).squeeze(0)

        per_sample_grad = vmap(grad(log_prob), in_dims=(None, 0, 0))
        for start in range(0, len(x), chunk_size):
            xb = x[start : start + chunk_size]
            if modules:  # one forward serves the class probabilities and the traced modules
                trace = _ModuleTrace(model, modules, xb)
                logits = trace.logits.detach()
            else:
                with torch.no_grad():
                    logits = model(xb).float()
            if empirical_labels is not None:
                classes = [(empirical_labels[start : start + chunk_size], torch.ones(len(xb), device=x.device))]
            else:
                probs = F.softmax(logits, dim=-1)
                classes = [
                    (torch.full((len(xb),), c, dtype=torch.long, device=x.device), probs[:, c])
                    for c in range(probs.shape[1])
                ]
            if vmapped and by_loop:
                _add_fisher_by_loop(model, vmapped, xb, classes, fisher)
            elif vmapped:
                for labels, weight in classes:
                    for name, g in per_sample_grad(vmapped, xb, labels).items():
                        fisher[name] += torch.einsum("b,b...->...", weight, g.pow(2))
            if modules:
                trace.add_fisher(classes, fisher)
            if on_chunk is not None:
                on_chunk(min(start + chunk_size, len(x)), len(x))
    fisher, n_samples = distributed.all_reduce_sums(fisher, len(x))
    return {name: f / n_samples for name, f in fisher.items()}


def _add_fisher_by_loop(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    xb: torch.Tensor,
    classes: list[tuple[torch.Tensor, torch.Tensor]],
    fisher: Fisher,
) -> None:
    """Per-sample gradients one sample at a time (one forward, one backward per label set): for
    networks whose forward branches on tensor values, which vmap cannot trace."""
    named = dict(model.named_parameters())
    targets = [named[name] for name in params]
    for i in range(len(xb)):
        with torch.enable_grad():
            log_probs = F.log_softmax(model(xb[i : i + 1]).float(), dim=-1)[0]
            for index, (labels, weight) in enumerate(classes):
                if float(weight[i]) == 0.0:
                    continue
                gradients = torch.autograd.grad(
                    log_probs[labels[i]], targets, retain_graph=index < len(classes) - 1, allow_unused=True
                )
                for name, g in zip(params, gradients, strict=True):
                    if g is not None:
                        fisher[name] += weight[i] * g.pow(2)


class _ModuleTrace:
    """One forward pass of a chunk with the input and output of every traced module recorded, from
    which ``add_fisher`` accumulates their exact squared per-sample gradients, one batched backward
    pass per label set. A module's output broadcast over the batch (first dimension 1) is expanded
    to the batch inside the forward, so that its output gradient stays per sample."""

    # Per-sample gradients of a linear layer on sequences, (samples, out, in), are built this many
    # elements at a time at most (BERT-base's feed-forward holds 2.4 M weights a sample).
    MAX_PER_SAMPLE_ELEMENTS = 1 << 24

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module], xb: torch.Tensor):
        batch = len(xb)
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def record(name: str, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            value = inputs[0]
            if output.shape[0] != batch:  # broadcast over the batch: one output gradient per sample
                value, output = value.expand(batch, *value.shape[1:]), output.expand(batch, *output.shape[1:])
            seen[name] = (value, output)
            return output

        hooks = [
            module.register_forward_hook(lambda _m, inputs, output, name=name: record(name, inputs, output))
            for name, module in modules.items()
        ]
        try:
            with torch.enable_grad():
                self.logits = model(xb).float()
                self.log_probs = F.log_softmax(self.logits, dim=-1)
        finally:
            for hook in hooks:
                hook.remove()
        self.modules = modules
        self.outputs = [seen[name][1] for name in modules]
        # What every label set reuses: per module, its input in the form its squares take it.
        self.inputs = {name: _prepared_input(module, seen[name][0].detach()) for name, module in modules.items()}

    def add_fisher(self, classes: list[tuple[torch.Tensor, torch.Tensor]], fisher: Fisher) -> None:
        """fisher[p] += sum_b w_b g_b(p)^2 for every traced parameter p, per label set (labels, w)."""
        for index, (labels, weight) in enumerate(classes):
            chosen = self.log_probs.gather(1, labels.unsqueeze(1)).sum()
            deltas = torch.autograd.grad(chosen, self.outputs, retain_graph=index < len(classes) - 1)
            for (name, module), delta in zip(self.modules.items(), deltas, strict=True):
                squares = self._squared_gradients(name, module, delta.float(), weight.float())
                for kind, value in squares.items():
                    key = f"{name}.{kind}"
                    if key in fisher:
                        fisher[key] += value.to(fisher[key].dtype)

    def _squared_gradients(
        self, name: str, module: nn.Module, delta: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """sum_b w_b g_b^2 of the module's weight and bias, from its (prepared) input and output gradient delta."""
        a = self.inputs[name]
        if isinstance(a, _LoraTokens):  # A as an embedding table of delta @ B, B as a linear layer on A's rows
            a_squares = _embedding_squares(a.ids, delta @ a.lora_b * a.scaling, weight)
            return {
                f"lora_embedding_A.{a.adapter}": a_squares.T,
                f"lora_embedding_B.{a.adapter}": _sequence_linear_squares(delta, a.rows, weight),
            }
        if isinstance(a, _TokenRows):  # g_b: the output gradients of sample b summed per token id
            return {"weight": _embedding_squares(a, delta, weight)}
        if isinstance(module, nn.LayerNorm):  # g_b: delta times the normalized input, summed over positions
            positions = tuple(range(1, delta.dim() - len(module.normalized_shape)))
            per_sample = {"weight": (delta * a).sum(positions), "bias": delta.sum(positions)}
            return {kind: torch.einsum("b,b...->...", weight, g.pow(2)) for kind, g in per_sample.items()}
        assert isinstance(module, nn.Linear)  # the third kind traced
        if a.dim() == 2:  # flat: delta_b^2 (x) a_b^2 (a holds the squares), summed over samples by one product
            d2 = delta.pow(2) * weight.unsqueeze(1)
            return {"weight": d2.T @ a, "bias": d2.sum(0)}
        delta = delta.flatten(1, -2)  # (batch, positions, features), as a
        squares = {"bias": torch.einsum("b,bo->o", weight, delta.sum(1).pow(2))}
        if module.weight.requires_grad:  # a trainable bias beside a frozen weight needs only its own
            squares["weight"] = _sequence_linear_squares(delta, a, weight)
        return squares


def _sequence_linear_squares(delta: torch.Tensor, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_b w_b g_b^2 of a linear map applied at every position, g_b = sum_t delta_bt a_bt^T, built
    ``MAX_PER_SAMPLE_ELEMENTS`` at a time: delta (batch, positions, out), a (batch, positions, in)."""
    step = max(1, _ModuleTrace.MAX_PER_SAMPLE_ELEMENTS // (delta.shape[-1] * a.shape[-1]))
    total = torch.zeros(delta.shape[-1], a.shape[-1], device=delta.device)
    for s in range(0, len(a), step):
        g = torch.einsum("bto,bti->boi", delta[s : s + step], a[s : s + step])
        total += torch.einsum("b,boi->oi", weight[s : s + step], g.pow(2))
    return total


@dataclass
class _TokenRows:
    """An embedding's input ids as its squares use them: one row per (sample, id) pair present."""

    rows: torch.Tensor  # sample * num_embeddings + id, for each pair
    inverse: torch.Tensor  # the pair of every kept position
    kept: torch.Tensor  # positions that do not hold the padding id
    shape: tuple[int, int]  # the table's (num_embeddings, embedding_dim)

    @classmethod
    def of(cls, ids: torch.Tensor, table: nn.Embedding, width: int) -> _TokenRows:
        """``ids`` looked up in ``table``'s rows (its padding row never learns), ``width`` per row."""
        batch = ids.shape[0]
        ids = ids.reshape(batch, -1)
        keys = (torch.arange(batch, device=ids.device).unsqueeze(1) * table.num_embeddings + ids).flatten()
        kept = (
            ids.flatten() != table.padding_idx
            if table.padding_idx is not None
            else torch.ones_like(keys, dtype=torch.bool)
        )
        rows, inverse = torch.unique(keys[kept], return_inverse=True)
        return cls(rows, inverse, kept, (table.num_embeddings, width))


@dataclass
class _LoraTokens:
    """A LoRA embedding's input as its squares use it: the ids (for A) and A's rows they pick, each
    times the adapter's scaling (the input of B), (batch, positions, rank); with the adapter's name
    and B, (embedding_dim, rank), which the Fisher's passes leave as they are."""

    ids: _TokenRows
    rows: torch.Tensor
    scaling: float
    adapter: str
    lora_b: torch.Tensor


def _prepared_input(module: nn.Module, value: torch.Tensor) -> torch.Tensor | _TokenRows | _LoraTokens:
    """A traced module's input as ``_squared_gradients`` takes it, computed once for every label set."""
    adapter = _lora_embedding_adapter(module)
    if adapter is not None:
        lora: Any = module  # peft's LoRA embedding
        lora_a = lora.lora_embedding_A[adapter].detach().float()  # (rank, num_embeddings)
        scaling = float(lora.scaling[adapter])
        rows = F.embedding(value.reshape(len(value), -1), lora_a.T) * scaling
        ids = _TokenRows.of(value, lora.get_base_layer(), len(lora_a))
        return _LoraTokens(ids, rows, scaling, adapter, lora.lora_embedding_B[adapter].detach().float())
    if isinstance(module, nn.Embedding):
        return _TokenRows.of(value, module, module.embedding_dim)
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(value.float(), module.normalized_shape, eps=module.eps)
    if value.dim() == 2:  # a flat linear layer: its squared input serves every label set
        return value.float().pow(2)
    return value.float().flatten(1, -2)


def _embedding_squares(ids: _TokenRows, delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_b w_b g_b^2 of an embedding table: sample b's gradient of row v is the sum of its output
    gradients at the positions holding v (none for the padding row, which never learns)."""
    delta = delta.reshape(-1, delta.shape[-1])[ids.kept]
    per_sample = torch.zeros(len(ids.rows), delta.shape[1], device=delta.device).index_add_(0, ids.inverse, delta)
    squares = per_sample.pow(2) * weight[ids.rows // ids.shape[0]].unsqueeze(1)
    rows = ids.rows % ids.shape[0]
    return torch.zeros(ids.shape, device=delta.device).index_add_(0, rows, squares)
