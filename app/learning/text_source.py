"""Text models: a Hugging Face sequence classifier (``AutoModelForSequenceClassification``) with its
fast tokenizer, as one model source the learner grows like its own networks.

What arrives is a directory as ``save_pretrained`` writes it: ``config.json``, ``model.safetensors``
and the tokenizer (``tokenizer.json``, a fast tokenizer, plus ``tokenizer_config.json``). Weights
load with ``use_safetensors=True`` and ``trust_remote_code=False`` only, and ``model_type`` must be
one transformers itself knows: nothing in the directory runs code.

Texts become token ids in the learner (``HuggingFaceTextSource.encode``), truncated at
``max_length`` (default 256). For training, every sample is padded to ``max_length`` with ``PAD``
(-1, never a real id) so tasks, batches and the replay memory share one width; the network
(``TextClassifier``) cuts every batch to its longest sample and masks the rest, so a batch pays for
its own longest text. Predictions pad to the longest text of the request. The tokenizer and the
config travel in the version's metadata (plain JSON strings): a stored version needs nothing else.

``trainable`` says what an update trains: ``all``; ``head`` (the classification head);
``last:N`` (the last N encoder layers, what follows them, and the head); ``lora`` (LoRA adapters of
rank ``lora_rank`` from peft on the token embeddings and on every linear projection of the encoder
layers, attention and feed-forward, plus what follows the layers and the head, as for ``last:N``).
Frozen parameters have no Fisher and no anchor, so they cost no consolidation bytes. LoRA adapters
stay separate while the model learns (the consolidation payload carries them, so EWC sees one fixed
parametrisation across updates); served weights are merged, so serving runs the plain architecture.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.learning.models import widened_linear

TEXT_ARCHITECTURE = "hf_text"
TEXT_INPUT_SHAPE = ("text",)


def takes_text(input_shape) -> bool:
    """Whether a model's or dataset's ``input_shape`` (a tuple, list or None) is text's."""
    return tuple(input_shape or ()) == TEXT_INPUT_SHAPE


DEFAULT_MAX_LENGTH = 256
DEFAULT_LORA_RANK = 16  # rank 8 learnt new topics several points below trainable=all (docs/text.md)
TEXT_TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 1e-4}  # a task's lr overrides it (small models like more)
PAD = -1  # padding in token-id tensors: the mask is ``ids >= 0``
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
ADAPTER_PREFIX = "adapter."  # LoRA tensors in the consolidation payload
OPTIONS = ("max_length", "trainable", "lora_rank")


def parse_trainable(trainable: str) -> tuple[str, int]:
    """``all`` | ``head`` | ``lora`` | ``last:N`` -> (mode, N)."""
    if trainable in ("all", "head", "lora"):
        return trainable, 0
    match = re.fullmatch(r"last:(\d+)", str(trainable))
    if match and int(match.group(1)) >= 1:
        return "last", int(match.group(1))
    raise ValueError(f"trainable must be all, head, lora or last:N (N >= 1), got {trainable!r}")


