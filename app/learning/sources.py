"""Where an imported model's architecture comes from: one class per source.

A source builds the architecture (random weights, or on the ``meta`` device to check a file
against it without any weights in memory), names the classifier head (so new labels can grow
it, as retain's own heads grow), and knows the defaults the weights came with (labels, mean
and std). Sources, by ``source`` string:

* ``mlp`` | ``cnn`` | ``resnet18``: retain's own networks (``app.learning.models``);
* ``torchvision:<builder>``: any classification builder torchvision lists;
* ``timm:<name>``: any timm architecture (head from ``get_classifier()``, mean/std from its
  pretrained configuration);
* ``hf``: a Hugging Face image classifier, from its ``config.json`` (``model_type`` must be in
  transformers' own registry; ``trust_remote_code`` is never set). A sequence classifier with its
  tokenizer is a text model instead (``app.learning.imported.plan_text_import``, then
  ``app.learning.text_source``);
* a plugin: an installed package's entry point in the group ``retain.architectures``, a
  callable ``(input_shape, n_classes, **options) -> nn.Module``. Code an operator installed,
  never code that arrived over HTTP.

Weights are read with ``safetensors`` only (``read_header`` reads the keys, dtypes and shapes
without the tensors); ``check_weights`` compares them with the architecture built on ``meta``.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from app.learning.models import ARCHITECTURES, build_model

PLUGIN_GROUP = "retain.architectures"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".mar")
CONVERSION = (
    'python -c "import torch, safetensors.torch as st; '
    "st.save_file(torch.load('model.pt', weights_only=True), 'model.safetensors')\""
)
SHOWN = 5  # keys named in a mismatch error


class ImportRefused(ValueError):
    """An import that cannot go ahead; ``status`` is the HTTP status the service answers with."""

    status = 422


class UnsafeWeights(ImportRefused):
    """Weights in a format that runs code on load (pickle)."""

    status = 415


class TooManyParameters(ImportRefused):
    status = 413


def refuse_pickle(name: str) -> None:
    """Refuse a pickle with the one-line conversion the user can run on their side."""
    raise UnsafeWeights(
        f"{name} is a pickle, which runs code when loaded: retain reads weights only as safetensors. "
        f"Convert it on your side with: {CONVERSION}"
    )


def looks_like_pickle(name: str, head: bytes) -> bool:
    """By suffix, or by content: pickle's protocol marker (a zip is looked into by ``zip_holds_pickle``)."""
    return name.lower().endswith(PICKLE_SUFFIXES) or head[:1] == b"\x80"


def zip_holds_pickle(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(
            info.filename.endswith(("data.pkl", *PICKLE_SUFFIXES)) and not info.filename.endswith(".safetensors")
            for info in archive.infolist()
        )


def read_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor's dtype and shape from a safetensors file's header (no tensor is read)."""
    path = Path(path)
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise ImportRefused(f"{path.name} is not a safetensors file (too short)")
        size = int.from_bytes(head, "little")
        if size <= 1 or size > 100_000_000 or 8 + size > path.stat().st_size:
            if looks_like_pickle(path.name, head):
                refuse_pickle(path.name)
            raise ImportRefused(f"{path.name} is not a safetensors file (bad header size)")
        try:
            header = json.loads(file.read(size))
        except ValueError as error:
            raise ImportRefused(f"{path.name} is not a safetensors file (header is not JSON: {error})") from None
    if not isinstance(header, dict):
        raise ImportRefused(f"{path.name} is not a safetensors file (header is not an object)")
    return {
        name: (str(entry.get("dtype")), tuple(int(s) for s in entry.get("shape", ())))
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    }


def check_weights(expected: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]], ignore: str | None) -> None:
    """Refuse (422) when the file's keys or shapes differ from the architecture's, naming the first few."""

    def kept(names):
        return sorted(n for n in names if ignore is None or not (n == ignore or n.startswith(ignore + ".")))

    missing = kept(set(expected) - set(given))
    unexpected = kept(set(given) - set(expected))
    shapes = [n for n in kept(set(expected) & set(given)) if tuple(expected[n]) != tuple(given[n])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({', '.join(missing[:SHOWN])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:SHOWN])})")
    if shapes:
        shown = ", ".join(f"{n}: file {list(given[n])}, model {list(expected[n])}" for n in shapes[:SHOWN])
        problems.append(f"{len(shapes)} shape mismatches ({shown})")
    if problems:
        raise ImportRefused("the weights do not fit the architecture: " + "; ".join(problems))


def meta_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def last_linear(model: nn.Module, n_classes: int | None = None) -> str:
    """The name of the last ``nn.Linear`` (with ``n_classes`` outputs, when given): a classifier's head."""
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and (n_classes is None or module.out_features == n_classes)
    ]
    if not names:
        raise ImportRefused("no linear classifier head found in this architecture (retain grows a linear head)")
    return names[-1]


