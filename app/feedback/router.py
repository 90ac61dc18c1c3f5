"""PUT/GET /models/{name}/feedback-policy, POST /feedback (JSON or a file), GET /models/{name}/live-accuracy
and GET /models/{name}/triggers: the feedback loop's routes (docs/feedback-loop.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.auth.deps import PredictKey, TrainKey
from app.deps import ServingDep, SessionDep, SettingsDep, WriteSessionDep
from app.feedback import service
from app.feedback.schemas import (
    FeedbackIn,
    FeedbackOut,
    FeedbackPolicyIn,
    FeedbackPolicyOut,
    LiveAccuracyOut,
    TriggerDecisionsOut,
)
from app.registry.service import get_model_by_name

router = APIRouter(tags=["feedback"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "unknown model, or (GET) no policy set"}}
FEEDBACK_ANSWERS: dict[int | str, dict[str, Any]] = {
    207: {"description": "some items were kept, others refused: each item's ``status`` says which and why"},
    404: {"description": "unknown model; or every item named an unknown prediction id (nothing was kept)"},
    422: {"description": "nothing was kept: every item was refused (each says why), or the request is malformed"},
}


@router.put(
    "/models/{name}/feedback-policy",
    response_model=FeedbackPolicyOut,
    responses=NOT_FOUND,
    summary="Turn the feedback loop on (or change it): prediction logging and the triggers that start updates",
)
def put_policy(
    name: str,
    policy: FeedbackPolicyIn,
    session: WriteSessionDep,
    settings: SettingsDep,
    serving: ServingDep,
    caller: TrainKey,
) -> FeedbackPolicyOut:
    out = service.set_policy(session, settings, name, policy)
    serving.prediction_log.set_policy(name, service.log_policy(out, service.model_id_of(session, name)))
    return out


@router.get(
    "/models/{name}/feedback-policy", response_model=FeedbackPolicyOut, responses=NOT_FOUND, summary="The policy"
)
def get_policy(name: str, session: SessionDep, caller: PredictKey) -> FeedbackPolicyOut:
    return service.get_policy(session, name)


def answered(out: FeedbackOut, response: Response) -> FeedbackOut:
    """200 when every item was kept, 207 when some were, else the items' own 4xx (422 when they differ)."""
    if out.refused and out.accepted:
        response.status_code = 207
    elif out.refused:
        statuses = {result.status for result in out.results}
        response.status_code = statuses.pop() if len(statuses) == 1 else 422
    return out


def recorded(
    request: FeedbackIn, response: Response, session: WriteSessionDep, settings: SettingsDep, serving: ServingDep
) -> FeedbackOut:
    """Both feedback routes: the predictions this replica answered a moment ago made findable, then recorded."""
    serving.prediction_log.flush()
    return answered(service.record_feedback(session, settings, request), response)


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    responses=FEEDBACK_ANSWERS,
    summary="True labels for logged predictions (by prediction_id), or labelled samples of their own",
)
def post_feedback(
    request: FeedbackIn,
    response: Response,
    session: WriteSessionDep,
    settings: SettingsDep,
    serving: ServingDep,
    caller: TrainKey,
) -> FeedbackOut:
    return recorded(request, response, session, settings, serving)


@router.post(
    "/feedback/file",
    response_model=FeedbackOut,
    responses=FEEDBACK_ANSWERS,
    summary="Many labels at once: a CSV of prediction_id,label, or labelled samples as POST /tasks takes them",
)
def post_feedback_file(
    model: Annotated[str, Form()],
    file: Annotated[UploadFile, File(description="prediction_id,label CSV; or npz / csv / parquet / image zip")],
    response: Response,
    session: WriteSessionDep,
    settings: SettingsDep,
    serving: ServingDep,
    caller: TrainKey,
) -> FeedbackOut:
    input_shape = get_model_by_name(session, model).input_shape
    session.rollback()  # no transaction open while the file is parsed
    data = file.file.read(settings.max_upload_bytes + 1)
    request = service.feedback_from_file(settings, model, file.filename or "", data, input_shape)
    return recorded(request, response, session, settings, serving)


@router.get(
    "/models/{name}/live-accuracy",
    response_model=LiveAccuracyOut,
    responses=NOT_FOUND,
    summary="Served accuracy per version over the rolling window of labelled predictions, and its line over time",
)
def live_accuracy(name: str, session: SessionDep, caller: PredictKey) -> LiveAccuracyOut:
    return service.accuracy_report(session, name)


@router.get(
    "/models/{name}/triggers",
    response_model=TriggerDecisionsOut,
    responses=NOT_FOUND,
    summary="The trigger decisions (fired or not, and why), oldest first, and the labels buffered",
)
def trigger_decisions(name: str, session: SessionDep, caller: PredictKey) -> TriggerDecisionsOut:
    return service.trigger_decisions(session, name)
