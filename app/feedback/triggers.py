"""The triggers, evaluated by the worker: decide, record why, and turn the labelled buffer into a task.

`TriggerEvaluator.run_due` is called from the worker loop (app/updates/loop.py) every
``feedback_check_interval`` seconds, never from a request. For each model with a policy it judges
every trigger, records the decision in ``trigger_decisions`` (fired or not, and why; a decision the
same as that trigger's last one is not written again), and when one fires, builds a task named
``feedback-<UTC timestamp>`` from the labels not yet learnt from, submitted through the same service
as an upload (app/tasks/service.py: its own train/validation/test splits, the model's strategy, the
gate, the accuracy table). At most one trigger-made update per model is queued or running at a time
(checked again under the model's lock as the task is written, so two workers cannot both queue one):
a trigger that fires meanwhile is recorded as fired and not queued. The samples a task took stay
claimed by it until its job ends: an update that does not land (rejected by the gate, failed,
cancelled) gives them back to the buffer (app/jobs/state_machine.py), and the next update is queued
once a new label has arrived since (the same labels alone would most likely end the same way).

Drift is a two-sample Kolmogorov-Smirnov test per input feature (``scipy.stats.ks_2samp``) between
the most recent logged inputs and a sample of the serving version's training data, with a Bonferroni
bound: drift when some feature's p-value is below ``alpha / features``. A text model has no numeric
features: its policy may not hold a drift trigger (PUT answers 422), and its buffer becomes a task as
JSON Lines of text and label, the form POST /tasks takes.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.datasets.storage import load_dataset_splits
from app.db.tables import Dataset, FeedbackPolicy, Job, LoggedSample, Model, ModelVersion, Task, TriggerDecision
from app.errors import Conflict, DomainError
from app.feedback.prediction_log import unpack_inputs, unpack_text
from app.feedback.schemas import AccuracyBelow, AccuracyDrop, Drift, EveryNLabels, EverySeconds, FeedbackPolicyIn
from app.feedback.service import buffered_labels, is_text_model, live_accuracy, promotion_accuracy
from app.imports import IMPORT_STRATEGY
from app.jobs.status import UNFINISHED, UNLANDED
from app.tasks.schemas import TaskRequest
from app.tasks.service import submit_task

log = logging.getLogger(__name__)

TASK_PREFIX = "feedback-"


@dataclass
class Verdict:
    trigger: str
    fired: bool
    reason: str


@dataclass
class ModelState:
    """What the triggers of one model are judged on, read once per evaluation."""

    model: Model
    policy: FeedbackPolicyIn
    policy_set_at: datetime
    buffered: int
    pending_job: int | None  # an unfinished trigger-made update
    waiting: str | None = None  # why the buffer may not be queued again yet (the last update did not land)


class TriggerEvaluator:
    """One per worker: the clock of the evaluations and the drift references, kept between them."""

    def __init__(self, factory, store, settings):
        self.factory, self.store, self.settings = factory, store, settings
        self.next_run = 0.0
        self._references: dict[tuple[int, int], np.ndarray] = {}  # (version id, samples) -> flat samples

    def run_due(self) -> None:
        """Evaluate every model's triggers if ``feedback_check_interval`` has passed since the last time."""
        now = time.monotonic()
        if now < self.next_run:
            return
        self.next_run = now + self.settings.feedback_check_interval
        self.run()

    def run(self) -> list[Verdict]:
        with self.factory() as session:
            model_ids = list(session.scalars(select(FeedbackPolicy.model_id).order_by(FeedbackPolicy.model_id)))
        verdicts = []
        for model_id in model_ids:
            try:
                with self.factory() as session:
                    verdicts.extend(self.evaluate(session, model_id))
            except Exception:  # one model's trouble (a missing artifact) must not stop the others
                log.exception("feedback triggers of model %s could not be evaluated", model_id)
        return verdicts

    def evaluate(self, session: Session, model_id: int) -> list[Verdict]:
        state = model_state(session, model_id)
        if state is None or not state.policy.triggers:
            return []
        if state.model.serving_version_id is None:
            verdicts = [Verdict("policy", False, "the model has no serving version yet")]
        else:
            verdicts = [self.judge(session, state, trigger) for trigger in state.policy.triggers]
        task_id = None
        if any(verdict.fired for verdict in verdicts):
            task_id, note = self.act(session, state)
            for verdict in verdicts:
                if verdict.fired:
                    verdict.reason = f"{verdict.reason}; {note}"
        record(session, model_id, verdicts, task_id)
        session.commit()
        return verdicts

    # ------------------------------------------------------------------------------------- judging
    def judge(self, session: Session, state: ModelState, trigger) -> Verdict:
        policy, version_id = state.policy, state.model.serving_version_id
        if version_id is None:
            return Verdict(trigger.kind, False, "the model has no serving version yet")
        if isinstance(trigger, EveryNLabels):
            fired = state.buffered >= trigger.n
            return Verdict(trigger.kind, fired, f"{state.buffered} labels buffered, fires at {trigger.n}")
        if isinstance(trigger, EverySeconds):
            since = last_update_at(session, state.model.id) or state.policy_set_at
            due = since.timestamp() + trigger.seconds
            fired = time.time() >= due
            when = datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
            return Verdict(trigger.kind, fired, f"due at {when} ({trigger.seconds:g} s after {since:%H:%M:%S})")
        if isinstance(trigger, (AccuracyBelow, AccuracyDrop)):
            accuracy, n = live_accuracy(session, state.model.id, version_id, policy.accuracy_window)
            if accuracy is None or n < trigger.min_samples:
                return Verdict(
                    trigger.kind, False, f"{n} labelled predictions of the serving version; needs {trigger.min_samples}"
                )
            if isinstance(trigger, AccuracyBelow):
                fired = accuracy < trigger.threshold
                return Verdict(
                    trigger.kind,
                    fired,
                    f"live accuracy {accuracy:.3f} over {n} {'<' if fired else '>='} {trigger.threshold:g}",
                )
            baseline = promotion_accuracy(session, version_id)
            if baseline is None:
                return Verdict(trigger.kind, False, "the serving version has no accuracy at promotion")
            drop = baseline - accuracy
            fired = drop >= trigger.drop
            return Verdict(
                trigger.kind,
                fired,
                f"live accuracy {accuracy:.3f} over {n}, {drop:+.3f} below {baseline:.3f} at promotion "
                f"({'>=' if fired else '<'} {trigger.drop:g})",
            )
        if isinstance(trigger, Drift):
            if is_text_model(state.model):  # PUT refuses it; a policy stored before that rule is judged so
                return Verdict(trigger.kind, False, "drift tests numeric features; it does not apply to a text model")
            return self.judge_drift(session, state, trigger, version_id)
        raise TypeError(f"unknown trigger {trigger!r}")

    def judge_drift(self, session: Session, state: ModelState, trigger: Drift, version_id: int) -> Verdict:
        from scipy.stats import ks_2samp  # type: ignore[import-untyped]  # only a drift trigger pays the import

        rows = list(
            session.scalars(
                select(LoggedSample.inputs)
                .where(LoggedSample.model_id == state.model.id, LoggedSample.model_version_id.is_not(None))
                .order_by(LoggedSample.id.desc())
                .limit(trigger.window)
            )
        )
        if len(rows) < trigger.min_samples:
            return Verdict(
                trigger.kind, False, f"{len(rows)} recent inputs logged; the test needs {trigger.min_samples}"
            )
        shape = state.model.input_shape
        recent = np.stack([unpack_inputs(data, shape).reshape(-1) for data in rows])
        reference = self.reference(session, version_id, trigger.reference_samples)
        if reference is None:
            return Verdict(trigger.kind, False, "the serving version's training data cannot be read")
        pvalues = np.nan_to_num(np.atleast_1d(ks_2samp(reference, recent, axis=0).pvalue), nan=1.0)
        bound = trigger.alpha / pvalues.size
        drifted = int((pvalues < bound).sum())
        return Verdict(
            trigger.kind,
            drifted > 0,
            f"KS test, {len(recent)} recent inputs against {len(reference)} training samples: "
            f"{drifted} of {pvalues.size} features below alpha/features = {bound:.2g} "
            f"(smallest p {pvalues.min():.2g})",
        )

    def reference(self, session: Session, version_id: int, samples: int) -> np.ndarray | None:
        """Up to ``samples`` training samples of the version's task, flattened (kept between evaluations)."""
        key = (version_id, samples)
        if key not in self._references:
            uri, sha256 = session.execute(
                select(Dataset.artifact_uri, Dataset.artifact_sha256)
                .join(Task, Task.dataset_id == Dataset.id)
                .join(ModelVersion, ModelVersion.task_id == Task.id)
                .where(ModelVersion.id == version_id)
            ).one_or_none() or (None, None)
            if uri is None:
                return None
            train = load_dataset_splits(self.store, uri, sha256)["train"].x
            train = np.asarray(train, dtype=np.float32).reshape(len(train), -1)
            pick = np.random.default_rng(version_id).permutation(len(train))[:samples]
            self._references = {key: train[np.sort(pick)]}  # only the serving version's is worth keeping
        return self._references[key]

    # -------------------------------------------------------------------------------------- acting
    def act(self, session: Session, state: ModelState) -> tuple[int | None, str]:
        """Queue the update a fired trigger asks for, if it may be: (its task id, what happened)."""
        if state.pending_job is not None:
            return None, f"not queued: job {state.pending_job}, made by a trigger, is still unfinished"
        if state.buffered < state.policy.min_labels:
            return None, f"not queued: {state.buffered} labels buffered, a task needs {state.policy.min_labels}"
        if state.waiting is not None:
            return None, f"not queued: {state.waiting}"
        session.rollback()
        try:
            task_id = submit_buffer(session, self.store, self.settings, state)
        except DomainError as error:
            session.rollback()
            return None, f"not queued: the task was refused ({error.message})"
        return task_id, f"queued task {task_id}"


