"""An imported model as a learner's network: its own head kept and grown, what trains, BatchNorm frozen.

``ImportOptions`` reads the options an import is given (the architecture's own, and retain's:
``labels``, ``trainable``, ``lora_rank``, ``freeze_batchnorm``, ``new_head``, ``mean``/``std``,
``resize``, ``memory_size``). ``ImportedNetwork`` wraps the source's module:

* the head is the source's classifier (``ModelSource.head_path``); ``set_head`` replaces it
  in place, so ``app.learning.models.grow_head`` grows it as it grows retain's own heads;
* ``trainable``: ``all`` | ``head`` | ``last:N`` (the last N blocks, see ``blocks``, plus the
  head) | ``lora`` (peft LoRA adapters of rank ``lora_rank`` on every linear and conv layer but
  the head, plus the head). Frozen parameters have ``requires_grad`` off, so the Fisher, the
  anchors and the optimiser cover exactly the trainable ones (a frozen parameter costs no
  consolidation bytes). A serving copy merges the adapters into the weights (``merge_adapters``);
* ``freeze_batchnorm`` (default on): BatchNorm layers stay in eval mode while training, because
  EWC protects parameters, not running statistics.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from app.learning.image_inputs import ImagePreprocessing
from app.learning.sources import (
    PICKLE_SUFFIXES,
    ImportRefused,
    ModelSource,
    TooManyParameters,
    check_weights,
    meta_shapes,
    parameter_count,
    read_header,
    refuse_pickle,
    source_for,
    zip_holds_pickle,
)

RESERVED = (
    "labels",
    "trainable",
    "lora_rank",
    "freeze_batchnorm",
    "new_head",
    "mean",
    "std",
    "resize",
    "memory_size",
    "input_shape",
)


@dataclass
class ImportOptions:
    """An import's settings, read from the user's ``options`` (everything not reserved is the architecture's)."""

    labels: list | None = None
    trainable: str = "all"
    lora_rank: int = 8
    freeze_batchnorm: bool = True
    new_head: bool = False
    preprocessing: dict = field(default_factory=dict)  # mean, std, resize
    memory_size: int | None = None
    architecture: dict = field(default_factory=dict)  # the architecture's own options

    @classmethod
    def parse(cls, options: dict | None) -> ImportOptions:
        options = dict(options or {})
        own = {key: value for key, value in options.items() if key not in RESERVED}
        trainable = options.get("trainable", "all")
        if not isinstance(trainable, str) or not (
            trainable in ("all", "head", "lora") or (trainable.startswith("last:") and trainable[5:].isdigit())
        ):
            raise ImportRefused(f"trainable must be all, head, last:N or lora, got {trainable!r}")
        if trainable.startswith("last:") and int(trainable[5:]) < 1:
            raise ImportRefused("trainable last:N needs N >= 1")
        rank = options.get("lora_rank", 8)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ImportRefused(f"lora_rank must be a positive whole number, got {rank!r}")
        labels = options.get("labels")
        if labels is not None and (not isinstance(labels, list) or len(set(map(str, labels))) != len(labels)):
            raise ImportRefused("labels must be a list of distinct labels, in the head's output order")
        for name in ("freeze_batchnorm", "new_head"):
            if name in options and not isinstance(options[name], bool):
                raise ImportRefused(f"{name} must be true or false")
        return cls(
            labels=labels,
            trainable=trainable,
            lora_rank=rank,
            freeze_batchnorm=options.get("freeze_batchnorm", True),
            new_head=options.get("new_head", False),
            preprocessing={key: options[key] for key in ("mean", "std", "resize") if key in options},
            memory_size=options.get("memory_size"),
            architecture=own,
        )

    def as_dict(self) -> dict:
        return asdict(self)


def blocks(model: nn.Module, head: str) -> list[nn.Module]:
    """The model's blocks in order, for ``last:N``: its top-level children that hold parameters
    (the head excluded), looking into a child that holds everything (a Hugging Face backbone) and
    counting each layer of a layer list (an encoder's ``ModuleList``) as one block."""

    def has_parameters(name: str, module: nn.Module) -> bool:
        return any(not f"{name}.{n}".startswith(head + ".") for n, _ in module.named_parameters())

    def walk(prefix: str, module: nn.Module) -> list[nn.Module]:
        children = [
            (f"{prefix}{n}", m)
            for n, m in module.named_children()
            if f"{prefix}{n}" != head and has_parameters(f"{prefix}{n}", m)
        ]
        if len(children) == 1 and list(children[0][1].children()):
            return walk(children[0][0] + ".", children[0][1])
        found: list[nn.Module] = []
        for _, child in children:
            inner = [m for m in child.children() if any(True for _ in m.parameters())]
            if isinstance(child, nn.ModuleList):
                found += list(child)
            elif len(inner) == 1 and isinstance(inner[0], nn.ModuleList):
                found += list(inner[0])
            else:
                found.append(child)
        return found

    return walk("", model)


class ImportedNetwork(nn.Module):
    """See the module docstring."""

    def __init__(
        self, model: nn.Module, source: ModelSource, trainable: str, lora_rank: int, freeze_batchnorm: bool
    ) -> None:
        super().__init__()
        self.net = model
        self.head_path = source.head_path(model)
        self.trainable, self.freeze_batchnorm = trainable, freeze_batchnorm
        self._logits = source.logits
        if trainable == "lora":
            self._add_adapters(lora_rank)
        self.select_trainable()

    def _add_adapters(self, rank: int) -> None:
        from peft import LoraConfig, LoraModel

        targets = [
            name
            for name, module in self.net.named_modules()
            if (isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1))
            and name != self.head_path
            and not name.startswith(self.head_path + ".")
        ]
        if not targets:
            raise ImportRefused("trainable lora needs linear or conv layers besides the head")
        self.net = LoraModel(self.net, LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), "default")
        self.head_path = "model." + self.head_path

    def select_trainable(self) -> None:
        """``requires_grad`` on exactly the parameters ``trainable`` names (the head always)."""
        if self.trainable == "all":
            for p in self.net.parameters():
                p.requires_grad_(True)
        elif self.trainable == "head":
            for p in self.net.parameters():
                p.requires_grad_(False)
        elif self.trainable.startswith("last:"):
            for p in self.net.parameters():
                p.requires_grad_(False)
            for block in blocks(self.net, self.head_path)[-int(self.trainable[5:]) :]:
                for p in block.parameters():
                    p.requires_grad_(True)
        # lora: LoraModel left only the adapters trainable
        for p in self.head.parameters():
            p.requires_grad_(True)

    @property
    def head(self) -> nn.Linear:
        head = self.net.get_submodule(self.head_path)
        if not isinstance(head, nn.Linear):  # plan_import checked it: the source names a Linear head
            raise TypeError(f"{self.head_path} is a {type(head).__name__}, not a Linear head")
        return head

    def set_head(self, new: nn.Linear) -> None:
        parent, _, name = self.head_path.rpartition(".")
        setattr(self.net.get_submodule(parent) if parent else self.net, name, new)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(self.net(x))

    def train(self, mode: bool = True) -> ImportedNetwork:
        super().train(mode)
        if mode and self.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def merge_adapters(self) -> None:
        """Fold LoRA adapters into the weights: a serving copy runs the plain architecture."""
        merge = getattr(self.net, "merge_and_unload", None)
        if self.trainable == "lora" and callable(merge):
            self.net = merge()
            self.head_path = self.head_path.removeprefix("model.")


