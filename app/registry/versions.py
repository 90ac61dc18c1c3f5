"""A stored version's learner, loaded from its artifacts: the one loader serving and updates share.

Serving needs only the weights artifact; an update also needs the consolidation (Fisher and
anchors, ``app.registry.consolidation``: a manifest of per-task artifacts, or one payload for
versions written before it) to keep protecting earlier tasks. Every payload is verified against
the sha256 recorded for it (``ArtifactStore.get_tensors``), so a damaged artifact is refused.
"""

from __future__ import annotations

from app.db.tables import ModelVersion
from app.learning import ContinualLearner
from app.registry.consolidation import Manifest, read_consolidation
from app.storage.artifacts import ArtifactStore


def load_version(store: ArtifactStore, version: ModelVersion, *, with_consolidation: bool) -> ContinualLearner:
    """The learner of ``version``, on the cpu in eval mode; ``with_consolidation`` for one that can learn on."""
    if with_consolidation:
        return load_for_update(store, version)[0]
    learner = ContinualLearner.from_exports(store.get_tensors(version.weights_uri, version.weights_sha256))
    learner.built_network.eval()
    return learner


def load_for_update(store: ArtifactStore, version: ModelVersion) -> tuple[ContinualLearner, Manifest | None]:
    """The learner of ``version`` with its consolidation, and the manifest that lists its per-task
    artifacts (None for a version stored before manifests)."""
    weights = store.get_tensors(version.weights_uri, version.weights_sha256)
    consolidation, manifest = None, None
    if version.consolidation_uri:
        shapes = {
            name.removeprefix("model."): tensor.shape
            for name, tensor in weights[0].items()
            if name.startswith("model.")
        }
        consolidation, manifest = read_consolidation(
            store, version.consolidation_uri, version.consolidation_sha256, shapes
        )
    learner = ContinualLearner.from_exports(weights, consolidation)
    learner.built_network.eval()
    return learner, manifest