class HuggingFaceTextSource:
    """A sequence classifier's config and tokenizer (plain JSON), and how to build, tokenize and train it."""

    def __init__(self, config: dict, tokenizer_files: dict[str, str], options: dict | None = None):
        options = dict(options or {})
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"unknown text model options {sorted(unknown)}; text models take {', '.join(OPTIONS)}")
        self.config = dict(config)
        self.tokenizer_files = dict(tokenizer_files)
        limit = self.config.get("max_position_embeddings")
        default = min(DEFAULT_MAX_LENGTH, limit) if isinstance(limit, int) and limit >= 8 else DEFAULT_MAX_LENGTH
        self.max_length = int(options.get("max_length", default))  # a model with fewer positions: all of them
        self.trainable = str(options.get("trainable", "all"))
        self.lora_rank = int(options.get("lora_rank", DEFAULT_LORA_RANK))
        self.mode, self.last_layers = parse_trainable(self.trainable)
        # A fast tokenizer sets its truncation and padding state on every call: two serving threads
        # tokenizing at once would collide ("Already borrowed"), so calls take turns.
        self._tokenizing = threading.Lock()
        if not 8 <= self.max_length <= 8192:
            raise ValueError(f"max_length must be between 8 and 8192 tokens, got {self.max_length}")
        if isinstance(limit, int) and self.max_length > limit:
            raise ValueError(f"max_length {self.max_length} is longer than the model's {limit} positions")
        if not 1 <= self.lora_rank <= 256:
            raise ValueError(f"lora_rank must be between 1 and 256, got {self.lora_rank}")
        if "tokenizer.json" not in self.tokenizer_files:
            raise ValueError("the model has no tokenizer.json (a fast tokenizer); save it with save_pretrained")

    # ---------------------------------------------------------------------- reading
    @classmethod
    def read_directory(
        cls, directory: str | Path, options: dict | None = None, model: Any = None
    ) -> tuple[HuggingFaceTextSource, dict[str, torch.Tensor], list]:
        """The source, the pretrained weights (safetensors only) and the head's labels in output order;
        ``model``: the directory's classifier when the caller has loaded it already (not read twice)."""
        from transformers import AutoModelForSequenceClassification

        directory = Path(directory)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (directory / name).is_file():
                raise ValueError(
                    f"the model directory has no {name} (it needs config.json, model.safetensors, tokenizer.json)"
                )
        config = json.loads((directory / "config.json").read_text())
        check_model_type(config)
        files = tokenizer_files_in(directory)
        if model is None:
            model = AutoModelForSequenceClassification.from_pretrained(
                directory, use_safetensors=True, trust_remote_code=False
            )
        config = model.config.to_dict()
        source = cls(config, files, options)
        source.tokenizer  # noqa: B018 -- a tokenizer that does not load is refused now, not at the first task
        labels = labels_of(config)
        return source, {name: t.detach().clone() for name, t in model.state_dict().items()}, labels

    def metadata(self) -> dict:
        return {"config": self.config, "tokenizer_files": self.tokenizer_files, "options": self.options}

    @property
    def options(self) -> dict:
        return {"max_length": self.max_length, "trainable": self.trainable, "lora_rank": self.lora_rank}

    @classmethod
    def from_metadata(cls, metadata: dict) -> HuggingFaceTextSource:
        return cls(metadata["config"], metadata["tokenizer_files"], metadata["options"])

    # --------------------------------------------------------------------- tokenizing
    @cached_property
    def tokenizer(self):
        """The fast tokenizer, built from the stored files (in a private temporary folder)."""
        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory(prefix="retain-tokenizer-") as folder:
            for name, content in self.tokenizer_files.items():
                (Path(folder) / name).write_text(content)
            (Path(folder) / "config.json").write_text(json.dumps(self.config))
            tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True, trust_remote_code=False)
        if not tokenizer.is_fast:
            raise ValueError("the tokenizer is not a fast tokenizer (tokenizer.json)")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    def encode(self, texts, pad_to_max_length: bool = True) -> torch.Tensor:
        """Texts -> N x L int64 token ids, ``PAD`` after each text's end; L is ``max_length`` or the longest."""
        texts = list(texts)
        if not texts:
            raise ValueError("inputs holds no texts")
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"inputs of a text model must be strings, got {type(text).__name__}")
        with self._tokenizing:
            rows = self._token_ids(texts)
        width = self.max_length if pad_to_max_length else max(len(row) for row in rows)
        return torch.tensor([row + [PAD] * (width - len(row)) for row in rows], dtype=torch.int64)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Every text's ids, truncated at ``max_length``. A long text is tokenized from its head alone
        when the tokenizer allows it (``head_of``): truncation drops the rest anyway, and a tokenizer
        reads all of a text before truncating. A head that gives fewer than ``max_length`` ids did not
        reach the truncation point, and its text is tokenized whole."""
        heads = [head_of(text, self.max_length) for text in texts] if self.tokenizes_heads else texts
        rows = self.tokenizer(heads, truncation=True, max_length=self.max_length)["input_ids"]
        short = [i for i, row in enumerate(rows) if heads[i] is not texts[i] and len(row) < self.max_length]
        if short:
            again = self.tokenizer([texts[i] for i in short], truncation=True, max_length=self.max_length)
            for i, row in zip(short, again["input_ids"], strict=True):
                rows[i] = row
        return rows

    @cached_property
    def tokenizes_heads(self) -> bool:
        """Whether a text's first ``max_length`` tokens are its head's: truncation keeps the start,
        and the tokenizer splits at spaces before its model sees the words (``HEAD_SAFE_NORMALIZERS``,
        ``HEAD_SAFE_PRE_TOKENIZERS``), so the words before a cut at a space tokenize as in the whole text;
        and no added token holds a space (a cut could fall inside it)."""
        spec = json.loads(self.tokenizer_files["tokenizer.json"])
        return (
            self.tokenizer.truncation_side == "right"
            and all(" " not in token.get("content", "") for token in spec.get("added_tokens") or [])  # "New York"
            and _parts_allowed(spec.get("normalizer"), HEAD_SAFE_NORMALIZERS)
            and _splits_at_whitespace(spec.get("pre_tokenizer"))
        )

    # ----------------------------------------------------------------------- building
    def build(self, n_classes: int, adapters: bool = True) -> TextClassifier:
        """The architecture with fresh weights (the caller loads a state), ``n_classes`` outputs, and
        what trains set; ``adapters`` False leaves LoRA out (serving, or before a merged state loads)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = dict(self.config)
        model_type = config.pop("model_type")
        config.update(num_labels=n_classes, id2label={i: str(i) for i in range(n_classes)})
        config.pop("label2id", None)
        hf_config = AutoConfig.for_model(model_type, **config)
        model = AutoModelForSequenceClassification.from_config(hf_config, trust_remote_code=False)
        network = TextClassifier(model, self.tokenizer.pad_token_id)
        network.set_trainable(self.mode, self.last_layers, self.lora_rank if adapters else None)
        return network


