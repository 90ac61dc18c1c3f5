"""GET /metrics: the Prometheus text format, open without auth (scrapers run inside the deployment)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.metrics.database import DatabaseCollector
from app.metrics.registry import CONTENT_TYPE, exposition

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics: HTTP, prediction, queue, updates, learning",
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "the text exposition format"}},
)
def metrics(request: Request) -> Response:
    return Response(exposition(DatabaseCollector(request.app.state.engine)), media_type=CONTENT_TYPE)