def replace_head(model: nn.Module, path: str, n_classes: int) -> None:
    """A fresh linear head of ``n_classes`` outputs at ``path`` (0: an empty label head, grown by the first task)."""
    old = model.get_submodule(path)
    if not isinstance(old, nn.Linear):
        raise ImportRefused(f"{path} is a {type(old).__name__}, not a Linear head that can be replaced")
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, nn.Linear(old.in_features, n_classes))


def build_imported(
    spec: str,
    input_shape: Sequence[int],
    n_classes: int,
    imported: dict,
    weights: Path | None = None,
    loaded: nn.Module | None = None,
) -> ImportedNetwork:
    """The network of an imported model: built fresh (to load a stored version into), or, at import,
    from the user's ``weights`` (``imported["file_classes"]``: the outputs of the file's head);
    ``loaded``: those weights already read into the architecture (``ImportPlan.loaded``)."""
    source = source_for(spec, imported.get("architecture"), imported.get("config"))
    keep_head = weights is not None and not imported.get("new_head")
    if loaded is not None and weights is not None:
        model = loaded
    else:
        model = source.build(input_shape, max(1, imported["file_classes"] if weights is not None else n_classes))
        if weights is not None:
            model = source.load(model, weights, None if keep_head else source.head_path(model))
    if not keep_head and model.get_submodule(source.head_path(model)).out_features != n_classes:
        replace_head(model, source.head_path(model), n_classes)
    return ImportedNetwork(
        model,
        source,
        imported.get("trainable", "all"),
        imported.get("lora_rank", 8),
        imported.get("freeze_batchnorm", True),
    )


