"""``ServingRoute``: the prediction routes, declared as FastAPI routes, called without FastAPI's
per-request dependency solver.

FastAPI resolves a route's parameters on every request by walking its dependency tree
(``solve_dependencies``): on ``POST /predict`` that walk cost more CPU than everything else the
request does, the forward pass included (benchmarks/serving.py; docs/benchmarks/measurements.md). The
prediction routes need only three kinds of parameters, so this route class reads the endpoint's
signature once, at startup, and builds a handler that fills exactly those:

* ``Request``;
* dependencies that take the request alone (``ServingDep``, ``PredictKey``), called in the
  order they are declared, honouring ``app.dependency_overrides``;
* path parameters, validated against their annotation (``VersionText``);
* one pydantic model as the JSON body, parsed and validated in one step by pydantic-core
  (``model_validate_json``) whatever its Content-Type.

A bad path parameter or body raises the ``RequestValidationError`` FastAPI would (422, with
``loc`` starting ``path``/``body``). A subclass answers errors its own way in ``answer_error``
(the protocol's ``{"error": ...}``, oip.OIPRoute) inside the same handler: a wrapping handler
would cost every request one more coroutine. The declaration stays FastAPI's, so /openapi.json, the
security scheme and the docs are unchanged. An endpoint with any other kind of parameter (a
sync one, a session, a query parameter) gets FastAPI's own handler: ``route.lean`` says which.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import fastapi.routing
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from starlette.routing import Match
from starlette.types import Scope

# FastAPI >= 0.160: a route's handler is built per place it is included (None: older FastAPI)
_effective_route_context_var: ContextVar[Any] | None = getattr(fastapi.routing, "_effective_route_context_var", None)

# fills one parameter: returns None, or (a dependency that is a coroutine function) a coroutine to await
Filler = Callable[[Request, dict[str, Any], list], Any]


class ServingRoute(APIRoute):
    lean: bool = False

    def __init__(self, path: str, *args, **kwargs):
        super().__init__(path, *args, **kwargs)
        # the literal end of the path ("/predict", "/infer"; "" after a final parameter), which every
        # path this route matches ends with, whatever root path precedes it
        self.path_suffix = path.rsplit("}", 1)[-1]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, after a suffix check that refuses most paths at once. The prediction
        routes come first in the app's table, so every other request is matched against them:
        through the regular expression and FastAPI's route context, each refusal cost every such
        request work of its own (an OIP inference request, matched after /predict, paid it)."""
        if not scope["path"].endswith(self.path_suffix):
            return Match.NONE, {}
        return super().matches(scope)

    def answer_error(self, error: Exception) -> Response | None:
        """The answer to an error the endpoint raised, or None to let it propagate (FastAPI's
        handlers answer it). Protocol routes answer in the protocol's shape (oip.OIPRoute)."""
        return None

    def get_route_handler(self) -> Callable:
        # FastAPI builds a handler per place the route is included (with that place's prefix and
        # dependency overrides) while this context variable names it, as APIRoute does
        context = _effective_route_context_var.get() if _effective_route_context_var is not None else None
        route = context if context is not None and context.original_route is self else self
        fillers = self._fillers(route)
        if fillers is None:
            return self.answering_errors(super().get_route_handler())
        self.lean = True
        endpoint, answer_error = route.endpoint, self.answer_error
        # plain functions (the request, a path parameter) are called, coroutine functions awaited:
        # a coroutine per parameter that never waits costs a request more than filling it
        steps = [(fill, inspect.iscoroutinefunction(fill)) for fill in fillers]

        async def handler(request: Request) -> Response:
            arguments: dict[str, Any] = {}
            errors: list = []
            try:
                for fill, awaits in steps:
                    if awaits:
                        await fill(request, arguments, errors)
                    else:
                        fill(request, arguments, errors)
                if errors:
                    raise RequestValidationError(errors)
                return await endpoint(**arguments)
            except Exception as error:
                return answer_or_raise(answer_error, error)

        return handler

    def answering_errors(self, handler: Callable) -> Callable:
        """FastAPI's own handler (a route with parameters the lean one does not fill), with
        `answer_error` applied to what it raises."""
        if type(self).answer_error is ServingRoute.answer_error:
            return handler
        answer_error = self.answer_error

        async def answering(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as error:
                return answer_or_raise(answer_error, error)

        return answering

    @staticmethod
    def _fillers(route) -> list[Filler] | None:
        """One filler per parameter of the endpoint, or None if any is not one of the lean kinds."""
        signature = inspect.signature(route.endpoint, eval_str=True)
        answers_itself = isinstance(signature.return_annotation, type) and issubclass(
            signature.return_annotation, Response
        )
        if not (inspect.iscoroutinefunction(route.endpoint) and answers_itself):
            return None  # a sync endpoint needs the thread pool, a returned model FastAPI's serialisation
        path_names = set(route.param_convertors)
        fillers = []
        for parameter in signature.parameters.values():
            annotation, marker = split_annotated(parameter.annotation)
            if annotation is Request:
                fillers.append(request_filler(parameter.name))
            elif isinstance(marker, Depends) and takes_request_only(marker.dependency):
                fillers.append(
                    dependency_filler(parameter.name, marker.dependency, route.dependency_overrides_provider)
                )
            elif parameter.name in path_names and marker is None:
                fillers.append(path_filler(parameter.name, parameter.annotation))
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and marker is None:
                fillers.append(body_filler(parameter.name, annotation))
            else:
                return None
        return fillers


def answer_or_raise(answer_error: Callable[[Exception], Response | None], error: Exception) -> Response:
    """The route's answer to ``error``; the error itself, raised again, when the route has none."""
    answer = answer_error(error)
    if answer is None:
        raise error
    return answer


def split_annotated(annotation) -> tuple[Any, Any]:
    """``Annotated[T, Depends(f)]`` -> (T, Depends(f)); ``Annotated[str, constraints]`` -> (str, None)
    (constraints are kept by validating against the whole annotation); anything else -> (it, None)."""
    metadata = getattr(annotation, "__metadata__", ())
    marker = next((m for m in metadata if isinstance(m, Depends)), None)
    return (annotation.__origin__ if metadata else annotation), marker


def takes_request_only(dependency) -> bool:
    parameters = list(inspect.signature(dependency).parameters.values())
    return len(parameters) == 1 and parameters[0].annotation in (Request, "Request")


def request_filler(name: str) -> Filler:
    def fill(request: Request, arguments: dict, errors: list) -> None:
        arguments[name] = request

    return fill


def dependency_filler(name: str, dependency, overrides_provider) -> Filler:
    async def fill(request: Request, arguments: dict, errors: list) -> None:
        overrides = getattr(overrides_provider, "dependency_overrides", None)
        call = overrides.get(dependency, dependency) if overrides else dependency
        value = call(request)
        arguments[name] = await value if inspect.isawaitable(value) else value

    return fill


def path_filler(name: str, annotation) -> Filler:
    """A path parameter validated against its annotation; a plain ``str`` needs no validation (the
    router matched one)."""
    adapter = None if annotation is str else TypeAdapter(annotation)

    def fill(request: Request, arguments: dict, errors: list) -> None:
        value = request.path_params[name]
        if adapter is None:
            arguments[name] = value
            return
        try:
            arguments[name] = adapter.validate_python(value)
        except ValidationError as error:
            errors.extend(located(error, ("path", name)))

    return fill


def body_filler(name: str, model: type[BaseModel]) -> Filler:
    async def fill(request: Request, arguments: dict, errors: list) -> None:
        try:
            arguments[name] = model.model_validate_json(await request.body())
        except ValidationError as error:
            errors.extend(located(error, ("body",)))

    return fill


def located(error: ValidationError, prefix: tuple) -> list[ErrorDetails]:
    """pydantic's errors as FastAPI reports a request's: ``loc`` prefixed with where the value was. A body
    that is not JSON is echoed as text (its bytes may not be UTF-8, and the answer is JSON)."""
    problems = []
    for problem in error.errors(include_url=False):
        problem["loc"] = (*prefix, *problem["loc"])
        if isinstance(problem.get("input"), bytes):
            problem["input"] = problem["input"].decode("utf-8", errors="replace")
        problems.append(problem)
    return problems
