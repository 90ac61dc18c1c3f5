"""The HTTP service: `uvicorn app.main:app`.

Builds the FastAPI app from the settings: the engine, the artifact store and the learner cache
are made once here and kept on ``app.state``, where the typed dependencies of app/deps.py find
them (routes never read ``app.state`` themselves); the lifespan migrates the embedded SQLite
database and makes sure an admin key exists (app/startup.py; done once before them in the replicas
of `retain serve --workers N`) and starts the embedded worker thread when the settings say so
(the default, so one command gives a service that trains), and stops it on shutdown.
Domain errors raised by the services become HTTP answers in one handler here.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app import health
from app.auth.keys import VerifiedKeys
from app.auth.router import router as keys_router
from app.db.session import get_engine
from app.errors import DomainError
from app.feedback.prediction_log import PredictionLog
from app.feedback.router import router as feedback_router
from app.imports.router import router as imports_router
from app.jobs.router import router as jobs_router
from app.limits import BodyLimit
from app.metrics.http import HttpMetricsMiddleware
from app.metrics.router import router as metrics_router
from app.openapi import document_common_answers
from app.predict.batching import DynamicBatcher
from app.predict.cache import LearnerCache
from app.predict.router import oip_router, prediction_router, prediction_routes
from app.predict.served_versions import ServingDirectory
from app.predict.service import Serving
from app.registry.router import artifacts_router
from app.registry.router import router as registry_router
from app.settings import Settings, get_settings
from app.startup import prepare_service
from app.storage.artifacts import artifact_store
from app.tasks.router import router as tasks_router
from app.ui.router import router as ui_router
from app.updates.loop import start_embedded_worker

log = logging.getLogger("retain")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.prepare_on_start:  # off in the replicas of `retain serve --workers N`: done once before them
            prepare_service(settings, app.state.engine)
        if settings.torch_threads is not None:  # serving and the embedded worker share this process's cores
            torch.set_num_threads(settings.torch_threads)
        app.state.serving.prediction_log.start()
        worker = start_embedded_worker(settings) if settings.embedded_worker else None
        app.state.worker = worker
        # Everything alive now (torch, the ORM, the app) lives as long as the process: moved out of
        # the collector's reach, a full collection no longer walks it while requests wait: the tail
        # latency of concurrent predictions drops (benchmarks/serving.py measures it).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()  # a job in training goes back to the queue
            app.state.serving.batcher.shutdown()
            app.state.serving.prediction_log.close()  # what is buffered is written
            app.state.serving.directory.close()

    app = FastAPI(
        title="retain",
        description="A model service that keeps learning without forgetting: upload tasks, a worker learns each "
        "as an EWC (or CCLL) update, every version is kept with its accuracy on every past task.",
        version="0.1.0",
        lifespan=lifespan,
        # The prediction routes first, before FastAPI's documentation routes and every router included below:
        # plain Starlette routes, the hot path (app/predict/lean_route.py); prediction_router documents them.
        routes=prediction_routes(),
    )
    app.state.settings = settings
    app.state.engine = get_engine(settings)
    app.state.store = artifact_store(settings)
    app.state.verified_keys = VerifiedKeys(settings.auth_cache_seconds)
    app.state.serving = Serving(
        directory=ServingDirectory(app.state.engine, settings.serving_check_interval),
        learners=LearnerCache(capacity=settings.predict_cache_size, max_bytes=settings.predict_cache_bytes),
        batcher=DynamicBatcher(
            threads=settings.serving_threads,
            max_batch_size=settings.predict_max_batch_size,
            max_queue_delay=settings.max_queue_delay,
        ),
        store=app.state.store,
        max_samples=settings.max_predict_samples,
        prediction_log=PredictionLog(
            app.state.engine, settings.feedback_flush_interval, settings.feedback_policy_interval
        ),
        max_text_chars=settings.max_text_chars,
    )

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, error: DomainError) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"detail": error.message}, headers=error.headers)

    for router in (
        oip_router,
        keys_router,
        tasks_router,
        imports_router,
        jobs_router,
        registry_router,
        feedback_router,
        artifacts_router,
        health.router,
        metrics_router,
        ui_router,
        # Last: the prediction routes' declarations, for /openapi.json; the lean routes at the head answer their
        # requests, and every other request is matched against these only once nothing else matched it.
        prediction_router,
    ):
        app.include_router(router)
    document_common_answers(app)
    app.add_middleware(BodyLimit, settings=settings)  # inside the metrics: refusals are counted too
    app.add_middleware(HttpMetricsMiddleware)
    return app


app = create_app()
