"""Feedback service functions: the policy, labels for logged predictions and labelled samples, live
accuracy and the record of trigger decisions. Database only; the triggers that act on all this run in
the worker (app/feedback/triggers.py), never in a request.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

import numpy as np
from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from app.datasets.parsing import Limits, parse_upload, sample_shape_of
from app.datasets.text import TextSamples, text_problem
from app.db.session import begin_write
from app.db.tables import (
    Accuracy,
    AliasChange,
    Dataset,
    FeedbackPolicy,
    LoggedSample,
    Model,
    ModelVersion,
    Task,
    TriggerDecision,
    utcnow,
)
from app.errors import InvalidInput, NotFound, PayloadTooLarge
from app.feedback.prediction_log import LogPolicy, is_text, new_prediction_id, pack_inputs, pack_text, unpack_inputs
from app.feedback.schemas import (
    AccuracyPoint,
    Drift,
    FeedbackIn,
    FeedbackItem,
    FeedbackOut,
    FeedbackPolicyIn,
    FeedbackPolicyOut,
    FeedbackResult,
    LiveAccuracyOut,
    TriggerDecisionOut,
    TriggerDecisionsOut,
    VersionAccuracy,
)
from app.learning import as_samples
from app.learning.text_source import takes_text
from app.registry.service import get_model_by_name
from app.tasks.service import check_modality, modality

HISTORY_POINTS = 200  # points of the live accuracy line
HISTORY_ROWS = 20_000  # the most recent labelled predictions the line is drawn over


# ------------------------------------------------------------------------------------------ policy
def set_policy(session: Session, settings, name: str, policy: FeedbackPolicyIn) -> FeedbackPolicyOut:
    if policy.log_max_samples > settings.feedback_max_log_samples:
        raise InvalidInput(
            f"log_max_samples is {policy.log_max_samples}; the limit is {settings.feedback_max_log_samples} "
            "(feedback_max_log_samples)"
        )
    begin_write(session)
    model = get_model_by_name(session, name)
    if is_text_model(model) and any(isinstance(trigger, Drift) for trigger in policy.triggers):
        raise InvalidInput(
            f"model {name!r} takes text: the drift trigger tests numeric features (KS per feature) and does not "
            "apply to text; use every_n_labels, every_seconds, accuracy_below or accuracy_drop"
        )
    row = session.get(FeedbackPolicy, model.id)
    if row is None:
        row = FeedbackPolicy(model_id=model.id, policy={})
        session.add(row)
    row.policy, row.updated_at = policy.model_dump(mode="json"), utcnow()
    session.commit()
    return policy_out(model, row)


def get_policy(session: Session, name: str) -> FeedbackPolicyOut:
    model = get_model_by_name(session, name)
    row = session.get(FeedbackPolicy, model.id)
    if row is None:
        raise NotFound(f"model {name!r} has no feedback policy; PUT /models/{name}/feedback-policy sets one")
    return policy_out(model, row)


def policy_out(model: Model, row: FeedbackPolicy) -> FeedbackPolicyOut:
    return FeedbackPolicyOut(model=model.name, updated_at=row.updated_at, **row.policy)


def log_policy(out: FeedbackPolicyOut, model_id: int) -> LogPolicy:
    return LogPolicy(model_id, out.log_rate, out.log_max_samples)


def is_text_model(model: Model) -> bool:
    return takes_text(model.input_shape)


def model_id_of(session: Session, name: str) -> int:
    return get_model_by_name(session, name).id


# ---------------------------------------------------------------------------------------- feedback
def known_labels(session: Session, model: Model) -> list:
    """Every label the model's tasks held, as stored (ints or strings)."""
    seen: dict[str, object] = {}
    for labels in session.scalars(
        select(Dataset.labels).join(Task, Task.dataset_id == Dataset.id).where(Task.model_id == model.id)
    ):
        for label in labels or []:
            seen.setdefault(str(label), label)
    return list(seen.values())