def tokenizer_files_in(directory: Path) -> dict[str, str]:
    """The tokenizer's files of a ``save_pretrained`` directory (``TOKENIZER_FILES``), by name: what a
    text source stores with the version and builds its tokenizer from."""
    return {name: (directory / name).read_text() for name in TOKENIZER_FILES if (directory / name).is_file()}


HEAD_CHARS_PER_TOKEN = 8  # a head of this many characters a token mostly holds max_length tokens
# Tokenizer parts under which the words before a cut at a space tokenize as in the whole text:
# normalizers that map character by character, pre-tokenizers that split at whitespace or character classes.
HEAD_SAFE_NORMALIZERS = {
    "BertNormalizer",
    "Lowercase",
    "NFC",
    "NFD",
    "NFKC",
    "NFKD",
    "StripAccents",
    "Strip",
    "Prepend",
}
HEAD_SAFE_PRE_TOKENIZERS = {
    "BertPreTokenizer",
    "Whitespace",
    "WhitespaceSplit",
    "ByteLevel",
    "Metaspace",
    "Punctuation",
}


def head_of(text: str, max_length: int) -> str:
    """The text before its first space after ``HEAD_CHARS_PER_TOKEN * max_length`` characters (a space:
    the one character every tokenizer above splits at), or the text itself, the same object, when
    nothing is cut."""
    cut = text.find(" ", HEAD_CHARS_PER_TOKEN * max_length)
    return text[:cut] if cut > 0 else text


def _parts(spec: dict | None) -> list[dict]:
    if spec is None:
        return []
    if spec.get("type") == "Sequence":
        return [part for inner in spec.get("normalizers", spec.get("pretokenizers", [])) for part in _parts(inner)]
    return [spec]


def _parts_allowed(spec: dict | None, allowed: set[str]) -> bool:
    return all(part.get("type") in allowed for part in _parts(spec))