@dataclass
class ImportPlan:
    """A checked import: what the learner is built from (``ContinualLearner.import_model``)."""

    source: str
    input_shape: tuple[int, ...]
    labels: list
    imported: dict  # stored with the model: the architecture's options, trainable, lora_rank, ...
    preprocessing: dict  # mean, std, resize (ImagePreprocessing)
    memory_size: int | None
    parameters: int
    weights: Path
    loaded: nn.Module | None = None  # hf: the weights as the check read them (``keep_loaded``), not read again


def read_hf_directory(directory: Path) -> tuple[Path, dict, dict]:
    """``model.safetensors``, ``config.json`` and the preprocessor config (may be absent) of an hf export."""
    import json

    for name in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"):
        if (directory / name).exists():
            refuse_pickle(name)
    weights, config = directory / "model.safetensors", directory / "config.json"
    if not weights.is_file() or not config.is_file():
        raise ImportRefused("an hf import needs config.json and model.safetensors (save_pretrained writes both)")
    try:
        values = json.loads(config.read_text())
        preprocessor_file = directory / "preprocessor_config.json"
        preprocessor = json.loads(preprocessor_file.read_text()) if preprocessor_file.is_file() else {}
    except ValueError as error:
        raise ImportRefused(f"an hf configuration file is not valid JSON: {error}") from None
    if not isinstance(values, dict) or not isinstance(preprocessor, dict):
        raise ImportRefused("config.json and preprocessor_config.json must be JSON objects")
    return weights, values, preprocessor