def model_state(session: Session, model_id: int) -> ModelState | None:
    row = session.get(FeedbackPolicy, model_id)
    model = session.get(Model, model_id)
    if row is None or model is None:
        return None
    pending = pending_update(session, model_id)
    return ModelState(
        model=model,
        policy=FeedbackPolicyIn.model_validate(row.policy),
        policy_set_at=row.updated_at,
        buffered=buffered_labels(session, model_id),
        pending_job=pending,
        waiting=None if pending is not None else waiting_for_new_labels(session, model_id),
    )


def waiting_for_new_labels(session: Session, model_id: int) -> str | None:
    """Why the buffer must not be queued again yet: the last trigger-made update ended without landing
    and gave its labels back, and none has arrived (or changed) since. None: it may be queued."""
    last = session.execute(
        select(Task.id, Task.status, Task.created_at)
        .where(Task.model_id == model_id, Task.name.like(f"{TASK_PREFIX}%"))
        .order_by(Task.id.desc())
        .limit(1)
    ).one_or_none()
    if last is None or last.status not in UNLANDED:
        return None
    newest = session.scalar(
        select(func.max(LoggedSample.labelled_at)).where(
            LoggedSample.model_id == model_id, LoggedSample.labelled_at.is_not(None), LoggedSample.task_id.is_(None)
        )
    )
    if newest is not None and newest > last.created_at:
        return None
    return f"task {last.id}, made by a trigger from these labels, ended {last.status}; waiting for a new label"


