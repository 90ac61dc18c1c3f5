"""The Open Inference Protocol v2 (KServe v2, as Triton speaks it) over REST: its bodies and errors.

Nothing here knows about models or versions; it turns protocol bodies into numpy samples and
predictions back into protocol bodies:

* requests are JSON whatever Content-Type the client sends (tritonclient sends none it means);
  with the binary tensor data extension the JSON header is the first
  ``Inference-Header-Content-Length`` bytes and each input with ``parameters.binary_data_size``
  takes its bytes, in input order, from what follows (gzip/deflate bodies are inflated first);
* outputs are ``label`` and ``probability`` (and ``top_k_labels`` / ``top_k_probabilities``
  when ``top_k`` > 1); the request's ``outputs`` pick which, each JSON or binary
  (``parameters.binary_data``), the request parameter ``binary_data_output`` sets the default;
  a model whose feedback policy logs predictions (app/feedback/) has one more, ``prediction_id``
  (BYTES, one id per sample, "" for a sample not logged), answered even when the request's
  ``outputs`` leave it out: without it, no label can be sent back for the prediction;
* errors are typed exceptions mapped once to ``{"error": "..."}`` with the protocol's status,
  as KServe's ``errors.py`` does; domain errors raised on a protocol route become these in
  `protocol_answer` (lean routes) and `OIPRoute` (the others), so no route builds an error body.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Annotated, Any, NotRequired

import numpy as np
import pydantic_core
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from app.errors import DomainError, Forbidden, NotFound, PayloadTooLarge, Unauthorized
from app.learning import Prediction
from app.learning.data import Label
from app.predict.lean_route import answer_or_raise

HEADER_LENGTH = "Inference-Header-Content-Length"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()  # as ASGI carries header names
DATATYPES: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
STRUCT_FORMATS = {"INT64": "q", "FP32": "f"}  # the datatypes of the outputs
OUTPUTS = ("label", "probability", "top_k_labels", "top_k_probabilities")
OUTPUTS_BY_TOP_K = {False: OUTPUTS[:2], True: OUTPUTS}  # the outputs a request can have, by top_k > 1
PREDICTION_ID = "prediction_id"  # the output of a model that logs its predictions
# what a request that names no outputs is answered: by (top_k > 1, binary_data_output)
EVERY_OUTPUT = {
    (many, binary): tuple((name, binary) for name in names)
    for many, names in OUTPUTS_BY_TOP_K.items()
    for binary in (False, True)
}
INTEGER_PARAMETERS = frozenset({"task_id", "top_k", "version"})


# ------------------------------------------------------------------------------------------- errors
class InferenceServerError(DomainError):
    """An error of the protocol: a domain error that protocol routes answer as ``{"error": message}``
    with ``status_code`` (protocol_answer), where the rest of the API says ``{"detail": ...}``."""

    status_code = 500


class InvalidRequest(InferenceServerError):
    status_code = 400


class ModelNotFound(InferenceServerError):
    status_code = 404


class RequestTooLarge(InferenceServerError):
    status_code = 413


class ServerNotReady(InferenceServerError):
    status_code = 503


class AuthenticationError(InferenceServerError):
    """No valid key (401) or a key whose scope is too low (403): kept as they are, with their headers."""

    def __init__(self, error: DomainError):
        super().__init__(error.message)
        self.status_code, self.headers = error.status_code, error.headers


def protocol_error(error: DomainError) -> InferenceServerError:
    """The protocol's error for a domain error: unknown model or version 404, over a limit 413,
    missing or insufficient key 401/403, any other client mistake 400 (the protocol has no 422),
    the rest 500."""
    if isinstance(error, InferenceServerError):  # already the protocol's own
        return error
    if isinstance(error, (Unauthorized, Forbidden)):
        return AuthenticationError(error)
    if isinstance(error, NotFound):
        return ModelNotFound(error.message)
    if isinstance(error, PayloadTooLarge):
        return RequestTooLarge(error.message)
    if 400 <= error.status_code < 500:
        return InvalidRequest(error.message)
    return InferenceServerError(error.message)


def error_response(error: InferenceServerError) -> JSONResponse:
    return JSONResponse(status_code=error.status_code, content={"error": error.message}, headers=error.headers)


def protocol_answer(error: Exception) -> Response | None:
    """The protocol's answer to an error a protocol route raised (``{"error": ...}``), or None for errors
    the app's handlers answer (the rest of the API keeps ``{"detail": ...}``)."""
    if isinstance(error, DomainError):  # the protocol's own errors included
        return error_response(protocol_error(error))
    if isinstance(error, RequestValidationError):  # a path or query parameter outside its schema
        return error_response(InvalidRequest("; ".join(map(parameter_problem, error.errors()))))
    return None