class ModelSource:
    """One kind of architecture source; see the module docstring."""

    kind: ClassVar[str]

    def __init__(self, name: str, options: dict | None = None, config: dict | None = None):
        self.name, self.options, self.config = name, dict(options or {}), config

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.name}"

    def build(self, input_shape: Sequence[int], n_classes: int) -> nn.Module:
        """The architecture with fresh weights (under ``torch.device('meta')``: with no storage)."""
        raise NotImplementedError

    def head_path(self, model: nn.Module) -> str:
        return last_linear(model)

    def defaults(self) -> dict:
        """mean / std the weights were trained with, when the source knows them."""
        return {}

    def labels(self) -> list | None:
        """The head's labels in output order, when the source carries them (HF ``id2label``)."""
        return None

    def load(self, model: nn.Module, weights: Path, skip: str | None) -> nn.Module:
        """Read the weights into ``model`` (safetensors only); ``skip``: a head not kept (new_head)."""
        from safetensors.torch import load_file

        tensors = load_file(str(weights))
        if skip is not None:
            tensors = {n: t for n, t in tensors.items() if not n.startswith(skip + ".")}
        model.load_state_dict(tensors, strict=skip is None)
        return model

    @staticmethod
    def logits(output) -> torch.Tensor:
        return output.logits if hasattr(output, "logits") else output


class BuiltinSource(ModelSource):
    """retain's own mlp / cnn / resnet18 (``app.learning.models``), head ``head``."""

    kind = "builtin"

    @property
    def spec(self) -> str:
        return self.name

    def build(self, input_shape, n_classes):
        return build_model(self.name, input_shape, n_classes, **self.options)

    def head_path(self, model):
        return "head"


class TorchvisionSource(ModelSource):
    """``torchvision:<builder>`` with ``weights=None`` (nothing downloaded) and ``num_classes``."""

    kind = "torchvision"

    def __init__(self, name, options=None, config=None):
        super().__init__(name, options, config)
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ImportRefused(
                f"torchvision has no classification builder {name!r} "
                "(see GET /architectures, or torchvision.models.list_models(module=torchvision.models))"
            )

    def build(self, input_shape, n_classes):
        import torchvision

        builder = torchvision.models.get_model_builder(self.name)
        try:
            return builder(weights=None, num_classes=n_classes, **self.options)
        except TypeError as error:
            raise ImportRefused(f"torchvision:{self.name} options {sorted(self.options)}: {error}") from None

    def head_path(self, model):
        for name in ("fc", "heads.head", "head"):
            try:
                if isinstance(model.get_submodule(name), nn.Linear):
                    return name
            except AttributeError:
                continue
        return last_linear(model)


class TimmSource(ModelSource):
    """``timm:<name>``; the head is ``get_classifier()``, mean/std from the pretrained configuration."""

    kind = "timm"

    def __init__(self, name, options=None, config=None):
        super().__init__(name, options, config)
        import timm

        if not timm.is_model(name):
            raise ImportRefused(f"timm has no architecture {name!r} (see timm.list_models())")

    def build(self, input_shape, n_classes):
        import timm

        try:
            return timm.create_model(
                self.name, pretrained=False, num_classes=n_classes, in_chans=int(input_shape[0]), **self.options
            )
        except TypeError as error:
            raise ImportRefused(f"timm:{self.name} options {sorted(self.options)}: {error}") from None

    def head_path(self, model):
        classifier = model.get_classifier()
        if isinstance(classifier, nn.Linear):
            for name, module in model.named_modules():
                if module is classifier:
                    return name
        raise ImportRefused(f"timm:{self.name}'s classifier is not a linear layer; retain grows linear heads")

    def defaults(self):
        import timm

        config = timm.get_pretrained_cfg(self.name)
        if config is None or config.mean is None:
            return {}
        return {"mean": list(config.mean), "std": list(config.std)}