def pending_update(session: Session, model_id: int) -> int | None:
    """The job of an unfinished trigger-made update of the model, if any."""
    return session.scalar(
        select(Job.id)
        .join(Task, Job.task_id == Task.id)
        .where(Job.model_id == model_id, Job.status.in_(UNFINISHED), Task.name.like(f"{TASK_PREFIX}%"))
        .limit(1)
    )


def last_update_at(session: Session, model_id: int) -> datetime | None:
    return session.scalar(
        select(func.max(Task.created_at)).where(Task.model_id == model_id, Task.name.like(f"{TASK_PREFIX}%"))
    )


def record(session: Session, model_id: int, verdicts: list[Verdict], task_id: int | None) -> None:
    """Write each decision unless it repeats that trigger's last one word for word (and queued nothing)."""
    for verdict in verdicts:
        last = session.scalar(
            select(TriggerDecision)
            .where(TriggerDecision.model_id == model_id, TriggerDecision.trigger == verdict.trigger)
            .order_by(TriggerDecision.id.desc())
            .limit(1)
        )
        queued = task_id if verdict.fired else None
        if last is not None and queued is None and (last.fired, last.reason) == (verdict.fired, verdict.reason):
            continue
        session.add(
            TriggerDecision(
                model_id=model_id, trigger=verdict.trigger, fired=verdict.fired, reason=verdict.reason, task_id=queued
            )
        )