class LabelCheck:
    """A label must be of the kind the model's labels are (integers, or strings), and a new one must
    fit the model's label cap: then a trigger-made task can hold it (a new one makes it class-incremental)."""

    def __init__(self, session: Session, settings, model: Model):
        labels = known_labels(session, model)
        self.strings = bool(labels) and all(isinstance(label, str) for label in labels)
        self.known = {str(label) for label in labels}
        self.limit = settings.max_labels_per_model
        self.max_abs_value = settings.max_abs_value
        self.max_text_chars = settings.max_text_chars

    def inputs_problem(self, sample: np.ndarray) -> str | None:
        """Inputs a task would refuse (app/datasets/parsing.py) must not enter the buffer: every
        trigger-made task after them would be refused too."""
        if sample.size and float(np.abs(sample).max()) > self.max_abs_value:
            return (
                f"the sample has a value beyond {self.max_abs_value:g} in absolute value (max_abs_value); "
                "it cannot be learnt"
            )
        return None

    def problem(self, label) -> str | None:
        if self.strings:
            if not isinstance(label, str) or not label or len(label) > 200:
                return f"this model's labels are strings; got {label!r}"
        elif type(label) is not int or abs(label) > 2**53:
            return f"this model's labels are integers; got {label!r}"
        key = str(label)
        if key not in self.known:
            if len(self.known) >= self.limit:
                return f"a new label {label!r} would exceed {self.limit} labels (max_labels_per_model)"
            self.known.add(key)
        return None


def record_feedback(session: Session, settings, request: FeedbackIn) -> FeedbackOut:
    """Labels for logged predictions and labelled samples of their own, in one transaction. Each item is
    judged alone: an unknown id is 404, a label of the wrong kind 422, a label changed after an update
    learnt from it 409; the others are kept. Repeating an item changes nothing (idempotent by id)."""
    count = len(request.items) + len(request.labels or [])
    if count == 0:
        raise InvalidInput("no feedback: send items [{prediction_id, label}] or inputs with labels")
    if count > settings.max_feedback_items:
        raise PayloadTooLarge(f"at most {settings.max_feedback_items} feedback items per request; got {count}")
    begin_write(session)
    model = get_model_by_name(session, request.model)
    check = LabelCheck(session, settings, model)
    now = utcnow()
    results = [label_prediction(session, model, check, item.prediction_id, item.label, now) for item in request.items]
    if request.inputs is not None or request.labels is not None:
        results.extend(add_samples(session, model, check, request.inputs or [], request.labels or [], now))
    session.commit()
    accepted = sum(result.status == 200 for result in results)
    return FeedbackOut(model=model.name, accepted=accepted, refused=len(results) - accepted, results=results)


def label_prediction(session: Session, model: Model, check: LabelCheck, prediction_id: str, label, now: datetime):
    row = session.scalar(
        select(LoggedSample).where(LoggedSample.prediction_id == prediction_id, LoggedSample.model_id == model.id)
    )
    if row is None:
        return FeedbackResult(
            prediction_id=prediction_id,
            status=404,
            detail=f"no logged prediction {prediction_id!r} of model {model.name!r} (not logged, or dropped "
            "past log_max_samples)",
        )
    problem = check.problem(label) or (
        None if is_text(row.inputs) else check.inputs_problem(unpack_inputs(row.inputs, (-1,)))
    )
    if problem is not None:
        return FeedbackResult(prediction_id=prediction_id, status=422, detail=problem)
    if row.labelled_at is not None and row.label == label:
        return FeedbackResult(prediction_id=prediction_id, status=200, changed=False)
    if row.task_id is not None:
        return FeedbackResult(
            prediction_id=prediction_id,
            status=409,
            detail=f"already labelled {row.label!r} and taken by task {row.task_id}; the label cannot change",
        )
    row.label, row.labelled_at = label, now
    row.correct = None if row.model_version_id is None else str(row.predicted) == str(label)
    return FeedbackResult(prediction_id=prediction_id, status=200, changed=True)