class OIPRoute(APIRoute):
    """Protocol routes served by FastAPI's own handler: what it raises is answered by `protocol_answer`
    (FastAPI's documented way of customising a route: ``get_route_handler`` wrapping the default)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def answering(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as error:
                return answer_or_raise(protocol_answer, error)

        return answering


# ------------------------------------------------------------------------------------------ requests
# TypedDicts, not models: validated by pydantic-core into plain dicts, a request costs no model
# objects (which were a large share of reading a one-sample request's header).
class TensorIn(TypedDict):
    name: str
    shape: list[int]
    datatype: str
    data: NotRequired[
        Annotated[list[Any] | None, Field(description="row-major values; absent when sent as binary data")]
    ]
    parameters: NotRequired[dict[str, Any] | None]


class RequestedOutput(TypedDict):
    name: str
    parameters: NotRequired[dict[str, Any] | None]


class InferRequest(TypedDict):
    """The JSON part of an inference request."""

    id: NotRequired[str | None]
    inputs: Annotated[list[TensorIn], Field(min_length=1)]
    outputs: NotRequired[list[RequestedOutput] | None]
    parameters: NotRequired[
        Annotated[dict[str, Any] | None, Field(description="optional task_id, top_k, version, binary_data_output")]
    ]


INFER_REQUEST = TypeAdapter(InferRequest)


def read_request(
    body: bytes, raw_headers: Iterable[tuple[bytes, bytes]]
) -> tuple[InferRequest, np.ndarray | list[str]]:
    """The request and its samples (the first input tensor as an array of its shape; BYTES: its texts). ``raw_headers``
    as ASGI carries them (lower-case names, bytes).

    tritonclient writes ``Inference-Header-Content-Length`` (after a binary call) and
    ``Content-Encoding`` (after a compressed one) into the headers dict a caller hands it, and never
    takes them out: a caller who reuses one dict for its API key, as most do, sends the next plain
    JSON request with a stale length and encoding. A body that contradicts such a header is read as
    what it plainly is: a body starting with ``{`` is not gzip or zlib data, and a whole-JSON request
    with no binary input has no binary part for the length to mark off."""
    headers = dict(raw_headers)
    encoding, header_length = headers.get(b"content-encoding"), headers.get(HEADER_LENGTH_KEY)
    if encoding is not None and not body.startswith(b"{"):
        coding = encoding.decode("latin-1").lower()
        try:
            if coding == "gzip":
                body = gzip.decompress(body)
            elif coding == "deflate":
                body = zlib.decompress(body)
        except (OSError, zlib.error) as error:
            raise InvalidRequest(f"the body is not valid {coding} data: {error}") from error
    if header_length is None:
        request, binary = parse_header(body), b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidRequest(
                f"{HEADER_LENGTH} must be an integer; got {header_length.decode('latin-1')!r}"
            ) from None
        try:
            if not 0 <= length <= len(body):
                raise InvalidRequest(f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes")
            request, binary = parse_header(body[:length]), body[length:]
        except InvalidRequest:
            whole = whole_json_request(body)
            if whole is None:
                raise
            request, binary = whole, b""
    if len(request["inputs"]) != 1:
        raise InvalidRequest(f"this model takes one input tensor (its samples); got {len(request['inputs'])}")
    return request, tensor_array(request["inputs"][0], binary)


def parse_header(header: bytes) -> InferRequest:
    """The JSON part of a request, validated; InvalidRequest saying what is wrong otherwise."""
    try:
        return INFER_REQUEST.validate_json(header)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors())
        raise InvalidRequest(f"not an inference request: {problems}") from None


def whole_json_request(body: bytes) -> InferRequest | None:
    """The body as one JSON request with no binary input (what a stale header length came with), or None."""
    try:
        request = INFER_REQUEST.validate_json(body)
    except ValidationError:
        return None
    binary = any((tensor.get("parameters") or {}).get("binary_data_size") is not None for tensor in request["inputs"])
    return None if binary else request


def tensor_array(tensor: TensorIn, binary: bytes) -> np.ndarray | list[str]:
    name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
    parameters = tensor.get("parameters")
    size = parameters.get("binary_data_size") if parameters else None
    if datatype.upper() == "BYTES":
        return text_elements(tensor, binary if size is not None else None, size)
    dtype = DATATYPES.get(datatype) or DATATYPES.get(datatype.upper())
    if dtype is None:
        raise InvalidRequest(
            f"input {name!r}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)} or BYTES (text)"
        )
    try:
        values: np.ndarray
        if size is not None:
            if int(size) != len(binary):
                raise InvalidRequest(
                    f"input {name!r}: binary_data_size is {size}, but {len(binary)} bytes follow the JSON header"
                )
            values = np.frombuffer(bytearray(binary), dtype=dtype)  # writable: torch warns on read-only arrays
        elif tensor.get("data") is None:
            raise InvalidRequest(f"input {name!r} has neither data nor parameters.binary_data_size")
        else:
            values = np.asarray(tensor["data"], dtype=dtype).reshape(-1)
        return values.reshape(shape)
    except (ValueError, TypeError) as error:
        raise InvalidRequest(
            f"input {name!r}: data does not fit shape {shape} and datatype {datatype}: {error}"
        ) from error


def text_elements(tensor: TensorIn, binary: bytes | None, size) -> list[str]:
    """A BYTES tensor as UTF-8 texts: JSON ``data`` holds strings; binary data is each element's 4-byte
    little-endian length, then its bytes (as tritonclient writes ``InferInput(name, shape, "BYTES")``).
    Shape [N] or [N, 1]: one text per sample."""
    name, shape = tensor["name"], tensor["shape"]
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidRequest(
            f"input {name!r}: a BYTES input holds one text per sample, shape [N] or [N, 1]; got {shape}"
        )
    if binary is not None:
        if int(size) != len(binary):
            raise InvalidRequest(
                f"input {name!r}: binary_data_size is {size}, but {len(binary)} bytes follow the JSON header"
            )
        elements, offset = [], 0
        while offset < len(binary):
            if offset + 4 > len(binary):
                raise InvalidRequest(f"input {name!r}: BYTES data ends inside an element's 4-byte length")
            (length,) = struct.unpack_from("<I", binary, offset)
            offset += 4
            if offset + length > len(binary):
                raise InvalidRequest(f"input {name!r}: a BYTES element of {length} bytes runs past the data")
            elements.append(binary[offset : offset + length])
            offset += length
    elif tensor.get("data") is None:
        raise InvalidRequest(f"input {name!r} has neither data nor parameters.binary_data_size")
    else:
        elements = list(np.asarray(tensor["data"], dtype=object).reshape(-1))
    if len(elements) != shape[0]:
        raise InvalidRequest(f"input {name!r}: shape {shape} says {shape[0]} texts; the data holds {len(elements)}")
    texts: list[str] = []
    for i, element in enumerate(elements):
        text: object = element
        if isinstance(element, bytes):
            try:
                text = element.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"input {name!r}: element {i} is not UTF-8 text") from None
        if not isinstance(text, str):
            raise InvalidRequest(f"input {name!r}: BYTES elements must be strings; element {i} is {text!r}")
        texts.append(text)
    return texts


def request_options(request: InferRequest) -> dict[str, Any]:
    """The request's parameters (``task_id``, ``top_k``, ``version``, ``binary_data_output``) over its
    input's, as one dict."""
    own, of_input = request.get("parameters"), request["inputs"][0].get("parameters")
    if not of_input:
        return own or {}
    return {**of_input, **own} if own else of_input


def integer_options(options: dict[str, Any]) -> tuple[int | None, int, int | None]:
    """``version``, ``top_k`` (default 1, at most 1000) and ``task_id`` of the options. A request that
    names none of them (most) costs one set operation."""
    if options.keys().isdisjoint(INTEGER_PARAMETERS):
        return None, 1, None
    version, top_k, task_id = (
        integer_option(options, "version"),
        integer_option(options, "top_k"),
        integer_option(options, "task_id"),
    )
    if top_k is None:
        top_k = 1
    elif not 1 <= top_k <= 1000:
        raise InvalidRequest(f"parameter 'top_k' must be between 1 and 1000; got {top_k}")
    return version, top_k, task_id


def integer_option(options: dict[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None or type(value) is int:  # not bool, an int subclass
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise InvalidRequest(f"parameter {name!r} must be an integer; got {value!r}")


def parameter_problem(error: dict) -> str:
    """One path or query parameter FastAPI refused, said as the protocol's own checks say it."""
    if error["loc"][-1] == "version":
        return f"model version must be a positive integer; got {error['input']!r}"
    return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"


def version_number(version: str | None) -> int | None:
    """The path's ``{version}``: a positive integer (tritonclient sends strings; "" means the serving one)."""
    if version is None or version == "":
        return None
    if not version.isdigit() or int(version) < 1:
        raise InvalidRequest(f"model version must be a positive integer; got {version!r}")
    return int(version)


# ----------------------------------------------------------------------------------------- responses
def label_datatype(labels: Iterable[Label]) -> str:
    """The datatype of a model version's ``label`` and ``top_k_labels`` outputs, from every label the
    version knows (not the ones a batch happened to predict): BYTES when any is a string, else INT64.
    Model metadata and every inference of the version say the same."""
    return "BYTES" if any(map(isinstance, labels, repeat(str))) else "INT64"


def output_tensors(
    predictions: list[Prediction], top_k: int, label_type: str | None = None
) -> dict[str, tuple[str, list[int], list]]:
    """Every output this request can have: name -> (datatype, shape, values flat in row-major order).
    ``label_type``: the version's (`label_datatype` of all its labels); without it, the predicted
    labels'. Plain lists: on a one-sample answer, numpy arrays cost more than the values they hold."""
    n = len(predictions)
    labels = [p.label for p in predictions]
    if label_type is None:
        label_type = label_datatype(labels)
    text = label_type == "BYTES"  # a BYTES tensor holds strings: a version's integer labels among them too
    tensors = {
        "label": (label_type, [n], list(map(str, labels)) if text else labels),
        "probability": ("FP32", [n], [p.probability for p in predictions]),
    }
    if top_k > 1:
        k = len(predictions[0].top_k) if predictions else 0  # one k for the whole batch
        ranked = [label for p in predictions for label, _ in p.top_k]
        tensors["top_k_labels"] = (label_type, [n, k], list(map(str, ranked)) if text else ranked)
        tensors["top_k_probabilities"] = ("FP32", [n, k], [q for p in predictions for _, q in p.top_k])
    return tensors


def tensor_bytes(datatype: str, values: list) -> bytes:
    """Values as the binary extension lays them out: little-endian, row-major."""
    if datatype == "BYTES":
        return encode_bytes(values)
    return struct.pack(f"<{len(values)}{STRUCT_FORMATS[datatype]}", *values)


def encode_bytes(values: list) -> bytes:
    """BYTES elements as the binary extension lays them out: a 4-byte little-endian length, then the UTF-8."""
    parts = []
    for value in np.asarray(values, dtype=object).reshape(-1):
        data = str(value).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def wanted_outputs(
    requested: list[RequestedOutput] | None, top_k: int, binary_default: bool, logged: bool = False
) -> Sequence[tuple[str, bool]]:
    """(name, as binary data?) of each output to answer: the request's ``outputs``, else all it can have.
    ``logged``: the model logs its predictions, so ``prediction_id`` is answered too, named or not."""
    if requested is None:
        every = EVERY_OUTPUT[top_k > 1, binary_default]
        return (*every, (PREDICTION_ID, binary_default)) if logged else every
    available, wanted = OUTPUTS_BY_TOP_K[top_k > 1], []
    if logged:
        available = (*available, PREDICTION_ID)
    for output in requested:
        name, parameters = output["name"], output.get("parameters")
        if name not in available:
            extra = "" if top_k > 1 else " (top_k_* need the parameter top_k > 1)"
            if name == PREDICTION_ID:
                extra = " (prediction_id needs a feedback policy that logs this model's predictions)"
            raise InvalidRequest(f"unknown output {name!r}; this request has {', '.join(available)}{extra}")
        wanted.append((name, parameters.get("binary_data", binary_default) if parameters else binary_default))
    if logged and all(name != PREDICTION_ID for name, _ in wanted):
        wanted.append((PREDICTION_ID, binary_default))
    return wanted


def infer_response(
    request: InferRequest,
    model_name: str,
    model_version: int,
    predictions: list[Prediction],
    top_k: int,
    options: dict[str, Any] | None = None,
    label_type: str | None = None,
    prediction_ids: list[str | None] | None = None,
) -> Response:
    """The response body: JSON, or a JSON header followed by the binary outputs. Built from plain
    dicts and lists and serialised by pydantic-core: on a one-sample answer, model objects, numpy
    arrays and ``json.dumps`` cost more than the forward pass they report. ``options``: the
    request's `request_options`, when the caller has them already; ``label_type``: the version's
    `label_datatype`; ``prediction_ids``: when the model logs its predictions (app/feedback/), one
    more output, ``prediction_id`` (BYTES; "" for a sample the sampling skipped)."""
    binary_default = bool((request_options(request) if options is None else options).get("binary_data_output"))
    wanted = wanted_outputs(request.get("outputs"), top_k, binary_default, prediction_ids is not None)
    tensors = output_tensors(predictions, top_k, label_type)
    if prediction_ids is not None:
        ids = [prediction_id or "" for prediction_id in prediction_ids]
        tensors[PREDICTION_ID] = ("BYTES", [len(ids)], ids)
    outputs, blobs = [], []
    for name, binary in wanted:
        datatype, shape, values = tensors[name]
        if binary:
            blob = tensor_bytes(datatype, values)
            outputs.append(
                {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(blob)}}
            )
            blobs.append(blob)
        else:
            if datatype == "FP32":  # the values a binary answer would hold, rounded to float32
                values = list(struct.unpack(f"<{len(values)}f", tensor_bytes(datatype, values)))
            outputs.append({"name": name, "datatype": datatype, "shape": shape, "data": values})
    body: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version), "outputs": outputs}
    if request.get("id") is not None:
        body["id"] = request["id"]
    header = pydantic_core.to_json(body)
    if not blobs:
        return Response(header, media_type="application/json")
    response = Response(b"".join([header, *blobs]), media_type="application/octet-stream")
    response.raw_headers.append((HEADER_LENGTH_KEY, str(len(header)).encode()))
    return response
