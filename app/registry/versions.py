"""A stored version's learner, loaded from its artifacts: the one loader serving and updates share.

Serving needs only the weights artifact; an update also needs the consolidation (Fisher and
anchors) to keep protecting earlier tasks. Both payloads are verified against the sha256 the
version row records (``ArtifactStore.get_tensors``), so a damaged artifact is refused.
"""

from __future__ import annotations

from app.db.tables import ModelVersion
from app.learning import ContinualLearner
from app.storage.artifacts import ArtifactStore


def load_version(store: ArtifactStore, version: ModelVersion, *, with_consolidation: bool) -> ContinualLearner:
    """The learner of ``version``, on the cpu in eval mode; ``with_consolidation`` for one that can learn on."""
    weights = store.get_tensors(version.weights_uri, version.weights_sha256)
    consolidation = None
    if with_consolidation and version.consolidation_uri:
        consolidation = store.get_tensors(version.consolidation_uri, version.consolidation_sha256)
    learner = ContinualLearner.from_exports(weights, consolidation)
    learner.network.eval()
    return learner
