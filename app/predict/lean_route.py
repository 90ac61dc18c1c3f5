"""``LeanRoute``: the prediction routes as plain Starlette routes, called without FastAPI's per-request
dependency solver, at the head of the app's route table; their FastAPI declarations document them.

FastAPI resolves a route's parameters on every request by walking its dependency tree
(``solve_dependencies``): on ``POST /predict`` that walk cost more CPU than everything else the
request does, the forward pass included (benchmarks/serving.py; docs/benchmarks/measurements.md). The
prediction endpoints need only three kinds of parameters, so a ``LeanRoute`` reads the endpoint's
signature once, at startup, and builds a Starlette handler that fills exactly those:

* ``Request``;
* dependencies that take the request alone (``ServingDep``, ``PredictKey``), called in the
  order they are declared, honouring ``app.dependency_overrides``;
* path parameters, validated against their annotation (``VersionText``);
* one pydantic model as the JSON body, parsed and validated in one step by pydantic-core
  (``model_validate_json``) whatever its Content-Type.

A bad path parameter or body raises the ``RequestValidationError`` FastAPI would (422, with
``loc`` starting ``path``/``body``), answered by the app's exception handlers as any route's. A route
answers errors its own way with ``answer_error`` (the protocol's ``{"error": ...}``,
oip.protocol_answer) inside the same handler: a wrapping handler would cost every request one more
coroutine. An endpoint with any other kind of parameter is refused when the route is made.

Only public APIs: the routes are ``starlette.routing.Route`` objects given to ``FastAPI(routes=...)``,
which puts them before every route added afterwards (FastAPI's own documentation routes included), and
the same endpoints are also declared as ordinary FastAPI routes (app/predict/router.py,
``prediction_router``) further down the table. Those never see a request the lean routes take; they are
what /openapi.json documents (body, answers, security scheme) and they would serve the same answers
through FastAPI's solver if a lean route were removed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from starlette.routing import Match, Route, compile_path
from starlette.types import Scope

# fills one parameter: returns None, or (a dependency that is a coroutine function) a coroutine to await
Filler = Callable[[Request, dict[str, Any], list], Any]
ErrorAnswer = Callable[[Exception], Response | None]


def no_answer(error: Exception) -> Response | None:
    """Errors left to the app's exception handlers (``{"detail": ...}``)."""
    return None


class LeanRoute(Route):
    """A Starlette route running a FastAPI-style endpoint through `lean_handler`."""

    def __init__(self, path: str, endpoint: Callable, *, methods: Sequence[str], answer_error: ErrorAnswer = no_answer):
        _, _, convertors = compile_path(path)
        super().__init__(
            path, lean_handler(endpoint, set(convertors), answer_error), methods=list(methods), include_in_schema=False
        )
        self.declared_endpoint = endpoint
        # the literal end of the path ("/predict", "/infer"; "" after a final parameter), which every
        # path this route matches ends with, whatever root path precedes it
        self.path_suffix = path.rsplit("}", 1)[-1]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, after a suffix check that refuses most paths in a few opcodes: these routes
        come first in the app's table, so every other request is matched against them."""
        if not scope["path"].endswith(self.path_suffix):
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            # the route in the scope, as Starlette's router and FastAPI's for its own routes put it there
            # (FastAPI's router does not for a Starlette route): the metrics label requests by its template
            child_scope["route"] = self
        return match, child_scope


def lean_handler(endpoint: Callable, path_names: set[str], answer_error: ErrorAnswer = no_answer) -> Callable:
    """``async handler(request) -> Response`` calling ``endpoint`` with its parameters filled (see the module)."""
    fillers = endpoint_fillers(endpoint, path_names)
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


def endpoint_fillers(endpoint: Callable, path_names: set[str]) -> list[Filler]:
    """One filler per parameter of the endpoint; TypeError if one is not of the kinds a lean route fills."""
    signature = inspect.signature(endpoint, eval_str=True)
    answers_itself = isinstance(signature.return_annotation, type) and issubclass(signature.return_annotation, Response)
    if not (inspect.iscoroutinefunction(endpoint) and answers_itself):
        # a sync endpoint needs the thread pool, a returned model FastAPI's serialisation
        raise TypeError(f"{endpoint.__name__}: a lean route needs a coroutine function that returns a Response")
    fillers = []
    for parameter in signature.parameters.values():
        annotation, marker = split_annotated(parameter.annotation)
        if annotation is Request:
            fillers.append(request_filler(parameter.name))
        elif isinstance(marker, Depends) and takes_request_only(marker.dependency):
            fillers.append(dependency_filler(parameter.name, marker.dependency))
        elif parameter.name in path_names and marker is None:
            fillers.append(path_filler(parameter.name, parameter.annotation))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and marker is None:
            fillers.append(body_filler(parameter.name, annotation))
        else:
            raise TypeError(f"{endpoint.__name__}: a lean route cannot fill parameter {parameter.name!r}")
    return fillers


def answer_or_raise(answer_error: ErrorAnswer, error: Exception) -> Response:
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


def dependency_filler(name: str, dependency) -> Filler:
    async def fill(request: Request, arguments: dict, errors: list) -> None:
        overrides = request.app.dependency_overrides  # FastAPI's, as its solver reads them
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
