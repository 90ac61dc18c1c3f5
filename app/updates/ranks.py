"""An update across N processes on the worker's machine, for a task that asks for ``nproc`` > 1.

The worker (which holds the job's lease) saves the parent learner to a scratch directory and
starts N ranks (``app.learning.distributed.spawn``: gloo on CPU, nccl on GPU with rank K on
``cuda:K``). Every rank loads that learner and the same splits from the artifact store, and runs
the same ``learn_and_evaluate``; training and the Fisher are split across them by
``app.learning.distributed`` (data-parallel steps; disjoint Fisher shards and one all-reduce),
so their weights, λ search and accuracy table agree. Rank 0 alone writes the result back (the
learnt learner, the update's numbers); the worker then stores the artifacts and commits once,
exactly as for a one-process update.

A rank that dies (killed, out of memory) ends every rank (``torch.multiprocessing`` stops the
others) before anything is stored: ``RankLost`` makes the worker retry the job, or fail it after
its last attempt, as if the worker itself had been lost; a rank that raises fails the job with
the rank's error. Progress is not reported per step while the ranks run (the worker reports the
``train`` phase) and a cancel request takes effect when they finish.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch.multiprocessing as mp

from app.datasets.storage import load_dataset_splits
from app.learning import ContinualLearner, Evaluation, EWCConfig, UpdateResult, distributed
from app.storage.artifacts import ArtifactStore
from app.updates.learn import learn_and_evaluate

RESULT_FILE = "result.json"


class RankLost(Exception):
    """One process of a multi-process update died before it finished."""


def _creation(learner: ContinualLearner) -> dict | None:
    """How to build ``learner`` afresh when it has learnt nothing yet (there is nothing to save)."""
    if learner.task_keys:
        return None
    return {
        "architecture": learner.architecture,
        "input_shape": learner.input_shape,
        "family": learner.family,
        "architecture_options": learner.architecture_options,
        "ewc": learner.ewc.as_dict(),
        "input_scale": learner.input_scale,
        "seed": learner.seed,
    }


def _rank(
    rank: int,
    world: int,
    device: str,
    directory: str,
    creation: dict | None,
    store_uri: str,
    refs_of: dict[int, tuple[str, str]],
    task_id: int,
    strategy: str | None,
    hyperparameters: dict,
    fisher_samples: int,
) -> None:
    store = ArtifactStore(store_uri)
    if creation is not None:
        learner = ContinualLearner.create(**{**creation, "ewc": EWCConfig(**creation["ewc"])})
    else:
        learner = ContinualLearner.load(Path(directory) / "in")
    splits_of = {key: load_dataset_splits(store, uri, sha256) for key, (uri, sha256) in refs_of.items()}
    learner.to(device)
    learner.ewc.fisher = replace(learner.ewc.fisher, max_samples=fisher_samples)
    result, accuracy = learn_and_evaluate(learner, task_id, strategy, hyperparameters, splits_of, device)
    if rank == 0:
        learner.save(Path(directory) / "out")
        (Path(directory) / RESULT_FILE).write_text(
            json.dumps({"result": result.as_dict(), "accuracy": {str(key): asdict(e) for key, e in accuracy.items()}})
        )


def learn_across_processes(
    learner: ContinualLearner,
    nproc: int,
    device: str,
    store: ArtifactStore,
    refs_of: dict[int, tuple[str, str]],
    task_id: int,
    strategy: str | None,
    hyperparameters: dict,
    fisher_samples: int,
) -> tuple[ContinualLearner, UpdateResult, dict[int, Evaluation]]:
    """``learn_and_evaluate`` on ``nproc`` ranks; ``refs_of`` names each task's splits in the store
    (uri, sha256). Returns rank 0's learner and numbers."""
    with tempfile.TemporaryDirectory(prefix="retain-ranks-") as directory:
        creation = _creation(learner)
        if creation is None:
            learner.save(Path(directory) / "in")
        try:
            distributed.spawn(
                _rank,
                nproc,
                device,
                directory,
                creation,
                store.uri_root,
                refs_of,
                task_id,
                strategy,
                hyperparameters,
                fisher_samples,
            )
        except mp.ProcessExitedException as lost:
            raise RankLost(f"a process of this {nproc}-process update was lost: {lost}") from lost
        except mp.ProcessRaisedException as error:  # the rank's own error, e.g. a ValueError on bad data
            raise RuntimeError(str(error).strip().splitlines()[-1]) from error
        out = json.loads((Path(directory) / RESULT_FILE).read_text())
        learnt = ContinualLearner.load(Path(directory) / "out")
    return (learnt, UpdateResult(**out["result"]), {int(key): Evaluation(**e) for key, e in out["accuracy"].items()})
