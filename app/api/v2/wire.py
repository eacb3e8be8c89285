"""An inference request of the Open Inference Protocol, read from its wire once: the JSON
object alone, or (the binary tensor data extension) the JSON object of the
``Inference-Header-Content-Length`` header's length followed by the input's bytes.

The envelope is decoded by msgspec, which keeps the input's ``data`` as raw JSON; the rows are
then read straight into a float64 matrix (``app.api.v2.tensors``) and the parameters validated
by the models the OpenAPI document shows (``app.api.v2.schemas``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.api.v2.schemas import V2InputParameters, V2OutputParameters, V2RequestParameters
from app.api.v2.tensors import binary_rows, json_rows
from app.errors import InvalidInput, LloydError

HEADER_LENGTH = "inference-header-content-length"
M = TypeVar("M", bound=BaseModel)
Value = str | int | float | bool | None


class _Input(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Value] = {}
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _Output(msgspec.Struct):
    name: str
    parameters: dict[str, Value] = {}


class _Request(msgspec.Struct):
    inputs: list[_Input]
    id: str | None = None
    parameters: dict[str, Value] = {}
    outputs: list[_Output] | None = None


_DECODER = msgspec.json.Decoder(_Request)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferCall:
    """What an inference request asks: its rows, the outputs it names (None: the model's
    default) and how to send them, the anomalies' options, and its id to echo."""

    rows: np.ndarray
    outputs: tuple[RequestedOutput, ...] | None
    binary_output: bool
    contamination: float | None
    threshold: float | None
    id: str | None


@functools.cache
def _defaults(model: type[M]) -> M:
    """``model`` with every parameter at its default: the same object for every request that
    sends none (nothing changes a parsed request)."""
    return model()


def _validated(model: type[M], values: dict[str, Value], *at: str | int) -> M:
    if not values:
        return _defaults(model)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *at, *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _split(raw: bytes | bytearray, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON object and the binary data after it."""
    body = memoryview(raw)
    if header_length is None:
        return body, body[len(body) :]
    length = header_length.strip()
    if not (length.isascii() and length.isdigit()) or not 0 < int(length) <= len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length must be the length of the JSON object at the "
            f"start of the body, between 1 and {len(body)} here, not {header_length[:40]!r}",
            at=["header", "Inference-Header-Content-Length"],
        )
    return body[: int(length)], body[int(length) :]


def _envelope(header: memoryview) -> _Request:
    try:
        return _DECODER.decode(header)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"the inference request is not valid: {exc}", at=["body"]) from None
    except msgspec.DecodeError as exc:
        raise LloydError(f"the request body is not valid JSON: {exc}") from None


def _rows(given: _Input, binary: memoryview) -> np.ndarray:
    at: list[str | int] = ["body", "inputs", 0]
    parameters = _validated(V2InputParameters, given.parameters, "inputs", 0, "parameters")
    size = parameters.binary_data_size
    if size is None:
        if binary:
            raise InvalidInput(
                f"the body holds {len(binary)} bytes after its JSON object, but the input has "
                "no binary_data_size",
                at=[*at, "parameters"],
            )
        if not len(given.data):
            raise InvalidInput("the input has no data (nor a binary_data_size)", at=at)
        return json_rows(memoryview(given.data), given.datatype, given.shape, at)
    if len(given.data):
        raise InvalidInput("an input with a binary_data_size has no data in JSON", at=[*at, "data"])
    if size != len(binary):
        raise InvalidInput(
            f"binary_data_size is {size}, but the body holds {len(binary)} bytes after its "
            "JSON object (Inference-Header-Content-Length)",
            at=[*at, "parameters", "binary_data_size"],
        )
    return binary_rows(binary, given.datatype, given.shape, at)


def _outputs(request: _Request, default_binary: bool) -> tuple[RequestedOutput, ...] | None:
    if request.outputs is None:
        return None
    chosen = []
    for index, output in enumerate(request.outputs):
        parameters = _validated(
            V2OutputParameters, output.parameters, "outputs", index, "parameters"
        )
        binary = default_binary if parameters.binary_data is None else parameters.binary_data
        chosen.append(RequestedOutput(output.name, binary))
    return tuple(chosen)


def read_request(raw: bytes | bytearray, header_length: str | None) -> InferCall:
    """The inference request of ``raw`` (``header_length``: the request's
    ``Inference-Header-Content-Length``, if any)."""
    header, binary = _split(raw, header_length)
    request = _envelope(header)
    if len(request.inputs) != 1:
        raise InvalidInput(
            f"send one input tensor (rows x features), not {len(request.inputs)}",
            at=["body", "inputs"],
        )
    parameters = _validated(V2RequestParameters, request.parameters, "parameters")
    return InferCall(
        rows=_rows(request.inputs[0], binary),
        outputs=_outputs(request, parameters.binary_data_output),
        binary_output=parameters.binary_data_output,
        contamination=parameters.contamination,
        threshold=parameters.threshold,
        id=request.id,
    )


# The fields of the wire's structs (tests hold them to the documented models).
WIRE_FIELDS: dict[str, set[str]] = {
    "request": set(_Request.__struct_fields__),
    "input": set(_Input.__struct_fields__),
    "output": set(_Output.__struct_fields__),
}