def plan_import(
    spec: str,
    input_shape: Sequence[int],
    weights: Path,
    options: dict | None = None,
    max_parameters: int | None = None,
    keep_loaded: bool = False,
) -> ImportPlan:
    """Every check an import needs, with no weights in memory: the file is safetensors (a pickle is
    refused, 415), the source and options are known, the head has labels, the file's keys and shapes
    are the architecture's (built on ``meta``; 422 naming the first few), the model is within
    ``max_parameters`` (413) and takes inputs of ``input_shape``. ``weights``: a ``.safetensors``
    file, or an hf directory (whose check reads the weights: ``keep_loaded`` keeps them in the plan,
    for the learner to use instead of reading them again)."""
    weights = Path(weights)
    parsed = ImportOptions.parse(options)
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or min(input_shape) < 1:
        raise ImportRefused(f"input_shape must be positive sizes, got {list(input_shape)}")
    config, defaults = None, {}
    if spec == "hf":
        if not weights.is_dir():
            raise ImportRefused("an hf import is a directory (or .zip) with config.json and model.safetensors")
        weights, config, preprocessor = read_hf_directory(weights)
        if preprocessor.get("image_mean") is not None and preprocessor.get("image_std") is not None:
            defaults = {"mean": list(preprocessor["image_mean"]), "std": list(preprocessor["image_std"])}
    elif weights.is_dir():
        raise ImportRefused("weights must be one .safetensors file")
    if weights.name.lower().endswith(PICKLE_SUFFIXES):
        refuse_pickle(weights.name)
    if zipfile.is_zipfile(weights):
        if zip_holds_pickle(weights):
            refuse_pickle(weights.name)
        raise ImportRefused(f"{weights.name} is a zip archive, not a safetensors file")
    header = read_header(weights)
    source = source_for(spec, parsed.architecture, config)
    defaults = defaults or source.defaults()
    labels: list = [] if parsed.new_head else list(parsed.labels or source.labels() or [])
    if not parsed.new_head and not labels:
        raise ImportRefused(
            "the head's labels are unknown: give options.labels (in output order), or new_head: true for a new head"
        )
    with torch.device("meta"):
        model = source.build(input_shape, max(1, len(labels)))
    head = source.head_path(model)
    given = {name: shape for name, (_, shape) in header.items()}
    file_classes = given.get(f"{head}.weight", (None,))[0]
    if file_classes is None:
        raise ImportRefused(f"the weights have no {head}.weight: not this architecture's classifier head")
    if not parsed.new_head and file_classes != len(labels):
        raise ImportRefused(f"the head has {file_classes} outputs but {len(labels)} labels were given")
    parameters = parameter_count(model)
    if max_parameters is not None and parameters > max_parameters:
        raise TooManyParameters(
            f"the model has {parameters:,} parameters, over this service's limit of {max_parameters:,} "
            "(RETAIN_MAX_MODEL_PARAMETERS)"
        )
    loaded = None
    if spec == "hf":  # transformers renames legacy checkpoint keys: only its loader can compare them
        with torch.device("cpu"):
            loaded = source.load(source.build(input_shape, file_classes), weights, head if parsed.new_head else None)
    else:
        check_weights(meta_shapes(model), given, ignore=head if parsed.new_head else None)
    preprocessing = {**defaults, **parsed.preprocessing}
    seen = ImagePreprocessing.from_options(preprocessing, input_shape).model_input_shape(input_shape)
    try:
        model.eval()
        with torch.no_grad():
            source.logits(model(torch.empty((2, *seen), device="meta")))
    except Exception as error:  # whatever the architecture raises on a wrong input shape
        raise ImportRefused(f"the architecture does not take inputs of shape {list(seen)}: {error}") from None
    imported = {
        "architecture": parsed.architecture,
        "config": config,
        "trainable": parsed.trainable,
        "lora_rank": parsed.lora_rank,
        "freeze_batchnorm": parsed.freeze_batchnorm,
        "new_head": parsed.new_head,
        "file_classes": int(file_classes),
    }
    return ImportPlan(
        source=source.spec,
        input_shape=input_shape,
        labels=list(labels),
        imported=imported,
        preprocessing=ImagePreprocessing.from_options(preprocessing, input_shape).as_dict(),
        memory_size=parsed.memory_size,
        parameters=parameters,
        weights=weights,
        loaded=loaded if keep_loaded else None,
    )


def is_text_directory(directory: Path) -> bool:
    """An hf export of a text classifier: config.json's architectures are ``*ForSequenceClassification``,
    or it ships tokenizer.json and no preprocessor config (an image processor's)."""
    import json

    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    names = config.get("architectures") if isinstance(config, dict) else None
    if isinstance(names, list) and any(str(name).endswith("ForSequenceClassification") for name in names):
        return True
    return (directory / "tokenizer.json").is_file() and not (directory / "preprocessor_config.json").is_file()