def add_samples(session: Session, model: Model, check: LabelCheck, inputs: list, labels: list, now: datetime):
    """Labelled samples that were never predicted: logged with their label and no version. A text sent
    to a model of numbers (or numbers to a text model) is refused on its own, naming both."""
    if len(inputs) != len(labels):
        raise InvalidInput(f"inputs has {len(inputs)} samples but labels has {len(labels)}")
    text_model = is_text_model(model)
    kind = modality(model.input_shape or ())
    packed: list[bytes | None] = [None] * len(inputs)
    results: list[FeedbackResult | None] = [None] * len(inputs)
    numeric = []
    for index, sample in enumerate(inputs):
        if isinstance(sample, str) != text_model:
            given = "text" if isinstance(sample, str) else "numbers"
            detail = f"model {model.name!r} takes {kind}; input {index} is {given}"
            results[index] = FeedbackResult(prediction_id=None, status=422, detail=detail)
        elif text_model:
            problem, status = text_problem(sample, check.max_text_chars)
            if problem is not None:
                results[index] = FeedbackResult(prediction_id=None, status=status, detail=f"input {index} {problem}")
            else:
                packed[index] = pack_text(sample)
        else:
            numeric.append(index)
    if numeric:
        try:
            array = np.asarray([inputs[index] for index in numeric], dtype=np.float32)
            samples = as_samples(array, model.input_shape).numpy()
        except (ValueError, TypeError) as error:
            raise InvalidInput(f"inputs: {error}") from error
        for index, sample in zip(numeric, samples, strict=True):
            problem = check.inputs_problem(sample)
            if problem is not None:
                results[index] = FeedbackResult(prediction_id=None, status=422, detail=problem)
            else:
                packed[index] = pack_inputs(sample)
    out = []
    for index, label in enumerate(labels):
        result, data = results[index], packed[index]
        problem = check.problem(label) if result is None else None
        if result is None and problem is not None:
            result = FeedbackResult(prediction_id=None, status=422, detail=problem)
        if result is None and data is not None:
            prediction_id = new_prediction_id()
            session.add(
                LoggedSample(
                    prediction_id=prediction_id,
                    model_id=model.id,
                    inputs=data,
                    label=label,
                    labelled_at=now,
                    created_at=now,
                )
            )
            result = FeedbackResult(prediction_id=prediction_id, status=200, changed=True)
        assert result is not None
        out.append(result)
    return out


def buffered_labels(session: Session, model_id: int) -> int:
    """Labels not yet learnt from: what the next trigger-made task would hold."""
    return session.scalar(  # type: ignore[return-value]  # a count is never NULL
        select(func.count(LoggedSample.id)).where(
            LoggedSample.model_id == model_id, LoggedSample.labelled_at.is_not(None), LoggedSample.task_id.is_(None)
        )
    )


# ---------------------------------------------------------------------------------------- accuracy
def live_accuracy(session: Session, model_id: int, version_id: int, window: int) -> tuple[float | None, int]:
    """Accuracy of a version on its last ``window`` labelled predictions, and how many there were."""
    recent = (
        select(LoggedSample.correct)
        .where(LoggedSample.model_version_id == version_id, LoggedSample.correct.is_not(None))
        .order_by(LoggedSample.labelled_at.desc(), LoggedSample.id.desc())
        .limit(window)
        .subquery()
    )
    n, right = session.execute(select(func.count(), func.sum(cast(recent.c.correct, Integer)))).one()
    return (right / n if n else None), n


def promotion_accuracy(session: Session, version_id: int) -> float | None:
    return session.scalar(select(func.avg(Accuracy.accuracy)).where(Accuracy.model_version_id == version_id))


def accuracy_report(session: Session, name: str, window: int | None = None) -> LiveAccuracyOut:
    model = get_model_by_name(session, name)
    row = session.get(FeedbackPolicy, model.id)
    window = window or (row.policy.get("accuracy_window", 500) if row else 500)
    versions = []
    for version in session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.number)
    ):
        accuracy, n = live_accuracy(session, model.id, version.id, window)
        if n == 0 and version.id != model.serving_version_id:
            continue
        versions.append(
            VersionAccuracy(
                model_version=version.number,
                accuracy=accuracy,
                n=n,
                promotion_accuracy=promotion_accuracy(session, version.id),
                serving=version.id == model.serving_version_id,
            )
        )
    return LiveAccuracyOut(
        model=model.name,
        window=window,
        versions=versions,
        history=accuracy_history(session, model.id, window),
        updates=[
            {"model_version": number, "at": at}
            for number, at in session.execute(
                select(ModelVersion.number, AliasChange.created_at)
                .join(ModelVersion, AliasChange.to_version_id == ModelVersion.id)
                .where(AliasChange.model_id == model.id, AliasChange.from_version_id != AliasChange.to_version_id)
                .order_by(AliasChange.id)
            )
        ],
    )