class HuggingFaceSource(ModelSource):
    """``hf``: a transformers image classifier from its config (``AutoModelForImageClassification``)."""

    kind = "hf"

    def __init__(self, name="", options=None, config=None):
        super().__init__(name or "image-classification", options, config)
        if not isinstance(config, dict):
            raise ImportRefused("an hf import needs the model's config.json")
        model_type = config.get("model_type")
        from transformers import CONFIG_MAPPING

        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            raise ImportRefused(
                f"config.json's model_type {model_type!r} is not one transformers knows; retain never runs a "
                "repository's own code (trust_remote_code)"
            )

    @property
    def spec(self) -> str:
        return "hf"

    @property
    def hf_config(self) -> dict:
        """The directory's config.json (an ``hf`` source is never made without one)."""
        if self.config is None:
            raise ImportRefused("an hf import needs the directory's config.json")
        return self.config

    def _config(self, n_classes: int):
        from transformers import AutoConfig

        values = {k: v for k, v in self.hf_config.items() if k not in ("model_type", "auto_map")}
        config = AutoConfig.for_model(self.hf_config["model_type"], **values)
        if config.num_labels != n_classes:
            config.num_labels = n_classes
        return config

    def build(self, input_shape, n_classes):
        from transformers import AutoModelForImageClassification

        try:
            return AutoModelForImageClassification.from_config(self._config(n_classes), trust_remote_code=False)
        except ValueError as error:
            raise ImportRefused(
                f"model_type {self.hf_config['model_type']!r} is not an image classifier: {error}"
            ) from None

    def head_path(self, model):
        classifier = getattr(model, "classifier", None)
        if isinstance(classifier, nn.Linear):
            return "classifier"
        if isinstance(classifier, nn.Module):
            return "classifier." + last_linear(classifier)
        return last_linear(model)

    def labels(self):
        id2label = self.hf_config.get("id2label")
        if not id2label:
            return None
        return [id2label[key] for key in sorted(id2label, key=int)]

    def load(self, model, weights, skip):
        """transformers' own loader (``from_pretrained``: safetensors only, no repository code), which
        also renames the legacy checkpoint keys older transformers saved; refuses (422) a checkpoint
        with missing, unexpected or mismatched keys, as ``check_weights`` does for the other sources."""
        from transformers import AutoModelForImageClassification

        try:
            loaded, info = AutoModelForImageClassification.from_pretrained(
                str(weights.parent),
                config=self._config(model.get_submodule(self.head_path(model)).out_features),
                use_safetensors=True,
                trust_remote_code=False,
                local_files_only=True,
                output_loading_info=True,
            )
        except (OSError, RuntimeError, ValueError) as error:
            raise ImportRefused(f"the weights do not fit the hf architecture: {str(error)[:500]}") from None
        ignored = (lambda key: key == skip or key.startswith(skip + ".")) if skip else (lambda key: False)
        problems = {
            kind: sorted(str(k) for k in info.get(kind, ()) if not ignored(str(k if isinstance(k, str) else k[0])))
            for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
        }
        shown = "; ".join(
            f"{len(keys)} {kind.replace('_', ' ')} ({', '.join(keys[:SHOWN])})"
            for kind, keys in problems.items()
            if keys
        )
        if shown:
            raise ImportRefused(f"the weights do not fit the architecture: {shown}")
        return loaded


class PluginSource(ModelSource):
    """An installed package's entry point in ``retain.architectures``."""

    kind = "plugin"

    def __init__(self, name, options=None, config=None):
        super().__init__(name, options, config)
        found = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == name]
        if not found:
            raise ImportRefused(f"unknown source {name!r}: not a built-in, torchvision:, timm:, hf or installed plugin")
        self.entry_point = found[0]

    @property
    def spec(self) -> str:
        return self.name

    def build(self, input_shape, n_classes):
        return self.entry_point.load()(tuple(input_shape), n_classes, **self.options)

    def head_path(self, model):
        if isinstance(getattr(model, "head", None), nn.Linear):
            return "head"
        return last_linear(model)


def source_for(spec: str, options: dict | None = None, config: dict | None = None) -> ModelSource:
    """The source a ``source`` string names (see the module docstring)."""
    if spec in ARCHITECTURES:
        return BuiltinSource(spec, options)
    if spec == "hf":
        return HuggingFaceSource("", options, config)
    prefix, _, name = spec.partition(":")
    if prefix == "torchvision" and name:
        return TorchvisionSource(name, options)
    if prefix == "timm" and name:
        return TimmSource(name, options)
    return PluginSource(spec, options)


def plugin_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=PLUGIN_GROUP)})


def architectures() -> dict:
    """What ``source`` accepts: built-ins, installed plugins, and the torchvision / timm families."""
    import timm
    import torchvision

    return {
        "builtin": list(ARCHITECTURES),
        "plugins": plugin_names(),
        "torchvision": sorted(torchvision.models.list_models(module=torchvision.models)),
        "timm": {"count": len(timm.list_models()), "families": sorted({n.split("_")[0] for n in timm.list_models()})},
        "hf": "any transformers image classifier, or sequence classifier with tokenizer.json (a text model); "
        "config.json model_type in transformers' registry",
    }


def parameter_count(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
