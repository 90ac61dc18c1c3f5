"""Artifact garbage collection: remove what no row refers to, never what a commit may be about to.

An artifact is *referenced* while a row names it: a dataset row (its parsed upload), an imported
model's row (the weights sent to POST /models, which its import job, or a retry of it, builds
version 1 from, however long it waits in the queue), a version's weights and consolidation, and
every artifact that consolidation's manifest lists (per-task Fisher and anchors, evaluation splits,
a one-payload state, the rehearsal memory), which later versions share with the one that wrote
them. Everything else in the store is garbage: what a job wrote before it crashed (or lost its
lease) short of its commit, an upload refused under the write lock, what deleted versions and
models referred to.

Garbage is removed only once it is older than ``artifact_gc_grace_seconds`` (an hour by default):
a job writes its artifacts *before* the transaction that refers to them, so a young unreferenced
artifact may be a commit about to happen. A writer that finds its bytes already stored refreshes
their age (``ArtifactStore.put``), so reusing an old artifact is protected the same way, and an
update stores again, right before its commit, what it wrote before training (app/updates/apply.py),
however long it trained. The
store is listed *before* the references are read (an artifact written after the listing is no
candidate), and each candidate's age is read again just before it is removed. Ages are compared
with this machine's clock: keep the grace far above any clock skew between it and the store.

A consolidation that cannot be read leaves its references unknown: nothing is removed then, and
the error names the version.

Who runs it: every worker when it starts (app/updates/loop.py, next to the stale-temporary
cleanup: workers are what write artifacts, a restart follows the crashes that leave garbage, and it
needs no timer or extra process), an admin on demand (``POST /artifacts/gc``, ``retain gc``; from
cron for a long-lived deployment), and every delete of a model or version, for what it freed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import Dataset, Model, ModelVersion
from app.errors import Conflict
from app.registry.consolidation import manifest_references
from app.storage.artifacts import ArtifactStore


class ReferencesUnknown(Conflict):
    """A kept version's consolidation cannot be read, so what it refers to is unknown: nothing is removed."""


@dataclass(frozen=True)
class Collection:
    """What one collection found and did (with ``dry_run``, what it would have removed)."""

    dry_run: bool
    grace_seconds: float
    stored: int  # artifacts in the store when it was listed
    referenced: int  # of those, named by a row
    kept_recent: int  # unreferenced, but younger than the grace period
    removed: int
    bytes_freed: int


def referenced_artifacts(session: Session, store: ArtifactStore) -> set[str]:
    """The sha256 of every artifact a row refers to, directly or through a version's manifest."""
    referenced = set(session.scalars(select(Dataset.artifact_sha256).where(Dataset.artifact_sha256 != "")))
    for options in session.scalars(select(Model.options)):  # imported weights (app/imports/service.py)
        imported = (options or {}).get("import") or {}
        if imported.get("weights_sha256"):
            referenced.add(imported["weights_sha256"])
    manifests = set()
    rows = session.execute(
        select(
            ModelVersion.number,
            Model.name,
            ModelVersion.weights_sha256,
            ModelVersion.consolidation_uri,
            ModelVersion.consolidation_sha256,
        ).join(Model, ModelVersion.model_id == Model.id)
    ).all()
    for number, model, weights, consolidation_uri, consolidation in rows:
        referenced.add(weights)
        if consolidation_uri is None or consolidation in manifests:
            continue
        if consolidation is not None:
            referenced.add(consolidation)
        manifests.add(consolidation)
        try:
            referenced.update(ref.sha256 for ref in manifest_references(store, consolidation_uri, consolidation))
        except Exception as error:  # missing, damaged, unreachable: its references are unknown
            raise ReferencesUnknown(
                f"version {number} of model {model!r}: its consolidation {consolidation_uri} cannot be read "
                f"({type(error).__name__}: {error}), so what it refers to is unknown; no artifact was removed"
            ) from error
    return referenced


def collect_garbage(session: Session, store: ArtifactStore, grace_seconds: float, dry_run: bool = False) -> Collection:
    """Remove (or, with ``dry_run``, count) every unreferenced artifact older than ``grace_seconds``."""
    listed = store.stored()  # first: see the module docstring
    session.rollback()  # the references as committed now, in a fresh read
    referenced = referenced_artifacts(session, store)
    session.rollback()
    cutoff = time.time() - grace_seconds
    kept_recent = removed = freed = 0
    for artifact in listed:
        if artifact.sha256 in referenced:
            continue
        if artifact.modified is None or artifact.modified >= cutoff:
            kept_recent += 1
            continue
        size = artifact.size if dry_run else store.remove_unless_newer(artifact.sha256, cutoff)
        if size is None:
            kept_recent += 1
            continue
        removed += 1
        freed += size
    return Collection(
        dry_run=dry_run,
        grace_seconds=grace_seconds,
        stored=len(listed),
        referenced=sum(artifact.sha256 in referenced for artifact in listed),
        kept_recent=kept_recent,
        removed=removed,
        bytes_freed=freed,
    )
