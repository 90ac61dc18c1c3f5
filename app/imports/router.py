"""POST /models (import a trained model) and GET /architectures (what ``source`` accepts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.auth.deps import PredictKey, TrainKey
from app.datasets.data_uris import ReferencePolicy, check_reference, read_reference
from app.deps import SessionDep, SettingsDep, StoreDep
from app.errors import InvalidInput
from app.imports import service
from app.imports.schemas import ArchitecturesOut
from app.tasks.schemas import TaskOut

router = APIRouter(tags=["models"])

REFUSED = {
    409: {"description": "a model of that name exists"},
    413: {"description": "weights or base data over max_upload_bytes, or more parameters than max_model_parameters"},
    415: {
        "description": "a pickle (.pt, .pth, .bin, a zip holding data.pkl): the answer gives the conversion to run",
        "content": {
            "application/json": {
                "example": {
                    "detail": "model.pt is a pickle, which runs code when loaded: retain reads weights only as "
                    "safetensors. Convert it on your side with: python -c ..."
                }
            }
        },
    },
    422: {
        "description": "unknown source or options, a head without labels, keys or shapes that do not fit",
        "content": {
            "application/json": {
                "example": {"detail": "the weights do not fit the architecture: 2 missing keys (fc.bias, fc.weight)"}
            }
        },
    },
}


@router.post(
    "/models",
    response_model=TaskOut,
    status_code=202,
    responses=REFUSED,
    summary="Import a trained model (safetensors); a worker makes it version 1, serving",
)
def import_model(
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    caller: TrainKey,
    name: Annotated[str, Form(description="the new model's name", examples=["flowers"])],
    source: Annotated[
        str,
        Form(description="mlp | cnn | resnet18 | torchvision:<builder> | timm:<name> | hf | a plugin's name"),
    ],
    file: Annotated[
        UploadFile | None,
        File(
            description="the weights: .safetensors (hf: a .zip of save_pretrained's files; a text classifier "
            "with its tokenizer.json)"
        ),
    ] = None,
    uri: Annotated[
        str | None,
        Form(description="instead of a file: s3://bucket/key or an absolute path under RETAIN_DATA_ROOTS"),
    ] = None,
    options: Annotated[
        str | None,
        Form(
            description='JSON: {"labels": [...], "input_shape": [3, 224, 224], "trainable": "all|head|last:N|lora", '
            '"lora_rank": 8, "mean": [...], "std": [...], "resize": [h, w], "freeze_batchnorm": true, '
            '"new_head": false, "memory_size": 1000, ...the architecture\'s own options}'
        ),
    ] = None,
    base_data: Annotated[
        UploadFile | None, File(description="what the model already knows, in any task format: becomes task 0")
    ] = None,
    base_name: Annotated[str | None, Form(description="a name for the base task")] = None,
) -> TaskOut:
    if (file is None) == (uri is None):
        raise InvalidInput("send the weights as a file (.safetensors, or a .zip for hf) or as a uri, one of them")
    if uri is not None:  # read now: every check happens before the answer
        policy = ReferencePolicy.of(settings)
        filename, data = check_reference(uri, policy).name, read_reference(uri, policy)
    else:
        filename, data = file.filename or "", file.file.read(settings.max_upload_bytes + 1)
    base = base_data.file.read(settings.max_upload_bytes + 1) if base_data is not None else None
    return service.import_model(
        session,
        store,
        settings,
        name=name,
        source=source,
        options_text=options,
        filename=filename,
        data=data,
        base_filename=base_data.filename if base_data is not None else None,
        base_data=base,
        base_name=base_name,
    )


@router.get("/architectures", response_model=ArchitecturesOut, summary="What an import's source can be")
def list_architectures(caller: PredictKey) -> ArchitecturesOut:
    return ArchitecturesOut(**service.list_architectures())
