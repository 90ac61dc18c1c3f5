"""The continual learner: one model that learns a sequence of tasks and keeps what it learnt.

A learner owns a network, a growing label vocabulary, its fixed input scaling, and the state its
*family* keeps between updates (EWC family: the consolidation, Fisher + anchors of every task
learnt so far). The family is the kind of network and state (``ewc`` | ``ccll``); a *strategy*
is the kind of update (``app.learning.strategies``: ewc, finetune, ccll, or any registered
class), and each strategy belongs to one family. One call, ``learn_task``, is one update:

1. prepare: the strategy makes room for the task (EWC family: grow the head for the task's new
   labels; CCLL: add the task's calibration modules and classifier);
2. train on the task through the strategy's hooks: EWC adds λ/2 Σ F (θ − θ*)² to the task loss
   (λ chosen on validation data when ``"auto"``), fine-tuning trains on the task loss alone,
   CCLL trains the task's own modules (and the base, on the first task only); the budget is a
   floor of epochs, then early stopping on every learnt task's validation score up to a cap
   (``TrainConfig``; the λ search's candidates train the floor, its winner goes on);
3. consolidate: keep what the next update needs (EWC family: this task's diagonal Fisher with
   the anchor weights, fine-tuned tasks too; CCLL: the task's BatchNorm statistics);
4. report validation accuracy of every task before and after, for the forgetting gate.

State exports as two safetensors payloads: the weights (all a prediction needs) and the
consolidation (the family's state: Fisher + anchors, all a later update needs).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from app.learning.config import EWCConfig, TrainConfig
from app.learning.data import Label, TaskData, as_samples, plain_label, plain_labels, unique_in_order
from app.learning.evaluation import Evaluation, evaluate_logits
from app.learning.ewc_penalty import Consolidation
from app.learning.image_inputs import ImagePreprocessing
from app.learning.imported import ImportPlan, build_imported
from app.learning.lambda_search import constrained_score, search_cost, successive_halving
from app.learning.memory import RehearsalMemory
from app.learning.models import build_model
from app.learning.preprocessing import InputScaling
from app.learning.state import from_safetensors_bytes, to_safetensors_bytes
from app.learning.strategies import Strategy, family_strategy, options_of_other_families, strategy_class
from app.learning.text_source import (
    ADAPTER_PREFIX,
    TEXT_ARCHITECTURE,
    TEXT_INPUT_SHAPE,
    TEXT_TRAIN_DEFAULTS,
    HuggingFaceTextSource,
)
from app.learning.training import (
    Progress,
    ThroughputMeter,
    Trainer,
    TrainingStopped,
    resolve_device,
    train_with_early_stopping,
)

FORMAT = "retain.learner/1"
PREPROCESSING_OPTIONS = ("standardize",)  # options the learner reads itself (never passed to the network)
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
    capacity_warning: str | None = None  # set when every λ tried lost an old task (see capacity_warning)
    strategy_choice: dict | None = None  # auto: {"strategy": the one it learnt with, "reason": why}
    replay_memory: dict | None = None  # the rehearsal memory after the update: samples, bytes, capacity
    new_labels: list = field(default_factory=list)  # labels the model had never seen: its head grew for them

    def as_dict(self) -> dict:
        return asdict(self)


class ContinualLearner:
    """See the module docstring; ``create`` or ``from_exports``/``load`` one, never call ``__init__`` directly."""

    def __init__(
        self,
        *,
        architecture: str,
        input_shape: tuple[int | str, ...],
        family: str,
        architecture_options: dict,
        ewc: EWCConfig,
        input_scale: float,
        seed: int,
    ):
        self._family = family_strategy(family)  # defines the network, logits and stored state
        self.architecture, self.family = architecture, family
        self.input_shape: tuple[Any, ...] = tuple(s if isinstance(s, str) else int(s) for s in input_shape)  # ("text",)
        self.architecture_options, self.ewc, self.seed = dict(architecture_options), ewc, seed
        self.input_scaling = InputScaling(
            scale=float(input_scale), standardize=_standardize_option(architecture_options)
        )
        # An imported model's input preparation (mean/std, resize), after the input scaling; None for retain's own.
        preprocessing = self.architecture_options.get("preprocessing")
        self.preprocessing = (
            ImagePreprocessing.from_options(preprocessing, self.input_shape) if preprocessing is not None else None
        )
        self.labels: list[Label] = []
        self.task_keys: list[str] = []
        self.task_labels: dict[str, list[Label]] = {}
        self.network: nn.Module | None = None
        self.text_source: HuggingFaceTextSource | None = None  # text models: config, tokenizer, what trains
        self.consolidation: Consolidation | None = None  # the EWC family's state (set by its init_state)
        self.memory: RehearsalMemory | None = None  # the EWC family's rehearsal memory (replay strategies)
        self._family.init_state(self)
        self.updates: list[dict] = []  # λ and Fisher recipe of every update, for the registry
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------------- building
    @classmethod
    def create(
        cls,
        architecture: str,
        input_shape: tuple[int, ...],
        family: str = "ewc",
        architecture_options: dict | None = None,
        ewc: EWCConfig | None = None,
        input_scale: float = 1.0,
        seed: int = 0,
    ) -> ContinualLearner:
        learner = cls(
            architecture=architecture,
            input_shape=input_shape,
            family=family,
            architecture_options=architecture_options or {},
            ewc=ewc or EWCConfig(),
            input_scale=input_scale,
            seed=seed,
        )
        learner._family.check_architecture(architecture)
        learner.build_network(n_classes=1)  # fails now, not at the first task, on bad options or shapes
        learner.network = None
        return learner

    @classmethod
    def from_text_directory(
        cls,
        directory: str | Path,
        options: dict | None = None,
        family: str = "ewc",
        ewc: EWCConfig | None = None,
        seed: int = 0,
        pretrained: nn.Module | None = None,
    ) -> ContinualLearner:
        """A learner around a Hugging Face sequence classifier saved with ``save_pretrained``
        (``app.learning.text_source``): its weights, its head's labels (``id2label``) and its tokenizer.
        ``options``: ``max_length``, ``trainable``, ``lora_rank`` and the family's (``memory_size``, ...).
        ``pretrained``: the directory's classifier already loaded (``plan_text_import(keep_model=True)``)."""
        learner = cls(
            architecture=TEXT_ARCHITECTURE,
            input_shape=TEXT_INPUT_SHAPE,
            family=family,
            architecture_options=options or {},
            ewc=ewc or EWCConfig(),
            input_scale=1.0,
            seed=seed,
        )
        if learner.predicts_per_task:
            raise ValueError(f"text models take the ewc family's strategies; {family} models predict per task")
        source_options, _ = learner._split_options()
        learner.text_source, state, labels = HuggingFaceTextSource.read_directory(directory, source_options, pretrained)
        network = learner.text_source.build(len(labels), adapters=False)
        network.model.load_state_dict(state, strict=True)
        if learner.text_source.mode == "lora":
            network.add_adapters(learner.text_source.lora_rank)
        learner.network = network
        learner.labels = list(labels)
        learner._family.init_state(learner)  # again, now that it is a text model (a memory bounded in bytes)
        return learner

    @property
    def is_text(self) -> bool:
        return self.text_source is not None

    @property
    def input_scale(self) -> float:
        """The fixed factor raw samples are multiplied by (1/255 for uint8 images), before any standardization."""
        return self.input_scaling.scale

    @property
    def train_defaults(self) -> dict:
        """TrainConfig fields this model trains with unless a task says otherwise: transformers fine-tune
        with Adam at a small rate (``TEXT_TRAIN_DEFAULTS``); retain's own networks take the library's."""
        return dict(TEXT_TRAIN_DEFAULTS) if self.is_text else {}

    @property
    def predicts_per_task(self) -> bool:
        """Whether outputs are per task (CCLL): prediction then needs the task, and scoring is per task."""
        return self._family.predicts_per_task

    def _split_options(self) -> tuple[dict, dict]:
        """The architecture's own options (text models: the source's), and the family's (ccll: alpha, beta)."""
        options = {key: v for key, v in self.architecture_options.items() if key not in PREPROCESSING_OPTIONS}
        options.pop("preprocessing", None)  # an imported model's image preprocessing: the learner's (``_inputs``)
        own = {key: options.pop(key) for key in self._family.options if key in options}
        elsewhere = options_of_other_families(self.family)
        misplaced = [key for key in options if key in elsewhere]
        if misplaced:
            raise ValueError(
                f"{' and '.join(misplaced)} are {elsewhere[misplaced[0]]} options; this model's family is {self.family}"
            )
        return options, own

    @property
    def built_network(self) -> nn.Module:
        """The network; a ValueError until a task has built it (or a load has rebuilt it)."""
        if self.network is None:
            raise ValueError("this model has no network yet: it has not learnt any task")
        return self.network

    def build_network(self, n_classes: int) -> None:
        """A fresh network from the learner's seed: the architecture's model, as the family wraps it."""
        torch.manual_seed(self.seed)
        base_options, family_options = self._split_options()
        model: nn.Module
        if self.text_source is not None:
            model = self.text_source.build(n_classes)
        elif "imported" in base_options:
            model = build_imported(self.architecture, self.input_shape, n_classes, base_options["imported"])
        else:
            model = build_model(self.architecture, self.input_shape, n_classes, **base_options)
        self.network = self._family.network_from(model, family_options).to(self.device)

    @classmethod
    def import_model(cls, plan: ImportPlan, input_scale: float = 1.0, seed: int = 0) -> ContinualLearner:
        """A learner whose network is the checked import (``app.learning.imported.plan_import``): the
        file's weights, its head and labels kept (or an empty label head with ``new_head``). It
        predicts at once; no task is learnt yet (``adopt_base_task`` records what it already knows)."""
        options: dict = {"imported": plan.imported, "preprocessing": plan.preprocessing}
        if plan.memory_size is not None:
            options["memory_size"] = plan.memory_size
        learner = cls(
            architecture=plan.source,
            input_shape=plan.input_shape,
            family="ewc",
            architecture_options=options,
            ewc=EWCConfig(),
            input_scale=input_scale,
            seed=seed,
        )
        torch.manual_seed(seed)  # LoRA adapters' initialisation
        learner.network = build_imported(
            plan.source, plan.input_shape, len(plan.labels), plan.imported, weights=plan.weights, loaded=plan.loaded
        )
        learner.labels = list(plan.labels)
        return learner

    def adopt_base_task(
        self, task_key: str, data: TaskData, train_config: TrainConfig | None = None, progress=None
    ) -> dict:
        """Record what an imported model already knows as task ``task_key`` without training: its
        Fisher on ``data`` (the trainable parameters only) with the imported weights as anchor, and
        its share of the rehearsal memory, so later updates protect it. Returns the Fisher recipe."""
        task_key = self._new_task_key(task_key)
        config = train_config or TrainConfig()
        self.to(config.device)
        if len(data) == 0:
            raise ValueError("the base data has no training samples")
        x, labels = self._inputs(data.x), plain_labels(data.y)
        unknown = unique_in_order([label for label in labels if label not in self.labels])
        if unknown:
            raise ValueError(f"base data labels {unknown[:10]} are not among the imported head's labels")
        method = strategy_class("ewc_replay" if self.memory is not None and self.memory.capacity else "ewc")()
        self.task_labels[task_key] = unique_in_order(labels)
        y = self.targets(labels)
        reporter = _Reporter(progress, total_steps=1, epochs=1)
        recipe = self._consolidate(method, task_key, x, y, config, reporter)
        self.updates.append({"task_key": task_key, "strategy": "import", "ewc_lambda": None, "fisher_recipe": recipe})
        return recipe

    def to(self, device: str | torch.device) -> ContinualLearner:
        self.device = resolve_device(device)
        if self.network is not None:
            self.network.to(self.device)
        if self.consolidation is not None:
            self.consolidation.to(self.device)
        if self.memory is not None:
            self.memory.to(self.device)
        return self

    # --------------------------------------------------------------------------- inputs
    def _inputs(self, x, pad_to_max_length: bool = True) -> torch.Tensor:
        """Raw samples -> network inputs: checked (``as_samples``), on the learner's device, scaled
        and standardized (``InputScaling``), then an imported model's resize and mean/std
        (``ImagePreprocessing``). Every input of the model passes here. Texts -> token ids (padded to
        ``max_length``, or to the longest text when not ``pad_to_max_length``)."""
        if self.text_source is not None:
            return self.text_source.encode(x, pad_to_max_length).to(self.device)
        x = self.input_scaling(as_samples(x, self.input_shape).to(self.device))
        return self.preprocessing(x) if self.preprocessing is not None else x

    def targets(self, y, task_key: str | None = None) -> torch.Tensor:
        """Raw labels -> output indices (the vocabulary's, or within a task's labels when outputs are per task)."""
        vocabulary = self.task_labels[task_key] if task_key is not None and self.predicts_per_task else self.labels
        index = {label: i for i, label in enumerate(vocabulary)}
        labels = plain_labels(y)
        unknown = unique_in_order([label for label in labels if label not in index])
        if unknown:
            raise ValueError(f"labels {unknown[:10]} are not known to this model (known: {vocabulary[:20]})")
        return torch.tensor([index[label] for label in labels], dtype=torch.long, device=self.device)

    def _task_local(self, task_key: str | None) -> bool:
        """Whether outputs are indexed within the task's own labels (CCLL heads) or the vocabulary."""
        return self.predicts_per_task and task_key is not None

    def _check_task(self, task_key: str | None) -> None:
        if task_key is not None and task_key not in self.task_labels:
            raise ValueError(f"task {task_key!r} has not been learnt by this model (learnt: {self.task_keys})")
        if task_key is None and self.predicts_per_task:
            raise ValueError(f"a {self.family} model predicts per task: give the task (task_id) whose modules to use")

    def logits(self, x: torch.Tensor, task_key: str | None = None) -> torch.Tensor:
        """Logits over the vocabulary, or over ``task_key``'s labels only (task-aware)."""
        return self._family.logits(self, self.built_network, x, task_key)

    # ------------------------------------------------------------------------- learning
    def learn_task(
        self,
        task_key: str,
        train: TaskData,
        *,
        strategy: str | Strategy | None = None,
        validation: dict[str, TaskData] | None = None,
        train_config: TrainConfig | None = None,
        ewc_lambda: float | Literal["auto"] | None = None,
        progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> UpdateResult:
        """One update, the four steps of the module docstring: 1. prepare, 2. train on ``train``,
        3. consolidate, 4. report every task's validation accuracy before and after.

        ``strategy``: a registered name, a ``Strategy`` instance (one that keeps memory across
        updates), or None for the family's own. ``validation`` holds the validation split of any
        learnt task and of this one (λ search and the forgetting gate). Raises ``TrainingStopped``
        when ``should_stop()`` turns true."""
        method = self._strategy(strategy)
        task_key = self._new_task_key(task_key)
        config = train_config or TrainConfig()
        self.to(config.device)
        if len(train) == 0:
            raise ValueError("the task has no training samples")
        if not self.task_keys and not self.is_text:  # the first task fixes the standardization (later tasks keep it)
            self.input_scaling.fit(train.x, as_samples(train.x, self.input_shape))
        x, labels = self._inputs(train.x), plain_labels(train.y)
        method = method.for_task(self, unique_in_order(labels))  # auto: ewc, or ewc_replay for new labels
        config = method.train_config(config)
        given = validation or {}
        validation = {key: given[key] for key in [*self.task_keys, task_key] if key in given}  # learnt tasks, this one
        before = {
            key: self._validation_accuracy(self.built_network, key, data)
            for key, data in validation.items()
            if key != task_key
        }
        resolved_lambda = method.resolve_lambda(self, ewc_lambda)
        new_labels = [label for label in unique_in_order(labels) if label not in self.labels]
        reporter = _Reporter(progress, total_steps=1, epochs=config.epochs_for(len(x)))

        # From here on the learner is mid-update: if this raises (stopped, bad input), discard it and reload.
        parameters_added, x, y = self._prepare(method, task_key, x, labels)  # 1.
        trained = self._train(
            method, task_key, x, y, config, resolved_lambda, validation, before, reporter, should_stop
        )  # 2.
        fisher_recipe = self._consolidate(method, task_key, x, y, config, reporter)  # 3.
        after = {
            key: self._validation_accuracy(self.built_network, key, data) for key, data in validation.items()
        }  # 4.

        result = UpdateResult(
            task_key=task_key,
            strategy=method.name,
            ewc_lambda=float(trained.ewc_lambda) if method.uses_lambda and len(self.task_keys) > 1 else None,
            lambda_search=trained.search,
            fisher_recipe=fisher_recipe,
            train_config={
                **config.as_dict(),
                "epochs_trained": trained.budget["epochs_trained"],
                "budget": trained.budget,
                **({"strategy_choice": method.choice} if method.choice else {}),
            },
            train_seconds=trained.seconds,
            search_seconds=trained.search_seconds,
            final_loss=trained.final_loss,
            validation_before=before,
            validation_after=after,
            parameters_added=parameters_added,
            capacity_warning=capacity_warning(trained.search, self.ewc.capacity_warning_drop),
            strategy_choice=method.choice,
            replay_memory=self.memory_footprint(),
            new_labels=new_labels,
        )
        self.updates.append(
            {
                "task_key": task_key,
                "strategy": method.name,
                **({"strategy_choice": method.choice} if method.choice else {}),
                "ewc_lambda": result.ewc_lambda,
                "fisher_recipe": result.fisher_recipe,
            }
        )
        reporter.phase_fraction("evaluate", 1.0)
        return result

    def _strategy(self, strategy: str | Strategy | None) -> Strategy:
        method = strategy if isinstance(strategy, Strategy) else strategy_class(strategy or self.family)()
        method.check_applies(self)
        return method

    def _new_task_key(self, task_key) -> str:
        task_key = str(task_key)
        if task_key in self.task_labels:
            raise ValueError(f"task {task_key!r} has already been learnt")
        if "." in task_key or not task_key:
            raise ValueError("task keys must be non-empty and contain no '.'")
        return task_key

    def _prepare(
        self, method: Strategy, task_key: str, x: torch.Tensor, labels: list[Label]
    ) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Step 1: the strategy makes room for the task; returns the parameters added and what to train on."""
        task_labels = unique_in_order(labels)
        known = len(self.labels) + sum(label not in self.labels for label in task_labels)
        with torch.random.fork_rng(devices=[]):  # what a strategy adds (head rows, a task's modules) is
            torch.manual_seed(self.seed + known)  # drawn alike whatever ran before in the process
            parameters_added = method.prepare(self, task_key, task_labels)
        self.task_labels[task_key] = task_labels
        return (parameters_added, *method.training_set(self, task_key, x, labels))

    def _train(
        self,
        method: Strategy,
        task_key: str,
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        ewc_lambda: float | str,
        validation: dict[str, TaskData],
        before: dict[str, float],
        reporter: _Reporter,
        should_stop: Callable[[], bool] | None,
    ) -> _Training:
        """Step 2: train ``self.network`` at ``ewc_lambda``, or search λ on validation data if it is "auto"."""
        started = time.perf_counter()
        if ewc_lambda == "auto" and not validation:
            ewc_lambda = self.ewc.default_lambda  # nothing to choose with: documented fallback
        chosen: float
        if ewc_lambda == "auto":  # every candidate trains the floor; the winner goes on below
            trainer, chosen, search = self._search_lambda(
                method, task_key, x, y, config, validation, before, reporter, should_stop
            )
            steps_run, phase = sum(entry["steps"] for entry in search), "lambda_search"
        else:
            chosen = float(ewc_lambda)  # a number: resolve_lambda refuses any other string
            trainer = self._trainer(method, self.built_network, task_key, x, y, config, chosen)
            reporter.total_steps, steps_run, search, phase = trainer.total_steps, 0, None, "train"
        floor_steps = trainer.steps_done  # 0 unless the search trained it already
        # The budget: the floor, then early stopping on every learnt task's validation score (the
        # constrained mean the λ search ranks by), up to the cap; no validation data, the floor only.
        max_drop = self.ewc.max_old_task_drop

        def score(network):
            return constrained_score(
                {key: self._validation_accuracy(network, key, data) for key, data in validation.items()},
                before,
                max_drop,
            )

        def on_step(loss: float, n: int) -> None:
            reporter.epochs = trainer.epochs  # early stopping adds epochs above the floor
            reporter.step(phase, loss, n, trainer.epoch)

        epochs = train_with_early_stopping(
            trainer,
            self.built_network,
            score,
            config.patience if validation else 0,
            on_step=on_step,
            should_stop=should_stop,
        )
        seconds = time.perf_counter() - started
        budget = {
            "floor_epochs": config.epochs_for(len(x), trainer.replay_batch is not None),
            "max_epochs": trainer.max_epochs,
            "epochs_run": trainer.epochs,
            "epochs_trained": epochs,
            "steps_run": steps_run + trainer.steps_done - floor_steps,
            "samples_per_step": config.batch_size,
        }
        return _Training(trainer.last_loss, chosen, search, seconds if search else 0.0, seconds, budget)

    def _trainer(
        self, method: Strategy, network: nn.Module, task_key: str, x, y, config: TrainConfig, ewc_lambda: float
    ) -> Trainer:
        """The fixed training loop on ``network``, with the strategy's parameters, forward pass and step hooks."""
        network.train()
        parameters = method.trainable_parameters(self, network, task_key)
        return Trainer(
            method.train_forward(network, task_key),
            parameters,
            x,
            y,
            config,
            **method.step_hooks(self, network, ewc_lambda, config),
        )

    def _search_lambda(self, method, task_key, x, y, config, validation, before, reporter, should_stop):
        """Successive halving over the candidate λs, each training a copy of the network for the budget's
        floor, ranked by mean validation accuracy among those that keep every old task within
        ``EWCConfig.max_old_task_drop`` of ``before``; the winner's copy becomes the network, and its
        trainer is returned to go on (early stopping)."""
        candidates = self.ewc.lambda_candidates
        trainers: dict[int, Trainer] = {}  # id(candidate network) -> its trainer

        def start(value: float) -> nn.Module:
            network = copy.deepcopy(self.built_network)
            trainers[id(network)] = self._trainer(method, network, task_key, x, y, config, value)
            return network

        def advance(network: nn.Module, n_steps: int) -> None:
            trainer = trainers[id(network)]
            trainer.run(
                n_steps,
                on_step=lambda loss, n: reporter.step("lambda_search", loss, n, trainer.epoch),
                should_stop=should_stop,
            )

        def score(network: nn.Module) -> dict[str, float]:
            return {key: self._validation_accuracy(network, key, data) for key, data in validation.items()}

        probe = self._trainer(method, self.built_network, task_key, x, y, config, candidates[0])  # the floor's steps
        total_steps, steps_per_epoch = probe.total_steps, probe.steps_per_epoch
        reporter.total_steps = int(total_steps * search_cost(len(candidates)))
        winner, entries = successive_halving(
            candidates, start, advance, score, total_steps, before=before, max_drop=self.ewc.max_old_task_drop
        )
        self.network = winner.state
        search = [
            {
                "lambda": e.value,
                "validation_accuracy": e.score,
                "per_task": e.per_task,
                "steps": e.steps,
                "epochs": e.steps / steps_per_epoch,
                "worst_old_task_drop": e.worst_drop,
                "keeps_old_tasks": e.keeps_old_tasks(self.ewc.max_old_task_drop),
            }
            for e in entries
        ]
        return trainers[id(winner.state)], winner.value, search

    def _consolidate(
        self,
        method: Strategy,
        task_key: str,
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        reporter: _Reporter,
    ) -> dict:
        """Step 3: the strategy keeps what later updates need (returns the Fisher recipe); from
        here on the task counts as learnt."""
        reporter.phase_fraction("fisher", TRAIN_SHARE)
        fisher_recipe = method.consolidate(
            self,
            task_key,
            x,
            y,
            config,
            on_chunk=lambda done, total: reporter.phase_fraction("fisher", TRAIN_SHARE + FISHER_SHARE * done / total),
        )
        self.task_keys.append(task_key)
        reporter.phase_fraction("evaluate", TRAIN_SHARE + FISHER_SHARE)
        return fisher_recipe

    def _validation_accuracy(self, network: nn.Module, task_key: str, data: TaskData) -> float:
        """Validation accuracy of ``network`` scored as test accuracy is: vocabulary-wide, or per task
        when outputs are per task."""
        return self._evaluate(network, data, task_key if self.predicts_per_task else None).accuracy

    # ----------------------------------------------------------------------- inference
    def _evaluate(self, network: nn.Module, data: TaskData, task_key: str | None) -> Evaluation:
        x = self._inputs(data.x)
        y = self.targets(data.y, task_key)
        if task_key is not None and not self._task_local(task_key):
            allowed = self.task_labels.get(task_key)
            if allowed is not None:  # task-aware over the vocabulary: targets become positions in the task's labels
                position = {self.labels.index(label): i for i, label in enumerate(allowed)}
                if any(int(t) not in position for t in y):
                    raise ValueError(f"labels outside task {task_key!r}'s labels {allowed}")
                y = torch.tensor([position[int(t)] for t in y], dtype=torch.long, device=self.device)
        network.eval()
        return evaluate_logits(lambda xb: self._family.logits(self, network, xb, task_key), x, y)

    def evaluate(self, data: TaskData, task_key: str | None = None) -> Evaluation:
        """Accuracy and loss; with ``task_key``, task-aware (restricted to that task's labels)."""
        self._ready()
        self._check_task(task_key)
        return self._evaluate(self.built_network, data, task_key)

    @torch.no_grad()
    def predict(self, x, task_key: str | None = None, top_k: int = 1) -> list[Prediction]:
        """Most probable label per sample, with its probability and the ``top_k`` best."""
        self._ready()
        self._check_task(task_key)
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        inputs = self._inputs(x, pad_to_max_length=False)
        network = self.built_network
        if network.training:  # eval() walks every module: skipped when serving calls again and again
            network.eval()
        probs = F.softmax(self.logits(inputs, task_key).float(), dim=-1)
        vocabulary = self.task_labels[task_key] if task_key is not None else self.labels
        k = min(top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=-1)
        predictions = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True):
            ranked = [(vocabulary[i], p) for i, p in zip(row_indices, row_values, strict=True)]
            predictions.append(Prediction(label=ranked[0][0], probability=ranked[0][1], top_k=ranked))
        return predictions

    def _ready(self) -> None:
        """A network with labels: one that learnt a task, or an imported classifier (its head's labels)."""
        if self.network is None or not (self.task_keys or self.labels):
            raise ValueError("this model has not learnt any task yet")

    def memory_footprint(self) -> dict | None:
        """The rehearsal memory's samples, bytes (its tensors as stored) and capacity; None without one."""
        if self.memory is None:
            return None
        size = sum(t.numel() * t.element_size() for t in self.memory.tensors().values())
        return {"samples": len(self.memory), "bytes": int(size), "capacity": self.memory.capacity}

    def parameter_counts(self) -> dict:
        if self.network is None:
            return {"base": 0, "per_task": {}, "total": 0}
        return self._family.parameter_counts(self.network)

    # --------------------------------------------------------------------------- state
    def _metadata(self) -> dict:
        text = {"text_source": self.text_source.metadata()} if self.text_source is not None else {}
        return {
            **text,
            "format": FORMAT,
            "architecture": self.architecture,
            "input_shape": list(self.input_shape),
            "family": self.family,
            "architecture_options": self.architecture_options,
            "ewc": self.ewc.as_dict(),
            "input_scale": self.input_scale,
            "input_scaling": self.input_scaling.metadata(),
            "seed": self.seed,
            "labels": self.labels,
            "task_keys": self.task_keys,
            "task_labels": self.task_labels,
            "updates": self.updates,
        }

    def export_weights(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Everything a prediction needs: the network's state and the learner's metadata."""
        self._ready()
        network: Any = self.built_network  # a TextClassifier for text models
        state = network.serving_state_dict() if self.is_text else network.state_dict()  # LoRA merged
        tensors = {f"model.{name}": t for name, t in state.items()}
        tensors |= self.input_scaling.tensors()
        return tensors, {"retain": json.dumps(self._metadata())}

    def export_consolidation(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The family's state between updates: Fisher and anchors of every consolidated task (EWC
        family); nothing for CCLL, which needs none."""
        tensors, metadata = self._family.export_state(self)
        if self.text_source is not None and self.text_source.mode == "lora":  # served weights hold them merged
            network: Any = self.built_network
            tensors = {**tensors, **{ADAPTER_PREFIX + name: t for name, t in network.adapter_tensors().items()}}
        return tensors, {"retain": json.dumps({"format": FORMAT, **metadata})}

    @classmethod
    def from_exports(
        cls, weights: tuple[dict, dict], consolidation: tuple[dict, dict] | None = None
    ) -> ContinualLearner:
        """Inverse of the exports; without ``consolidation`` the learner can predict but not learn."""
        tensors, metadata = weights
        meta = json.loads(metadata["retain"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} weights payload")
        learner = cls(
            architecture=meta["architecture"],
            input_shape=tuple(meta["input_shape"]),
            family=meta["family"] if "family" in meta else meta["strategy"],  # older exports: "strategy"
            architecture_options=meta["architecture_options"],
            ewc=EWCConfig(**meta["ewc"]),
            input_scale=meta["input_scale"],
            seed=meta["seed"],
        )
        learner.labels = [plain_label(label) for label in meta["labels"]]
        learner.task_keys = list(meta["task_keys"])
        learner.task_labels = {k: [plain_label(label) for label in v] for k, v in meta["task_labels"].items()}
        learner.updates = meta.get("updates", [])
        learner.input_scaling = InputScaling.from_state(meta.get("input_scaling", {}), tensors, meta["input_scale"])
        if "text_source" in meta:  # the plain architecture: served weights hold LoRA merged
            learner.text_source = HuggingFaceTextSource.from_metadata(meta["text_source"])
            learner.network = learner.text_source.build(len(learner.labels), adapters=False).to(learner.device)
        else:
            learner._family.rebuild_network(learner)
        network_state = {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
        learner.built_network.load_state_dict(network_state, strict=True)
        if consolidation is None:
            learner._family.load_state(learner, None, None)
            merge_adapters = getattr(learner.network, "merge_adapters", None)
            if callable(merge_adapters):  # a serving copy: LoRA folded into the weights
                merge_adapters()
        else:
            state_tensors, state_metadata = consolidation
            adapters = {
                k.removeprefix(ADAPTER_PREFIX): t for k, t in state_tensors.items() if k.startswith(ADAPTER_PREFIX)
            }
            state_tensors = {k: t for k, t in state_tensors.items() if not k.startswith(ADAPTER_PREFIX)}
            source = learner.text_source
            if source is not None and source.mode == "lora":  # learning on: the adapters back, unmerged
                network: Any = learner.built_network
                network.restore_adapters(source.lora_rank, adapters)
            learner._family.load_state(learner, state_tensors, json.loads(state_metadata["retain"]))
        return learner

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / WEIGHTS_FILE).write_bytes(to_safetensors_bytes(*self.export_weights()))
        (directory / CONSOLIDATION_FILE).write_bytes(to_safetensors_bytes(*self.export_consolidation()))

    @classmethod
    def load(cls, directory: str | Path, with_consolidation: bool = True) -> ContinualLearner:
        directory = Path(directory)
        weights = from_safetensors_bytes((directory / WEIGHTS_FILE).read_bytes())
        consolidation = (
            from_safetensors_bytes((directory / CONSOLIDATION_FILE).read_bytes()) if with_consolidation else None
        )
        return cls.from_exports(weights, consolidation)


def _standardize_option(options: dict) -> bool:
    """The ``standardize`` option: whether float inputs are standardized on the first task's statistics.
    Off unless asked for in the library; the service asks for it unless the model's options say false."""
    value = options.get("standardize", False)
    if not isinstance(value, bool):
        raise ValueError(f"standardize must be true or false, got {value!r}")
    return value


@dataclass
class _Training:
    """What step 2 of an update produced."""

    final_loss: float
    ewc_lambda: float  # the one trained with: the search's winner when it was "auto"
    search: list[dict] | None  # every candidate's λ, validation scores and steps, when searched
    search_seconds: float  # the whole of step 2 when λ was searched (search and the winner's early stopping)
    seconds: float
    budget: dict  # floor_epochs, max_epochs, epochs_run, epochs_trained (the weights kept), steps_run (all
    #               candidates'), samples_per_step: what the budget rule chose (train_config["budget"])


def capacity_warning(search: list[dict] | None, threshold: float) -> str | None:
    """A warning when the λ search's own numbers show old tasks lost whatever λ: every candidate
    dropped an old task's validation accuracy by more than ``threshold`` (the largest λ included)."""
    if not search or min(entry["worst_old_task_drop"] for entry in search) <= threshold:
        return None
    least = min(search, key=lambda entry: entry["worst_old_task_drop"])
    tried = ", ".join(f"{entry['lambda']:g}" for entry in search)
    return (
        f"every λ tried ({tried}) lost more than "
        f"{threshold:.0%} of an old task's validation accuracy (the least: {least['worst_old_task_drop']:.1%} "
        f"at λ = {least['lambda']:g}); the model may lack the capacity for its tasks: try a wider model "
        f"(architecture option hidden) or rehearsal (strategy ewc_replay)"
    )


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


__all__ = ["ContinualLearner", "Prediction", "UpdateResult", "TrainingStopped"]