def accuracy_history(session: Session, model_id: int, window: int) -> list[AccuracyPoint]:
    """The served accuracy over time: a rolling mean over ``window`` labelled predictions, sampled at
    up to HISTORY_POINTS labels over the last HISTORY_ROWS (the line the dashboard draws)."""
    rows = session.execute(
        select(LoggedSample.labelled_at, LoggedSample.correct, ModelVersion.number)
        .join(ModelVersion, LoggedSample.model_version_id == ModelVersion.id)
        .where(LoggedSample.model_id == model_id, LoggedSample.correct.is_not(None))
        .order_by(LoggedSample.labelled_at.desc(), LoggedSample.id.desc())
        .limit(HISTORY_ROWS)
    ).all()[::-1]
    if not rows:
        return []
    correct = np.fromiter((bool(row.correct) for row in rows), dtype=np.float64, count=len(rows))
    sums = np.concatenate([[0.0], np.cumsum(correct)])
    step = max(1, len(rows) // HISTORY_POINTS)
    points = []
    for end in [*range(step, len(rows), step), len(rows)]:
        start = max(0, end - window)
        points.append(
            AccuracyPoint(
                at=rows[end - 1].labelled_at,
                model_version=rows[end - 1].number,
                accuracy=(sums[end] - sums[start]) / (end - start),
                n=end - start,
            )
        )
    return points


# ---------------------------------------------------------------------------------------- triggers
def trigger_decisions(session: Session, name: str, limit: int = 200) -> TriggerDecisionsOut:
    model = get_model_by_name(session, name)
    rows = list(
        session.scalars(
            select(TriggerDecision)
            .where(TriggerDecision.model_id == model.id)
            .order_by(TriggerDecision.id.desc())
            .limit(limit)
        )
    )
    return TriggerDecisionsOut(
        model=model.name,
        buffered_labels=buffered_labels(session, model.id),
        decisions=[
            TriggerDecisionOut(
                id=row.id,
                trigger=row.trigger,
                fired=row.fired,
                reason=row.reason,
                task_id=row.task_id,
                created_at=row.created_at,
            )
            for row in reversed(rows)
        ],
    )


# ------------------------------------------------------------------------------------ file uploads
def feedback_from_file(settings, model: str, filename: str, data: bytes, input_shape) -> FeedbackIn:
    """A file of many: a CSV whose header is ``prediction_id,label`` (labels for logged predictions), or
    labelled samples in any format POST /tasks takes (npz, csv, parquet, image zip)."""
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"the upload is {len(data)} bytes; the limit is {settings.max_upload_bytes} bytes")
    head = data[:64].lstrip(b"\xef\xbb\xbf").lower()
    if head.startswith(b"prediction_id,label"):
        return FeedbackIn(model=model, items=labelled_ids(data))
    upload = parse_upload(
        filename,
        data,
        Limits(
            max_bytes=settings.max_upload_bytes,
            max_samples=settings.max_feedback_items,
            max_array_bytes=settings.decoded_bytes_limit,
            max_text_chars=settings.max_text_chars,
        ),
        None if takes_text(input_shape) else tuple(input_shape),
    )
    check_modality(model, input_shape or (), sample_shape_of(upload.samples.x))
    samples = upload.samples if upload.test is None else concatenated(upload.samples, upload.test)
    return FeedbackIn(model=model, inputs=samples.x.tolist(), labels=[plain(label) for label in samples.y.tolist()])


def labelled_ids(data: bytes) -> list[FeedbackItem]:
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))[1:]
    except (UnicodeDecodeError, csv.Error) as error:
        raise InvalidInput(f"not a CSV of prediction_id,label: {error}") from error
    items = []
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != 2:
            raise InvalidInput(f"line {number}: expected prediction_id,label; got {len(row)} fields")
        label = row[1].strip()
        items.append(FeedbackItem(prediction_id=row[0].strip(), label=int(label) if is_integer(label) else label))
    return items


def is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit() and len(text) < 18


def plain(label):
    return label if isinstance(label, (int, str)) else str(label)


def concatenated(first, second):
    if isinstance(first.x, TextSamples):
        x = TextSamples.of([*first.x, *second.x])
        return type(first)(x, np.concatenate([first.y, second.y]))
    return type(first)(np.concatenate([first.x, second.x]), np.concatenate([first.y, second.y]))
