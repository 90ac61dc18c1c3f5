"""The import job: version 1 of an imported model, from the weights the user sent (POST /models).

No training: the learner is built from the stored weights (checked again as at the API, with
the same ``plan_import`` / ``plan_text_import``; a Hugging Face model's check reads its weights,
and the learner takes them from the check instead of reading them a second time), and with base
data (the import task's dataset) it records that data as task 0 (``ContinualLearner.adopt_base_task``:
the Fisher of the trainable parameters at the imported weights, and the replay memory's share),
then measures it on its test split: the first row of the accuracy table. Without base data the
model serves as imported and the table starts at the first taught task.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from app.db.tables import Model
from app.imports.unpack import unpack_weights
from app.learning import ContinualLearner, Evaluation, TaskData, TrainConfig, UpdateResult
from app.learning.imported import plan_import, plan_text_import
from app.learning.text_source import TEXT_ARCHITECTURE


def imported_learner(store, model: Model, max_bytes: int, max_parameters: int | None = None) -> ContinualLearner:
    """The learner of a model made by POST /models, from its stored weights."""
    record = model.options["import"]
    data = store.get(record["weights_uri"], record["weights_sha256"])
    with tempfile.TemporaryDirectory(prefix="retain-import-") as directory:
        if model.architecture == TEXT_ARCHITECTURE:  # an hf text classifier (app.learning.text_source)
            path = unpack_weights(Path(directory), "hf", record["filename"], data, max_bytes)
            checked = plan_text_import(path, record["options"], max_parameters, keep_model=True)
            return ContinualLearner.from_text_directory(path, record["options"], pretrained=checked.model)
        path = unpack_weights(Path(directory), model.architecture, record["filename"], data, max_bytes)
        plan = plan_import(
            model.architecture, model.input_shape, path, record["options"], max_parameters, keep_loaded=True
        )
        return ContinualLearner.import_model(plan, input_scale=record["input_scale"])


def adopt_and_evaluate(
    learner: ContinualLearner, task_id: int, splits: dict[str, TaskData], device: str, progress=None
) -> tuple[UpdateResult, dict[int, Evaluation]]:
    """The import task as an update: task 0 adopted (when it has data) and measured."""
    started = time.perf_counter()
    learner.to(device)
    recipe: dict = {}
    accuracy: dict[int, Evaluation] = {}
    validation: dict[str, float] = {}
    if len(splits["train"]) > 0:
        recipe = learner.adopt_base_task(str(task_id), splits["train"], TrainConfig(device=device), progress)
        if len(splits["test"]) > 0:
            accuracy[task_id] = learner.evaluate(splits["test"])
        if len(splits["validation"]) > 0:
            validation[str(task_id)] = learner.evaluate(splits["validation"]).accuracy
    result = UpdateResult(
        task_key=str(task_id),
        strategy="import",
        ewc_lambda=None,
        lambda_search=None,
        fisher_recipe=recipe,
        train_config={},
        train_seconds=time.perf_counter() - started,
        search_seconds=0.0,
        final_loss=math.nan,
        validation_before={},
        validation_after=validation,
        parameters_added=0,
    )
    return result, accuracy
