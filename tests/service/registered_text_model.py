"""A text model in the registry as an import leaves it: the model row (architecture hf_text, input
shape ["text"]) and version 1 holding the pretrained classifier, its tokenizer and an empty
consolidation, serving. Stands in for POST /models (source hf) in these tests."""

from __future__ import annotations

from app.db.tables import Model, ModelVersion
from app.learning import ContinualLearner
from app.learning.state import to_safetensors_bytes
from app.learning.text_source import TEXT_ARCHITECTURE, TEXT_INPUT_SHAPE
from app.registry.service import set_serving_version
from app.storage.artifacts import artifact_store


def register_text_model(settings, session_factory, name: str, directory, options: dict | None = None) -> None:
    options = {"max_length": 32, **(options or {})}
    learner = ContinualLearner.from_text_directory(directory, options)
    store = artifact_store(settings)
    weights = store.put(to_safetensors_bytes(*learner.export_weights()))
    consolidation = store.put(to_safetensors_bytes(*learner.export_consolidation()))
    with session_factory() as session:
        model = Model(
            name=name,
            architecture=TEXT_ARCHITECTURE,
            family="ewc",
            input_shape=list(TEXT_INPUT_SHAPE),
            options=options,
            max_forgetting=None,
        )
        session.add(model)
        session.flush()
        version = ModelVersion(
            model_id=model.id,
            number=1,
            weights_uri=weights.uri,
            weights_sha256=weights.sha256,
            weights_size=weights.size,
            consolidation_uri=consolidation.uri,
            consolidation_sha256=consolidation.sha256,
            consolidation_size=consolidation.size,
        )
        session.add(version)
        session.flush()
        set_serving_version(session, model, version, "imported")
        session.commit()
