"""A version's consolidation as a small manifest of per-task artifacts, so update k costs what
update 1 did, plus the evaluation of old tasks.

Each learnt task contributes two artifacts, written once by the update that learnt it and
referenced (never rewritten) by every later version:

* its *state* (separate EWC): the task's Fisher and anchor, ``{fisher,anchor}.{param}``;
* its *evaluation splits*: the task's validation and test samples with no training data
  (``app.datasets.storage.evaluation_payload``), all that a later update reads of an old task.

The version's consolidation payload is then a tensor-free safetensors file whose metadata lists
those references (``MANIFEST_FORMAT``). Where the family's state is one payload that changes at
every update (online EWC's running Fisher, CCLL's), the manifest points at that one payload
instead: it stays one artifact of constant size. What a version stores is thus its weights, one
task's state and splits, and the manifest (a few hundred bytes per learnt task); a model taught
with rehearsal (``replay``, ``ewc_replay``) also stores its memory, one payload of at most
``memory_size`` samples per version, rebalanced over the tasks at every update.

Versions written before the manifest (one payload holding every task's Fisher and anchor) still
load: ``read_consolidation`` returns their payload as it is, with no manifest, and the next update
writes the manifest, splitting their tasks out once.

A task's state is stored at the parameter shapes of the update that learnt it; when the head has
grown since, it is zero-padded on load (new outputs carry no Fisher), as ``Consolidation`` does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch

from app.learning.ewc_penalty import pad_to
from app.learning.memory import PREFIX as MEMORY_PREFIX
from app.storage.artifacts import ArtifactRef, ArtifactStore

MANIFEST_FORMAT = "retain.consolidation-manifest/1"
TASK_STATE_FORMAT = "retain.task-state/1"
MEMORY_FORMAT = "retain.rehearsal-memory/1"

Payload = tuple[dict[str, torch.Tensor], dict[str, str]]


@dataclass
class Manifest:
    """What a version's consolidation refers to; see the module docstring."""

    family_state: dict  # the learner's consolidation metadata (format, mode, gamma, order, ...)
    task_state: dict[str, ArtifactRef] = field(default_factory=dict)  # task key -> Fisher + anchor
    state: ArtifactRef | None = None  # one payload for the whole state (online EWC, CCLL)
    evaluation: dict[str, ArtifactRef] = field(default_factory=dict)  # task key -> validation + test splits
    memory: ArtifactRef | None = None  # the rehearsal memory (replay strategies): bounded, rewritten per update

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "family_state": self.family_state,
                "task_state": {key: asdict(ref) for key, ref in self.task_state.items()},
                "state": asdict(self.state) if self.state else None,
                "evaluation": {key: asdict(ref) for key, ref in self.evaluation.items()},
                "memory": asdict(self.memory) if self.memory else None,
            }
        )

    @classmethod
    def from_json(cls, meta: dict) -> Manifest:
        return cls(
            family_state=meta["family_state"],
            task_state={key: ArtifactRef(**ref) for key, ref in meta["task_state"].items()},
            state=ArtifactRef(**meta["state"]) if meta["state"] else None,
            evaluation={key: ArtifactRef(**ref) for key, ref in meta["evaluation"].items()},
            memory=ArtifactRef(**meta["memory"]) if meta.get("memory") else None,
        )


def write_consolidation(
    store: ArtifactStore, learner, parent: Manifest | None, evaluation: dict[str, ArtifactRef]
) -> ArtifactRef:
    """Store ``learner``'s consolidation as a manifest: the parent's task states are referenced,
    only tasks it does not list (this update's, or all of an old-format parent's) are written."""
    tensors, metadata = learner.export_consolidation()
    family_state = json.loads(metadata["retain"])
    manifest = Manifest(family_state=family_state, evaluation=evaluation)
    if learner.consolidation is not None and learner.consolidation.mode == "separate":
        known = parent.task_state if parent is not None else {}
        memory = {name: t for name, t in tensors.items() if name.startswith(MEMORY_PREFIX)}
        if memory:  # at most memory_size samples whatever k: one payload per version, constant in size
            manifest.memory = store.put_tensors(memory, {"retain": json.dumps({"format": MEMORY_FORMAT})})
        for key in family_state["order"]:
            manifest.task_state[key] = known.get(key) or store.put_tensors(
                {name.removeprefix(f"{key}."): t for name, t in tensors.items() if name.startswith(f"{key}.")},
                {"retain": json.dumps({"format": TASK_STATE_FORMAT, "task_key": key})},
            )
    else:
        manifest.state = store.put_tensors(tensors, metadata)
    return store.put_tensors({}, {"retain": manifest.to_json()})


def read_consolidation(
    store: ArtifactStore, uri: str, sha256: str | None, shapes: dict[str, torch.Size]
) -> tuple[Payload, Manifest | None]:
    """The consolidation payload ``ContinualLearner.from_exports`` takes, every task's tensors
    padded to ``shapes`` (the network's), and the manifest it came from (None: an old version)."""
    tensors, metadata = store.get_tensors(uri, sha256)
    meta = json.loads(metadata.get("retain", "{}"))
    if meta.get("format") != MANIFEST_FORMAT:
        return (tensors, metadata), None
    manifest = Manifest.from_json(meta)
    if manifest.state is not None:
        return store.get_tensors(manifest.state.uri, manifest.state.sha256), manifest
    tensors = store.get_tensors(manifest.memory.uri, manifest.memory.sha256)[0] if manifest.memory else {}
    for key, ref in manifest.task_state.items():
        part, _ = store.get_tensors(ref.uri, ref.sha256)
        for name, tensor in part.items():
            parameter = name.split(".", 1)[1]
            tensors[f"{key}.{name}"] = pad_to(tensor, shapes[parameter]) if parameter in shapes else tensor
    return (tensors, {"retain": json.dumps(manifest.family_state)}), manifest


def manifest_references(store: ArtifactStore, uri: str, sha256: str | None) -> list[ArtifactRef]:
    """Every artifact a version's consolidation payload refers to (none for one stored before manifests,
    whose payload holds its tensors itself): what garbage collection must keep while the version is kept."""
    _, metadata = store.get_tensors(uri, sha256)
    meta = json.loads(metadata.get("retain", "{}"))
    if meta.get("format") != MANIFEST_FORMAT:
        return []
    manifest = Manifest.from_json(meta)
    return [
        *manifest.task_state.values(),
        *manifest.evaluation.values(),
        *(ref for ref in (manifest.state, manifest.memory) if ref is not None),
    ]