@dataclass
class TextImportPlan:
    """A checked text import (``plan_text_import``): what the learner is built from by ``from_text_directory``."""

    source: str
    input_shape: tuple[str, ...]
    labels: list
    options: dict  # max_length, trainable, lora_rank (and memory_size)
    parameters: int
    model: nn.Module | None = None  # the weights as the check read them (``keep_model``), not read again


def plan_text_import(
    directory: Path, options: dict | None = None, max_parameters: int | None = None, keep_model: bool = False
) -> TextImportPlan:
    """Every check a text import needs: safetensors only, a model_type transformers implements, the
    options known, the architecture within ``max_parameters`` (counted on ``meta``, 413), the weights'
    keys and shapes those of the architecture (422 naming the first few), labels from ``id2label``
    and a fast tokenizer that loads. The check reads the weights: ``keep_model`` keeps the loaded
    classifier in the plan (``ContinualLearner.from_text_directory(pretrained=...)``)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from app.learning.text_source import TEXT_ARCHITECTURE, TEXT_INPUT_SHAPE, HuggingFaceTextSource, check_model_type

    options = dict(options or {})
    memory = options.get("memory_size", 1)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
        raise ImportRefused(f"memory_size must be a whole number of samples, got {memory!r}")
    text_options = {key: value for key, value in options.items() if key != "memory_size"}
    weights, config, _ = read_hf_directory(directory)
    if not (directory / "tokenizer.json").is_file():
        raise ImportRefused("a text model needs its fast tokenizer: tokenizer.json (save_pretrained writes it)")
    try:
        check_model_type(config)
        files = {
            name: (directory / name).read_text()
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
            if (directory / name).is_file()
        }
        source = HuggingFaceTextSource(config, files, text_options)
    except ValueError as error:
        raise ImportRefused(str(error)) from None
    read_header(weights)  # a safetensors file (a pickle renamed is refused)
    values = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    try:
        hf_config = AutoConfig.for_model(config["model_type"], **values)
        with torch.device("meta"):
            meta = AutoModelForSequenceClassification.from_config(hf_config, trust_remote_code=False)
    except ValueError as error:
        raise ImportRefused(f"model_type {config['model_type']!r} is not a sequence classifier: {error}") from None
    parameters = parameter_count(meta)
    if max_parameters is not None and parameters > max_parameters:
        raise TooManyParameters(
            f"the model has {parameters:,} parameters, over this service's limit of {max_parameters:,} "
            "(RETAIN_MAX_MODEL_PARAMETERS)"
        )
    try:
        loaded, info = AutoModelForSequenceClassification.from_pretrained(
            str(directory),
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # listed in the loading info, refused below with the shapes
        )
        source.tokenizer  # noqa: B018 -- a tokenizer that does not load is refused now
    except (OSError, RuntimeError, ValueError) as error:
        raise ImportRefused(f"the text model does not load: {str(error)[:500]}") from None
    problems = {kind: sorted(str(k) for k in info.get(kind, ())) for kind in ("missing_keys", "unexpected_keys")}
    problems["shape_mismatches"] = sorted(
        f"{k[0]}: file {list(k[1])}, model {list(k[2])}" if isinstance(k, tuple) and len(k) == 3 else str(k)
        for k in info.get("mismatched_keys", ())
    )
    shown = "; ".join(
        f"{len(keys)} {kind.replace('_', ' ')} ({', '.join(keys[:5])})" for kind, keys in problems.items() if keys
    )
    if shown:
        raise ImportRefused(f"the weights do not fit the architecture: {shown}")
    from app.learning.text_source import labels_of

    labels = labels_of(hf_config.to_dict())
    if not labels:
        raise ImportRefused("config.json has no id2label: the head's labels are unknown")
    return TextImportPlan(
        source=TEXT_ARCHITECTURE,
        input_shape=TEXT_INPUT_SHAPE,
        labels=labels,
        options={**source.options, **({"memory_size": options["memory_size"]} if "memory_size" in options else {})},
        parameters=parameters,
        model=loaded if keep_model else None,
    )