def submit_buffer(session: Session, store, settings, state: ModelState) -> int:
    """The buffer as a task of the model (through the upload path), its samples claimed by it (given
    back if its update does not land)."""
    model = state.model
    rows = session.execute(
        select(LoggedSample.id, LoggedSample.inputs, LoggedSample.label)
        .where(LoggedSample.model_id == model.id, LoggedSample.labelled_at.is_not(None), LoggedSample.task_id.is_(None))
        .order_by(LoggedSample.id)
        .limit(settings.max_upload_samples)
    ).all()
    labels = [row.label for row in rows]
    if is_text_model(model):  # JSON Lines of text and label, as POST /tasks takes a text task
        filename = "feedback.jsonl"
        data = "".join(
            json.dumps({"text": unpack_text(row.inputs), "label": label}, ensure_ascii=False) + "\n"
            for row, label in zip(rows, labels, strict=True)
        ).encode("utf-8")
    else:
        x = np.stack([unpack_inputs(row.inputs, model.input_shape) for row in rows])
        y = np.asarray(labels, dtype=str if any(isinstance(label, str) for label in labels) else np.int64)
        buffer = io.BytesIO()
        np.savez(buffer, x=x, y=y)
        filename, data = "feedback.npz", buffer.getvalue()
    # the model's last task that trained: an import's task (strategy "import") trains nothing, and its
    # model learns as POST /tasks's default would have it (auto) until a task of its own says otherwise
    last = session.scalar(
        select(Task)
        .where(Task.model_id == model.id, Task.strategy != IMPORT_STRATEGY)
        .order_by(Task.id.desc())
        .limit(1)
    )
    hyperparameters = last.hyperparameters if last is not None else {}
    options = state.policy.update
    ewc_lambda = options.ewc_lambda if options.ewc_lambda is not None else hyperparameters.get("ewc_lambda", "auto")
    request = TaskRequest.from_form(
        model=model.name,
        name=f"{TASK_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}",
        architecture=None,
        architecture_options=None,
        strategy=last.strategy if last is not None else ("auto" if model.family == "ewc" else model.family),
        ewc_lambda=str(ewc_lambda),
        epochs=options.epochs if options.epochs is not None else hyperparameters.get("epochs"),
        batch_size=hyperparameters.get("batch_size"),
        lr=hyperparameters.get("lr"),
        test_fraction=options.test_fraction,
        validation_fraction=options.validation_fraction,
        max_forgetting=None,
    )
    session.rollback()

    def one_at_a_time(locked: Model | None) -> None:
        """Under the model's lock: another worker may have queued a trigger-made update meanwhile."""
        pending = pending_update(session, model.id)
        if pending is not None:
            raise Conflict(f"job {pending}, made by a trigger, is still unfinished")

    out = submit_task(session, store, settings, request, filename, data, admit=one_at_a_time)
    ids = [row.id for row in rows]
    for start in range(0, len(ids), 500):
        session.execute(
            update(LoggedSample).where(LoggedSample.id.in_(ids[start : start + 500])).values(task_id=out.id)
        )
    session.commit()
    return out.id