def _splits_at_whitespace(spec: dict | None) -> bool:
    """Every part is one of ``HEAD_SAFE_PRE_TOKENIZERS``, and one of them splits at whitespace (ByteLevel
    with its regex, Metaspace with ``split``)."""
    parts = _parts(spec)

    def splits(part: dict) -> bool:
        kind = part.get("type")
        return kind in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit") or (
            kind == "ByteLevel" and part.get("use_regex", True) or kind == "Metaspace" and part.get("split", True)
        )

    return _parts_allowed(spec, HEAD_SAFE_PRE_TOKENIZERS) and any(splits(part) for part in parts)


def check_model_type(config: dict) -> None:
    """Only architectures transformers itself implements: no code from the directory ever runs."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"config.json's model_type {model_type!r} is not one transformers implements; code shipped "
            "with a model (trust_remote_code) is never run"
        )


def labels_of(config: dict) -> list:
    """The head's labels in output order from ``id2label``; a generic LABEL_i name becomes i."""
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    labels = []
    for i in range(len(id2label)):
        label = id2label.get(i, f"LABEL_{i}")
        generic = re.fullmatch(r"LABEL_(\d+)", str(label))
        labels.append(int(generic.group(1)) if generic else str(label))
    return labels


class TextClassifier(nn.Module):
    """A sequence classifier over token-id tensors (``PAD`` = -1 after each text): logits per sample.

    Each batch is cut to its longest sample, so padding costs nothing beyond it, and the rest is
    masked: a text's logits do not depend on what it is batched with."""

    # HF forwards branch on tensor values (mask checks), which torch.func's vmap cannot trace: the
    # Fisher takes per-sample gradients one sample at a time for this network (app.learning.fisher).
    per_sample_gradients_by_loop = True
    model: Any  # a transformers PreTrainedModel (config, base_model, base_model_prefix)

    def __init__(self, model: nn.Module, pad_token_id: int):
        super().__init__()
        self.model = model
        self.pad_token_id = int(pad_token_id)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x >= 0
        length = max(int(mask.sum(1).max()), 1) if len(x) else x.shape[1]
        x, mask = x[:, :length], mask[:, :length]
        ids = x.masked_fill(~mask, self.pad_token_id)
        return self.model(input_ids=ids, attention_mask=mask.to(torch.int64)).logits

    # -------------------------------------------------------------------------- head
    @property
    def head_name(self) -> str:
        """The linear layer that gives the logits: the last one with ``num_labels`` outputs."""
        n = self.model.config.num_labels
        names = [name for name, m in self.model.named_modules() if isinstance(m, nn.Linear) and m.out_features == n]
        names = [name for name in names if not name.startswith(self.model.base_model_prefix + ".")] or names
        if not names:
            raise ValueError("the model has no linear classification head")
        return names[-1]

    @property
    def head(self) -> nn.Linear:
        return self.model.get_submodule(self.head_name)

    @torch.no_grad()
    def grow_head(self, n_classes: int) -> None:
        """Widen the head, old rows exact (as ``app.learning.models.grow_head`` does for retain's own)."""
        name, old = self.head_name, self.head
        new = widened_linear(old, n_classes)
        if new is None:
            return
        new.requires_grad_(old.weight.requires_grad)
        parent, _, attribute = name.rpartition(".")
        setattr(self.model.get_submodule(parent) if parent else self.model, attribute, new)
        self.model.config.num_labels = n_classes
        self.model.num_labels = n_classes

    # ----------------------------------------------------------------------- trainable
    def _layers(self) -> nn.ModuleList:
        base = self.model.base_model
        count = self.model.config.num_hidden_layers
        for module in base.modules():
            if isinstance(module, nn.ModuleList) and len(module) == count:
                return module
        raise ValueError("cannot find the encoder's layers (a ModuleList of num_hidden_layers blocks)")

    def set_trainable(self, mode: str, last_layers: int = 0, lora_rank: int | None = None) -> None:
        """Freeze what ``mode`` does not train (see the module docstring); inject LoRA for ``lora``."""
        prefix = self.model.base_model_prefix + "."
        head = [p for name, p in self.model.named_parameters() if not name.startswith(prefix)]
        if mode == "all":
            self.requires_grad_(True)
            return
        self.requires_grad_(False)
        for p in head:
            p.requires_grad_(True)
        if mode == "last":
            layers = self._layers()
            if last_layers > len(layers):
                raise ValueError(f"trainable last:{last_layers} asks for more layers than the model's {len(layers)}")
            for layer in layers[len(layers) - last_layers :]:
                layer.requires_grad_(True)
            self._after_layers().requires_grad_(True)
        elif mode == "lora" and lora_rank is not None:
            self.add_adapters(lora_rank)

    def _after_layers(self) -> nn.ModuleList:
        """What follows the encoder layers in the base model (BERT's pooler), as one module list."""
        layers, after, following = self._layers(), False, []
        for child in self.model.base_model.children():
            if after:
                following.append(child)
            elif any(m is layers for m in child.modules()):
                after = True
        return nn.ModuleList(following)

    def adapter_targets(self) -> list[str]:
        """The token embeddings and every linear projection inside the encoder layers (attention and
        feed-forward). A new topic brings words the base task never needed to tell apart: with the
        embeddings frozen, LoRA on the projections alone learnt new topics far worse than full
        training (docs/text.md, "Benchmark")."""
        layers = self._layers()
        names = {id(m): name for name, m in self.model.named_modules()}
        embeddings = names[id(self.model.get_input_embeddings())]
        return [embeddings] + [names[id(m)] for layer in layers for m in layer.modules() if isinstance(m, nn.Linear)]

    def add_adapters(self, rank: int, targets: list[str] | None = None) -> None:
        """LoRA adapters of ``rank`` on ``targets`` (default ``adapter_targets()``)."""
        from peft import LoraConfig, inject_adapter_in_model

        targets = self.adapter_targets() if targets is None else targets
        config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)  # the same adapters' starting point on every rank and every reload
        inject_adapter_in_model(config, self.model)
        torch.random.set_rng_state(generator_state)
        prefix = self.model.base_model_prefix + "."
        for name, p in self.model.named_parameters():  # peft leaves only the adapters trainable: the head trains too
            if "lora_" in name or not name.startswith(prefix):
                p.requires_grad_(True)
        # and what follows the layers (BERT's pooler), as for last:N: a pooler fitted to the base classes
        # alone, frozen, holds new classes back (docs/text.md, "Benchmark")
        self._after_layers().requires_grad_(True)

    def _lora_layers(self) -> dict[str, Any]:
        from peft.tuners.lora import LoraLayer

        return {name: m for name, m in self.named_modules() if isinstance(m, LoraLayer)}

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters() if "lora_" in name}

    def serving_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict of the plain architecture: LoRA deltas merged into the weights they adapt."""
        state = dict(self.state_dict())
        for name, layer in self._lora_layers().items():
            with torch.no_grad():
                merged = layer.base_layer.weight + layer.get_delta_weight("default").to(layer.base_layer.weight.dtype)
            for key in [k for k in state if k.startswith(f"{name}.")]:
                del state[key]
            state[f"{name}.weight"] = merged.detach()
            bias = getattr(layer.base_layer, "bias", None)  # an embedding has none
            if bias is not None:
                state[f"{name}.bias"] = bias.detach()
        return state

    @torch.no_grad()
    def restore_adapters(self, rank: int, tensors: dict[str, torch.Tensor]) -> None:
        """After merged weights were loaded: the adapters back, their deltas taken out of the weights.
        They go back on the modules the tensors name, so a version stored before the token embeddings
        took adapters keeps learning with the adapters it had."""
        if not tensors:
            raise ValueError("the consolidation holds no LoRA tensors")
        self.add_adapters(rank, sorted({name.split(".lora_")[0].removeprefix("model.") for name in tensors}))
        named = dict(self.named_parameters())
        missing = [name for name in named if "lora_" in name and name not in tensors]
        if missing:
            raise ValueError(f"the consolidation lacks LoRA tensors such as {missing[:3]}")
        for name, tensor in tensors.items():
            named[name].copy_(tensor)
        for layer in self._lora_layers().values():
            layer.base_layer.weight -= layer.get_delta_weight("default").to(layer.base_layer.weight.dtype)
