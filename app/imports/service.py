"""POST /models: check an import completely before answering, store it, queue its job.

Every check runs before anything is stored (``plan_import``: safetensors only, source and
options known, labels for the head, keys and shapes against the architecture built on
``meta``, ``max_model_parameters``, the input shape; the base data parsed as a task's upload
would be): a refused import leaves no row and no artifact. An ``hf`` upload holding a sequence
classifier and its tokenizer is a text model (``check_text_import``: ``plan_text_import``; input
shape ``["text"]``; base data, texts, is task 0 as for images). Then the weights and the base data
(or, without it, an empty dataset of the model's shape) are stored, and ONE transaction adds
the model, the dataset, the import task (strategy ``import``) and its job. A worker builds
version 1 from the weights (``app.updates.adopt``): it serves as the weights answered where
they came from, and with base data it is task 0 of the accuracy table, protected by its Fisher
and the replay memory.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.datasets.parsing import ParsedDataset, Split, parse_dataset
from app.datasets.storage import store_dataset
from app.datasets.text import TextSamples
from app.db.session import begin_write
from app.db.tables import Model, Task
from app.errors import Conflict, DomainError, InvalidInput, PayloadTooLarge, UnsupportedFormat
from app.imports import IMPORT_STRATEGY
from app.imports.unpack import refuse_pickled, unpack_weights
from app.jobs.queue import enqueue
from app.jobs.status import JobStatus
from app.learning.imported import ImportPlan, TextImportPlan, is_text_directory, plan_import, plan_text_import
from app.learning.sources import ImportRefused, architectures
from app.learning.text_source import takes_text
from app.tasks.schemas import TaskOut
from app.tasks.service import dataset_row, parse_limits, task_out


def as_domain_error(error: ImportRefused) -> DomainError:
    """The library's refusal as the API's: 415 pickles, 413 too many parameters, 422 the rest."""
    kind = {415: UnsupportedFormat, 413: PayloadTooLarge}.get(error.status, InvalidInput)
    return kind(str(error))


def parse_options(text: str | None) -> dict:
    if not text:
        return {}
    try:
        options = json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"options must be a JSON object: {error}") from None
    if not isinstance(options, dict):
        raise InvalidInput("options must be a JSON object")
    return options


def input_scale_of(options: dict, base: ParsedDataset | None) -> float:
    """uint8 base data (images) are scaled by 1/255, as retain's own models; without base data, image
    inputs are taken as uint8 too unless ``input_scale`` says otherwise."""
    if "input_scale" in options:
        scale = options["input_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise InvalidInput(f"input_scale must be a positive number, got {scale!r}")
        return float(scale)
    if base is not None:
        return 1 / 255 if base.splits["train"].x.dtype == np.uint8 else 1.0
    return 1 / 255


def check_text_import(settings, options: dict, path: Path) -> TextImportPlan:
    """``plan_text_import`` on an unpacked hf upload holding a text classifier (``is_text_directory``)."""
    unknown = sorted(set(options) - {"max_length", "trainable", "lora_rank", "memory_size"})
    if unknown:
        raise InvalidInput(
            f"unknown options {unknown} for a text model; it takes max_length, trainable, lora_rank, memory_size"
        )
    try:
        return plan_text_import(path, options, settings.max_model_parameters)
    except ImportRefused as error:
        raise as_domain_error(error) from None


def check_text_base(plan: TextImportPlan, base: ParsedDataset | None) -> None:
    """A text model's base data: texts, with labels among the head's (what the model already knows)."""
    if base is None:
        return
    if not takes_text(base.input_shape):
        raise InvalidInput(
            f"base_data has samples of shape {list(base.input_shape)}; a text model's base data is texts "
            "(a .csv with text,label columns, .jsonl or Parquet)"
        )
    unknown = [label for label in base.labels if label not in plan.labels]
    if unknown:
        raise InvalidInput(
            f"base_data labels {unknown[:10]} are not among the head's labels {plan.labels[:20]} "
            "(the base data is what the imported model already knows)"
        )


def check_import(settings, source: str, options: dict, path: Path, base: ParsedDataset | None):
    """``plan_import`` on the unpacked upload; returns the plan and the options stored with the model."""
    input_shape = options.get("input_shape") or (list(base.input_shape) if base is not None else None)
    if not input_shape or not isinstance(input_shape, list) or not all(isinstance(s, int) for s in input_shape):
        raise InvalidInput("give options.input_shape (e.g. [3, 224, 224]) or base_data to read it from")
    if base is not None and tuple(base.input_shape) != tuple(input_shape):
        raise InvalidInput(
            f"base_data has samples of shape {list(base.input_shape)}, options.input_shape {input_shape}"
        )
    own = {key: value for key, value in options.items() if key not in ("input_shape", "input_scale")}
    try:
        plan: ImportPlan = plan_import(source, input_shape, path, own, settings.max_model_parameters)
    except ImportRefused as error:
        raise as_domain_error(error) from None
    if base is not None:
        unknown = [label for label in base.labels if label not in plan.labels]
        if unknown:
            raise InvalidInput(
                f"base_data labels {unknown[:10]} are not among the head's labels {plan.labels[:20]} "
                "(the base data is what the imported model already knows)"
            )
    return plan, own


def empty_dataset(input_shape, labels: list) -> ParsedDataset:
    """The import task's dataset when no base data came: no samples, the model's shape and labels."""

    def empty() -> Split:  # one per split: stored tensors may not share memory
        none = TextSamples.of([]) if takes_text(input_shape) else np.zeros((0, *input_shape), np.float32)
        return Split(none, np.zeros(0, dtype=np.int64))

    return ParsedDataset(
        format="none",
        sha256="0" * 64,
        input_shape=tuple(input_shape),
        labels=list(labels),
        splits={name: empty() for name in ("train", "validation", "test")},
    )


def import_model(
    session: Session,
    store,
    settings,
    *,
    name: str,
    source: str,
    options_text: str | None,
    filename: str,
    data: bytes,
    base_filename: str | None = None,
    base_data: bytes | None = None,
    base_name: str | None = None,
) -> TaskOut:
    """See the module docstring. Raises a ``DomainError`` (nothing stored) on any refusal."""
    if not name or len(name) > 100:
        raise InvalidInput("name must be 1 to 100 characters")
    if session.scalar(select(Model.id).where(Model.name == name)) is not None:
        raise Conflict(f"model {name!r} already exists; an import makes a new model (choose another name)")
    session.rollback()
    try:
        refuse_pickled(filename, data)
    except ImportRefused as error:
        raise as_domain_error(error) from None
    options = parse_options(options_text)
    if len(data) > max(settings.max_upload_bytes, settings.max_reference_bytes or 0):
        raise PayloadTooLarge(f"the weights are over {settings.max_upload_bytes:,} bytes (max_upload_bytes)")
    with tempfile.TemporaryDirectory(prefix="retain-import-") as directory:  # unpacked once for every check
        try:
            path = unpack_weights(Path(directory), source, filename, data, settings.decoded_bytes_limit)
        except ImportRefused as error:
            raise as_domain_error(error) from None
        text_plan = check_text_import(settings, options, path) if source == "hf" and is_text_directory(path) else None
        base = None
        if base_data is not None:
            shape = options.get("input_shape")
            base = parse_dataset(
                base_filename,
                base_data,
                max_bytes=settings.max_upload_bytes,
                test_fraction=0.2,
                validation_fraction=0.1,
                input_shape=tuple(shape) if isinstance(shape, list) else None,
                **parse_limits(settings),
            )
        plan: ImportPlan | TextImportPlan
        if text_plan is not None:
            check_text_base(text_plan, base)
            plan, own, input_scale = text_plan, dict(text_plan.options), 1.0
        else:
            plan, own = check_import(settings, source, options, path, base)
            input_scale = input_scale_of(options, base)
    parsed = base if base is not None else empty_dataset(plan.input_shape, plan.labels)
    weights = store.put(data)
    dataset_ref = store_dataset(store, parsed)
    record = {
        "weights_uri": weights.uri,
        "weights_sha256": weights.sha256,
        "weights_size": weights.size,
        "filename": Path(filename or "model.safetensors").name,
        "options": own,
        "input_scale": input_scale,
        "parameters": plan.parameters,
    }
    begin_write(session)
    try:
        model = Model(
            name=name,
            architecture=plan.source,
            family="ewc",
            input_shape=list(plan.input_shape),
            options={"import": record},
            max_forgetting=settings.default_max_forgetting,
        )
        session.add(model)
        session.flush()
        dataset = dataset_row(parsed, dataset_ref)
        session.add(dataset)
        session.flush()
        task = Task(
            model_id=model.id,
            name=base_name or "import",
            dataset_id=dataset.id,
            strategy=IMPORT_STRATEGY,
            hyperparameters={},
            status=JobStatus.QUEUED,
        )
        session.add(task)
        session.flush()
        job = enqueue(session, task, max_attempts=settings.max_attempts)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"model {name!r} already exists; an import makes a new model (choose another name)") from None
    except BaseException:
        session.rollback()
        raise
    return task_out(session, task, job=job, model=model, dataset=dataset)


def list_architectures() -> dict:
    return architectures()
