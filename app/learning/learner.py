"""The continual learner: one model that learns a sequence of tasks and keeps what it learnt.

A learner owns a network, a growing label vocabulary, its fixed input scaling, and
(for the EWC family) the consolidation of every task learnt so far. One call,
``learn_task``, is one update of the model:

1. grow the head for the task's new labels (EWC family) or add the task's calibration
   modules and classifier (CCLL family);
2. train on the task: plain fine-tuning, EWC (task loss + λ/2 Σ F (θ − θ*)², λ chosen on
   validation data when ``"auto"``), joint training from scratch on every task seen so far
   (the multi-task upper bound, kept for benchmarks), or CCLL (frozen base after the first task);
3. consolidate: estimate this task's diagonal Fisher and store it with the anchor weights,
   so the next update can protect this task (fine-tuned tasks are consolidated too);
4. report validation accuracy of every task before and after, for the forgetting gate.

State exports as two safetensors payloads: the weights (all a prediction needs) and the
consolidation (Fisher + anchors, all a later update needs).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.learning.calibration import CalibratedNetwork
from app.learning.config import EWCConfig, TrainConfig
from app.learning.data import Label, TaskData, plain_label, plain_labels, unique_in_order
from app.learning.evaluation import Evaluation, evaluate_logits
from app.learning.ewc import Consolidation
from app.learning.fisher import diagonal_fisher
from app.learning.lambda_search import search_cost, successive_halving
from app.learning.models import build_model, grow_head
from app.learning.state import from_safetensors_bytes, to_safetensors_bytes
from app.learning.training import Progress, ThroughputMeter, Trainer, TrainingCancelled, resolve_device

FAMILIES = {"ewc": ("ewc", "finetune", "joint"), "ccll": ("ccll",)}
FORMAT = "retain.learner/1"
WEIGHTS_FILE, CONSOLIDATION_FILE = "weights.safetensors", "consolidation.safetensors"
TRAIN_SHARE = 0.9  # share of an update's progress bar spent training; the rest is Fisher + evaluation
FISHER_SHARE = 0.05


@dataclass
class Prediction:
    label: Label
    probability: float
    top_k: list[tuple[Label, float]]


@dataclass
class UpdateResult:
    task_key: str
    strategy: str
    ewc_lambda: float | None
    lambda_search: list[dict] | None
    fisher_recipe: dict
    train_config: dict
    train_seconds: float
    search_seconds: float
    final_loss: float
    validation_before: dict[str, float]
    validation_after: dict[str, float]
    parameters_added: int

    def as_dict(self) -> dict:
        return asdict(self)


class ContinualLearner:
    """See the module docstring; ``create`` or ``load`` one, never call ``__init__`` directly."""

    def __init__(self, *, architecture: str, input_shape: tuple[int, ...], strategy: str,
                 architecture_options: dict, ewc: EWCConfig, input_scale: float, seed: int):
        if strategy not in FAMILIES:
            raise ValueError(f"unknown model strategy {strategy!r}; choose one of {', '.join(FAMILIES)}")
        self.architecture, self.input_shape, self.strategy = architecture, tuple(int(s) for s in input_shape), strategy
        self.architecture_options, self.ewc, self.input_scale, self.seed = dict(architecture_options), ewc, float(input_scale), seed
        self.labels: list[Label] = []
        self.task_keys: list[str] = []
        self.task_labels: dict[str, list[Label]] = {}
        self.network: nn.Module | None = None
        self.consolidation: Consolidation | None = Consolidation(ewc.consolidation, ewc.gamma) if strategy == "ewc" else None
        self.updates: list[dict] = []  # λ and Fisher recipe of every update, for the registry
        self.device = torch.device("cpu")
        self._replay: list[tuple[torch.Tensor, list[Label]]] = []  # joint training only; never exported

    # ------------------------------------------------------------------------- building
    @classmethod
    def create(cls, architecture: str, input_shape: tuple[int, ...], strategy: str = "ewc",
               architecture_options: dict | None = None, ewc: EWCConfig | None = None,
               input_scale: float = 1.0, seed: int = 0) -> "ContinualLearner":
        learner = cls(architecture=architecture, input_shape=input_shape, strategy=strategy,
                      architecture_options=architecture_options or {}, ewc=ewc or EWCConfig(),
                      input_scale=input_scale, seed=seed)
        if strategy == "ccll" and architecture not in ("cnn", "resnet18"):
            raise ValueError("the ccll strategy calibrates conv blocks: use architecture 'cnn' or 'resnet18'")
        learner._build_network(n_classes=1)  # fails now, not at the first task, on bad options or shapes
        learner.network = None
        return learner

    def _split_options(self) -> tuple[dict, dict]:
        options = dict(self.architecture_options)
        calibration = {k: options.pop(k) for k in ("alpha", "beta") if k in options}
        if calibration and self.strategy != "ccll":
            raise ValueError("alpha and beta are ccll options; this model's strategy is " + self.strategy)
        return options, calibration

    def _build_network(self, n_classes: int) -> None:
        torch.manual_seed(self.seed)
        base_options, calibration = self._split_options()
        model = build_model(self.architecture, self.input_shape, n_classes, **base_options)
        self.network = CalibratedNetwork(model, **calibration) if self.strategy == "ccll" else model
        self.network.to(self.device)

    def to(self, device: str | torch.device) -> "ContinualLearner":
        self.device = resolve_device(device)
        if self.network is not None:
            self.network.to(self.device)
        if self.consolidation is not None:
            self.consolidation.to(self.device)
        return self

    # --------------------------------------------------------------------------- inputs
    def _inputs(self, x) -> torch.Tensor:
        """Raw samples -> float tensor on the learner's device, with shape and value checks."""
        if isinstance(x, np.ndarray):
            if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
                raise ValueError(f"inputs must be numeric, got dtype {x.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(x))
        elif not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"each sample has shape {tuple(x.shape[1:])} but this model takes {self.input_shape}"
            )
        x = x.to(self.device, torch.float32) * self.input_scale
        if not torch.isfinite(x).all():
            raise ValueError("inputs contain NaN or infinite values")
        return x

    def _targets(self, y, task_key: str | None = None) -> torch.Tensor:
        """Raw labels -> output indices (the vocabulary's, or within a task's labels)."""
        vocabulary = self.task_labels[task_key] if task_key is not None and self._task_local(task_key) else self.labels
        index = {label: i for i, label in enumerate(vocabulary)}
        labels = plain_labels(y)
        unknown = unique_in_order([label for label in labels if label not in index])
        if unknown:
            raise ValueError(f"labels {unknown[:10]} are not known to this model (known: {vocabulary[:20]})")
        return torch.tensor([index[label] for label in labels], dtype=torch.long, device=self.device)

    def _task_local(self, task_key: str | None) -> bool:
        """Whether outputs are indexed within the task's own labels (CCLL heads) or the vocabulary."""
        return self.strategy == "ccll" and task_key is not None

    def _check_task(self, task_key: str | None) -> None:
        if task_key is not None and task_key not in self.task_labels:
            raise ValueError(f"task {task_key!r} has not been learnt by this model (learnt: {self.task_keys})")
        if task_key is None and self.strategy == "ccll":
            raise ValueError("a ccll model predicts per task: give the task (task_id) whose modules to use")

    def logits(self, x: torch.Tensor, task_key: str | None = None) -> torch.Tensor:
        """Logits over the vocabulary, or over ``task_key``'s labels only (task-aware)."""
        if self.strategy == "ccll":
            return self.network(x, task_key)
        logits = self.network(x)
        if task_key is None:
            return logits
        columns = torch.tensor([self.labels.index(label) for label in self.task_labels[task_key]], device=logits.device)
        return logits.index_select(1, columns)

    # ------------------------------------------------------------------------- learning
    def learn_task(self, task_key: str, train: TaskData, *, strategy: str | None = None,
                   validation: dict[str, TaskData] | None = None, train_config: TrainConfig | None = None,
                   ewc_lambda: float | Literal["auto"] | None = None,
                   progress: Callable[[Progress], None] | None = None,
                   should_cancel: Callable[[], bool] | None = None) -> UpdateResult:
        """One update: train on ``train``, consolidate, report validation before/after."""
        strategy = strategy or FAMILIES[self.strategy][0]
        if strategy not in FAMILIES[self.strategy]:
            raise ValueError(f"strategy {strategy!r} does not apply to a {self.strategy} model "
                             f"(allowed: {', '.join(FAMILIES[self.strategy])})")
        task_key = str(task_key)
        if task_key in self.task_labels:
            raise ValueError(f"task {task_key!r} has already been learnt")
        if strategy == "joint" and len(self._replay) != len(self.task_keys):
            raise ValueError("joint training needs every earlier task's data in memory: "
                             "learn all tasks of this learner with strategy 'joint' (benchmarks only)")
        if "." in task_key or not task_key:
            raise ValueError("task keys must be non-empty and contain no '.'")
        if self.strategy == "ewc" and self.consolidation is None:
            raise ValueError("this learner was loaded without its consolidation (Fisher and anchors); it cannot learn")
        config = train_config or TrainConfig()
        self.to(config.device)
        x, labels = self._inputs(train.x), plain_labels(train.y)
        if len(x) == 0:
            raise ValueError("the task has no training samples")
        task_labels = unique_in_order(labels)

        validation = dict(validation or {})
        earlier = [key for key in self.task_keys if key in validation]
        validation_before = {key: self._validation_accuracy(key, validation[key]) for key in earlier}

        # From here on the learner is mid-update: if this raises (cancel, bad input), discard it and reload.
        parameters_added = self._add_task(task_key, task_labels)
        self.task_labels[task_key] = task_labels
        y = self._targets(labels, task_key)
        if strategy == "joint":  # the multi-task upper bound: fresh weights, every task's data so far
            x, y = self._joint_data(x, labels)
            self._replay.append((self._inputs(train.x), labels))
            self._build_network(n_classes=len(self.labels))

        ewc_lambda = self._resolve_lambda(strategy, ewc_lambda)
        reporter = _Reporter(progress, total_steps=1, epochs=config.epochs)
        started = time.perf_counter()
        search, search_seconds = None, 0.0
        val_sets = {key: validation[key] for key in [*earlier, task_key] if key in validation}
        if ewc_lambda == "auto" and not val_sets:
            ewc_lambda = self.ewc.default_lambda  # nothing to choose with: documented fallback
        if ewc_lambda == "auto":
            final_loss, ewc_lambda, search = self._search_lambda(task_key, x, y, config, val_sets, reporter, should_cancel)
            search_seconds = time.perf_counter() - started
        else:
            trainer = self._trainer(self.network, task_key, x, y, config, ewc_lambda or 0.0)
            reporter.total_steps = trainer.total_steps
            final_loss = trainer.run(on_step=lambda loss, n: reporter.step("train", loss, n, trainer.epoch),
                                     should_cancel=should_cancel)
        train_seconds = time.perf_counter() - started

        reporter.phase_fraction("fisher", TRAIN_SHARE)
        fisher_recipe = {}
        if self.strategy == "ewc":
            n_fisher = self._consolidate(task_key, x, y, config, on_chunk=lambda done, total: reporter.phase_fraction(
                "fisher", TRAIN_SHARE + FISHER_SHARE * done / total))
            fisher_recipe = self.ewc.recipe(n_fisher)
        else:  # ccll: the trained task's BatchNorm statistics, recomputed from its final weights
            self.network.refresh_statistics(task_key, x.split(config.batch_size))
        self.task_keys.append(task_key)
        reporter.phase_fraction("evaluate", TRAIN_SHARE + FISHER_SHARE)
        validation_after = {key: self._validation_accuracy(key, data) for key, data in val_sets.items()}
        result = UpdateResult(
            task_key=task_key, strategy=strategy,
            ewc_lambda=None if strategy in ("finetune", "joint", "ccll") or len(self.task_keys) == 1 else float(ewc_lambda),
            lambda_search=search, fisher_recipe=fisher_recipe,
            train_config=config.as_dict(), train_seconds=train_seconds, search_seconds=search_seconds,
            final_loss=final_loss, validation_before=validation_before, validation_after=validation_after,
            parameters_added=parameters_added,
        )
        self.updates.append({"task_key": task_key, "strategy": strategy, "ewc_lambda": result.ewc_lambda,
                             "fisher_recipe": result.fisher_recipe})
        reporter.phase_fraction("evaluate", 1.0)
        return result

    def _add_task(self, task_key: str, task_labels: list[Label]) -> int:
        """Grow the head for new labels (EWC family) or add the task's modules (CCLL); return parameters added."""
        before = sum(p.numel() for p in self.network.parameters()) if self.network is not None else 0
        if self.strategy == "ccll":
            if self.network is None:
                self._build_network(n_classes=1)
            return self.network.add_task(task_key, len(task_labels))
        self.labels += [label for label in task_labels if label not in self.labels]
        if self.network is None:
            self._build_network(n_classes=len(self.labels))
        else:
            grow_head(self.network, len(self.labels))
            self.consolidation.match_shapes(self.network)
        return sum(p.numel() for p in self.network.parameters()) - before

    def _joint_data(self, x: torch.Tensor, labels: list[Label]) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [x] + [old_x for old_x, _ in self._replay]
        ys = labels + [label for _, old_labels in self._replay for label in old_labels]
        return torch.cat(xs), self._targets(ys)

    def _resolve_lambda(self, strategy: str, ewc_lambda) -> float | str:
        if strategy != "ewc" or self.consolidation.is_empty:
            return 0.0
        value = self.ewc.ewc_lambda if ewc_lambda is None else ewc_lambda
        if value != "auto" and (not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"ewc_lambda must be a non-negative number or 'auto', got {value!r}")
        return value

    def _trainer(self, network: nn.Module, task_key: str, x, y, config: TrainConfig, ewc_lambda: float) -> Trainer:
        network.train()
        if self.strategy == "ccll":
            first_task = len(self.task_keys) == 0
            parameters = list(network.parameters()) if first_task else network.task_parameters(task_key)
            parameters = [p for p in parameters if p.requires_grad]
            return Trainer(lambda xb: network(xb, task_key), parameters, x, y, config)
        parameters = [p for p in network.parameters() if p.requires_grad]
        if ewc_lambda == 0:
            return Trainer(network, parameters, x, y, config)
        if config.optimizer == "sgd":  # implicit step: stable for every lambda (see Consolidation.proximal_step)
            proximal = self.consolidation.proximal_step(network, ewc_lambda, config.lr)
            return Trainer(network, parameters, x, y, config, after_step=proximal)
        gradient = self.consolidation.penalty_gradient(network, ewc_lambda)
        return Trainer(network, parameters, x, y, config, add_penalty_gradient=gradient)

    def _search_lambda(self, task_key, x, y, config, val_sets, reporter, should_cancel):
        """Successive halving over the candidate λs; the winner's weights become the network."""
        candidates = self.ewc.lambda_candidates

        trainers: dict[int, tuple[nn.Module, Trainer]] = {}

        def start(value: float):
            network = copy.deepcopy(self.network)
            trainers[id(network)] = (network, self._trainer(network, task_key, x, y, config, value))
            return network

        def advance(network, n_steps: int) -> None:
            _, trainer = trainers[id(network)]
            trainer.run(n_steps, on_step=lambda loss, n: reporter.step("lambda_search", loss, n, trainer.epoch),
                        should_cancel=should_cancel)

        def score(network) -> dict[str, float]:
            saved, self.network = self.network, network
            try:
                return {key: self._validation_accuracy(key, data) for key, data in val_sets.items()}
            finally:
                self.network = saved

        total_steps = -(-len(x) // config.batch_size) * config.epochs
        reporter.total_steps = int(total_steps * search_cost(len(candidates)))
        winner, entries = successive_halving(candidates, start, advance, score, total_steps)
        self.network = winner.state
        final_loss = trainers[id(winner.state)][1].last_loss
        steps_per_epoch = total_steps / config.epochs
        search = [{"lambda": e.value, "validation_accuracy": e.score, "per_task": e.per_task, "steps": e.steps,
                   "epochs": e.steps / steps_per_epoch} for e in entries]
        return final_loss, winner.value, search

    def _validation_accuracy(self, task_key: str, data: TaskData) -> float:
        """Validation accuracy scored as test accuracy is: vocabulary-wide for EWC, per task for CCLL."""
        return self._evaluate(data, task_key if self.strategy == "ccll" else None).accuracy

    @torch.no_grad()
    def _consolidate(self, task_key: str, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                     on_chunk: Callable[[int, int], None] | None = None) -> int:
        """Estimate this task's Fisher on (a seeded sample of) its training data and store it with the
        anchor; returns the number of samples it was estimated on."""
        recipe = self.ewc.fisher
        generator = torch.Generator().manual_seed(config.seed)
        index = torch.randperm(len(x), generator=generator)[: recipe.n_samples].to(x.device)
        with torch.enable_grad():
            fisher = diagonal_fisher(self.network, x[index], y[index], label_mode=recipe.label_mode,
                                     chunk_size=recipe.chunk_size, on_chunk=on_chunk)
        anchor = {name: p.detach() for name, p in self.network.named_parameters()}
        self.consolidation.consolidate(task_key, fisher, anchor)
        return len(index)

    # ----------------------------------------------------------------------- inference
    def _evaluate(self, data: TaskData, task_key: str | None) -> Evaluation:
        x = self._inputs(data.x)
        y = self._targets(data.y, task_key if self._task_local(task_key) else None)
        if task_key is not None and not self._task_local(task_key):
            allowed = self.task_labels.get(task_key)
            if allowed is not None:  # task-aware over the vocabulary: targets become positions in the task's labels
                position = {self.labels.index(label): i for i, label in enumerate(allowed)}
                if any(int(t) not in position for t in y):
                    raise ValueError(f"labels outside task {task_key!r}'s labels {allowed}")
                y = torch.tensor([position[int(t)] for t in y], dtype=torch.long, device=self.device)
        self.network.eval()
        return evaluate_logits(lambda xb: self.logits(xb, task_key), x, y)

    def evaluate(self, data: TaskData, task_key: str | None = None) -> Evaluation:
        """Accuracy and loss; with ``task_key``, task-aware (restricted to that task's labels)."""
        self._ready()
        self._check_task(task_key)
        return self._evaluate(data, task_key)

    @torch.no_grad()
    def predict(self, x, task_key: str | None = None, top_k: int = 1) -> list[Prediction]:
        """Most probable label per sample, with its probability and the ``top_k`` best."""
        self._ready()
        self._check_task(task_key)
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        inputs = self._inputs(x)
        self.network.eval()
        probs = F.softmax(self.logits(inputs, task_key).float(), dim=-1)
        vocabulary = self.task_labels[task_key] if task_key is not None else self.labels
        k = min(top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=-1)
        predictions = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist()):
            ranked = [(vocabulary[i], p) for i, p in zip(row_indices, row_values)]
            predictions.append(Prediction(label=ranked[0][0], probability=ranked[0][1], top_k=ranked))
        return predictions

    def _ready(self) -> None:
        if self.network is None or not self.task_keys:
            raise ValueError("this model has not learnt any task yet")

    def parameter_counts(self) -> dict:
        if self.network is None:
            return {"base": 0, "per_task": {}, "total": 0}
        total = sum(p.numel() for p in self.network.parameters())
        if self.strategy == "ccll":
            counts = self.network.parameter_counts()
            return {**counts, "total": total}
        return {"base": total, "per_task": {}, "total": total}

    # --------------------------------------------------------------------------- state
    def _metadata(self) -> dict:
        return {
            "format": FORMAT, "architecture": self.architecture, "input_shape": list(self.input_shape),
            "strategy": self.strategy, "architecture_options": self.architecture_options,
            "ewc": self.ewc.as_dict(), "input_scale": self.input_scale, "seed": self.seed,
            "labels": self.labels, "task_keys": self.task_keys, "task_labels": self.task_labels,
            "updates": self.updates,
        }

    def export_weights(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Everything a prediction needs: the network's state and the learner's metadata."""
        self._ready()
        tensors = {f"model.{name}": t for name, t in self.network.state_dict().items()}
        return tensors, {"retain": json.dumps(self._metadata())}

    def export_consolidation(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Fisher and anchors of every consolidated task (empty for CCLL, which needs none)."""
        if self.consolidation is None:
            return {}, {"retain": json.dumps({"format": FORMAT, "mode": None, "order": []})}
        meta = {"format": FORMAT, "mode": self.consolidation.mode, "gamma": self.consolidation.gamma,
                "order": list(self.consolidation.entries)}
        return self.consolidation.tensors(), {"retain": json.dumps(meta)}

    @classmethod
    def from_exports(cls, weights: tuple[dict, dict], consolidation: tuple[dict, dict] | None = None) -> "ContinualLearner":
        tensors, metadata = weights
        meta = json.loads(metadata["retain"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} weights payload")
        ewc = EWCConfig(**{**meta["ewc"], "lambda_candidates": tuple(meta["ewc"]["lambda_candidates"])})
        learner = cls(architecture=meta["architecture"], input_shape=tuple(meta["input_shape"]),
                      strategy=meta["strategy"], architecture_options=meta["architecture_options"], ewc=ewc,
                      input_scale=meta["input_scale"], seed=meta["seed"])
        learner.labels = [plain_label(label) for label in meta["labels"]]
        learner.task_keys = list(meta["task_keys"])
        learner.task_labels = {k: [plain_label(label) for label in v] for k, v in meta["task_labels"].items()}
        learner.updates = meta.get("updates", [])
        if learner.strategy == "ccll":
            learner._build_network(n_classes=1)
            for key in learner.task_keys:
                learner.network.add_task(key, len(learner.task_labels[key]))
        else:
            learner._build_network(n_classes=len(learner.labels))
        state = {name.removeprefix("model."): t for name, t in tensors.items()}
        learner.network.load_state_dict(state, strict=True)
        if learner.strategy == "ewc":
            learner.consolidation = None
            if consolidation is not None:
                c_tensors, c_metadata = consolidation
                c_meta = json.loads(c_metadata["retain"])
                learner.consolidation = Consolidation.from_tensors(c_tensors, c_meta["mode"], c_meta["gamma"], c_meta["order"])
        return learner

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / WEIGHTS_FILE).write_bytes(to_safetensors_bytes(*self.export_weights()))
        (directory / CONSOLIDATION_FILE).write_bytes(to_safetensors_bytes(*self.export_consolidation()))

    @classmethod
    def load(cls, directory: str | Path, with_consolidation: bool = True) -> "ContinualLearner":
        directory = Path(directory)
        weights = from_safetensors_bytes((directory / WEIGHTS_FILE).read_bytes())
        consolidation = from_safetensors_bytes((directory / CONSOLIDATION_FILE).read_bytes()) if with_consolidation else None
        return cls.from_exports(weights, consolidation)


class _Reporter:
    """Turns per-step callbacks into ``Progress`` reports over the whole update."""

    def __init__(self, callback: Callable[[Progress], None] | None, total_steps: int, epochs: int):
        self.callback, self.total_steps, self.epochs = callback, total_steps, epochs
        self.steps = 0
        self.meter = ThroughputMeter()
        self.loss: float | None = None

    def step(self, phase: str, loss: float, n_samples: int, epoch: int) -> None:
        self.steps += 1
        self.loss = loss
        rate = self.meter.add(n_samples)
        if self.callback is not None:
            fraction = TRAIN_SHARE * min(1.0, self.steps / max(1, self.total_steps))
            self.callback(Progress(phase, fraction, epoch, self.epochs, loss, rate))

    def phase_fraction(self, phase: str, fraction: float) -> None:
        if self.callback is not None:
            self.callback(Progress(phase, fraction, self.epochs, self.epochs, self.loss, None))


__all__ = ["ContinualLearner", "Prediction", "UpdateResult", "TrainingCancelled"]
