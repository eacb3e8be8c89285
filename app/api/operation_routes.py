"""OperationRoute: the one route type of an inference operation, built from a row of the
operations table (``app.api.operations``), which serves and documents it.

Each row gives two routes: ``POST /v1/models/{name}/{operation}`` (the latest version) and
``.../versions/{version}/{operation}``. They are FastAPI routes, documented by FastAPI from the
row, and guarded like every route (the route's ``Requirement``: the key and its scope first).
They serve as ASGI apps of their own instead of through FastAPI's request handling, whose
dependency resolution and response validation cost more than a 1-row prediction: the version
from the resolution cache, the body read by ``rows_body`` (rows straight into a float64
matrix: JSON, ``.npy`` or CSV), translated once into the inference service's input, and the
answer written as JSON or ``.npy``. Errors are raised, and answered at the edge, once.
"""

from __future__ import annotations

import functools
from inspect import Parameter, Signature
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from app.api.auth import A_VALID_KEY, AUTH_ERRORS, READ, WRITE, GuardedRoute, requirement_of
from app.api.binary import NPY_MEDIA_TYPE, REQUEST_HEADER, RESPONSE_HEADER
from app.api.bodies import ParsedBody, receive_body, rows_body
from app.api.csv_rows import CSV_MEDIA_TYPE
from app.api.deps import VersionPath, resolve_version
from app.api.locations import rows_at
from app.api.operation_answer import operation_answer
from app.api.operations import OperationEntry
from app.api.schemas import Problem
from app.errors import LloydError
from app.registry.model_registry import LATEST
from app.services.inference import NO_INPUT, OperationInput

OPERATION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such model, version or alias."},
    409: {
        "model": Problem,
        "description": "The model's artifact failed its integrity check (`artifact_integrity`), "
        "or was written by another scikit-learn version, or numpy major version, than the "
        "server runs (`version_drift`; LLOYD_ALLOW_VERSION_DRIFT allows it).",
    },
    406: {"model": Problem, "description": "`.npy` asked for an answer sent as JSON only."},
    413: {"model": Problem, "description": "Too many rows, or body too large."},
    415: {
        "model": Problem,
        "description": "A body neither JSON, `.npy` nor CSV (or a CSV `header` or `charset` "
        "parameter that is not understood).",
    },
    422: {
        "model": Problem,
        "description": "Invalid rows (ragged, non-numeric, non-finite, wrong width), or an "
        "operation this algorithm does not support.",
    },
}

NPY_CONTENT = {
    "schema": {"type": "string", "format": "binary"},
    "description": "A NumPy `.npy` 2-D numeric array (rows x features); the request's other "
    "fields as a JSON object in the `Lloyd-Request` header.",
}
CSV_CONTENT = {
    "schema": {"type": "string"},
    "description": "Rows as CSV (RFC 4180): one row per line, cells separated by commas. A "
    "header row names the columns: for a model trained with feature names they must be those "
    "names, in any order (as `records` keys); for a training they become its `feature_names`. "
    "Without `header=present` or `header=absent` in the content type, the first row is a "
    "header when none of its cells is a number. The request's other fields as a JSON object "
    "in the `Lloyd-Request` header.",
    "example": "temperature,pressure\n0.1,2.3\n0.2,2.1\n5.1,0.3\n",
}
LLOYD_REQUEST_HEADER = {
    "name": "Lloyd-Request",
    "in": "header",
    "required": False,
    "description": "With a `.npy` or CSV body only: the request's fields other than the rows, "
    'as a JSON object (e.g. `{"contamination": 0.05}`).',
    "schema": {"type": "string"},
}


def rows_request_body(body_model: type[BaseModel], *, optional: bool) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a body read by ``parse_rows_body``: the model as JSON and,
    where it carries rows, ``.npy`` and CSV. (``app.api.problems`` adds the model to the
    components.)"""
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{body_model.__name__}"}}
    }
    if {"instances", "data"} & body_model.model_fields.keys():
        content[NPY_MEDIA_TYPE] = NPY_CONTENT
        # The example is a whole request of an operation; a training's CSV needs its fields
        # (name, algorithm) in the Lloyd-Request header, which OpenAPI cannot tie to one media
        # type: its example is the README's curl session.
        content[CSV_MEDIA_TYPE] = (
            CSV_CONTENT
            if "instances" in body_model.model_fields
            else {k: v for k, v in CSV_CONTENT.items() if k != "example"}
        )
    return {"required": not optional, "content": content}


def _ok_response() -> dict[str, Any]:
    npy = {
        "schema": {"type": "string", "format": "binary"},
        "description": "With `Accept: application/x-npy`: the per-row results as a `.npy` array "
        "(a structured array, one field per result, where there are several; a 0-d array for a "
        "single number); the other fields as JSON in the `Lloyd-Response` header.",
    }
    return {
        "content": {NPY_MEDIA_TYPE: npy},
        "headers": {
            RESPONSE_HEADER: {
                "description": "With a `.npy` answer: its other fields, as a JSON object.",
                "schema": {"type": "string"},
            }
        },
    }


class _Documented:
    """What FastAPI documents a route's path parameters from, as an endpoint's signature (never
    called: ``serve`` serves): the model's name, whose example is the model the operation's
    examples run on (``OperationEntry.example_model``), and, for a named version, the version."""

    def __init__(self, example_model: str, *, versioned: bool) -> None:
        name = Annotated[str, Path(description="The model's name.", examples=[example_model])]
        parameters = [Parameter("name", Parameter.KEYWORD_ONLY, annotation=name)]
        if versioned:
            parameters.append(Parameter("version", Parameter.KEYWORD_ONLY, annotation=VersionPath))
        self.__signature__ = Signature(parameters)

    async def __call__(self, **_: str) -> None:
        return None


class OperationRoute(GuardedRoute):
    """One operation on a model's latest version, or (``versioned``) on a named one."""

    def __init__(self, entry: OperationEntry, *, versioned: bool) -> None:
        self.entry = entry
        self.versioned = versioned
        name = entry.operation.value
        path = (
            f"/v1/models/{{name}}/versions/{{version}}/{name}"
            if versioned
            else (f"/v1/models/{{name}}/{name}")
        )
        super().__init__(
            path,
            _Documented(entry.example_model, versioned=versioned),
            methods=["POST"],
            name=f"{name}_{'version' if versioned else 'latest'}",
            summary=f"{name} (a version, alias or latest)"
            if versioned
            else f"{name} (latest version)",
            description=entry.description,
            tags=[entry.tag],
            response_model=entry.answer,
            responses={200: _ok_response(), **AUTH_ERRORS, **OPERATION_ERRORS},
            dependencies=[READ if entry.scope == "read" else WRITE],
            openapi_extra={
                "requestBody": rows_request_body(entry.body, optional=entry.body_optional),
                "parameters": [LLOYD_REQUEST_HEADER] if entry.takes_rows else [],
            },
        )
        # Served by ``serve``, an ASGI app of its own, rather than FastAPI's handler (whose
        # dependency resolution and response validation cost more than a 1-row prediction):
        # the guard of every route first, then the operation. Errors reach the app's
        # exception handlers at the edge, as every route's do.
        self.requirement = requirement_of(self) or A_VALID_KEY
        self.app = self.serve

    # In the app's own router, never included through another: Starlette's matching and
    # handling (a 405 for another method), without FastAPI's look-up of an inclusion context
    # these routes cannot have.
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = Route.matches(self, scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Route.handle(self, scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Each header by its first value, as Starlette reads them.
        headers = dict(reversed(scope["headers"]))
        state = scope["app"].state
        self.requirement.check_header(state, headers.get(b"authorization"))
        path = scope["path_params"]
        ref = path["version"] if self.versioned else LATEST
        version = await resolve_version(state.registry, path["name"], ref)
        entry = self.entry
        parsed = await rows_body(
            entry.body,
            await receive_body(receive, headers.get(b"content-length")),
            _text(headers.get(b"content-type")) or "",
            _text(headers.get(LLOYD_REQUEST)),
            optional=entry.body_optional,
        )
        try:  # (a try costs nothing until it catches; a context manager, a few us)
            result = await state.inference.perform(
                version, entry.operation, operation_input(parsed)
            )
        except LloydError as exc:
            exc.relocate(rows_at(parsed.rows_at))
            raise
        body, content = operation_answer(entry.row_fields, result, _text(headers.get(b"accept")))
        await send({"type": "http.response.start", "status": 200, "headers": content})
        await send({"type": "http.response.body", "body": body})


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


LLOYD_REQUEST = REQUEST_HEADER.lower().encode()


@functools.cache
def operation_routes(entries: tuple[OperationEntry, ...]) -> tuple[OperationRoute, ...]:
    """Both routes of every entry, built once per process: a route holds no state of an app
    (it reads the app's from the request's scope), as the routers' routes, which every app
    includes, do not; and building them (FastAPI's fields of every documented answer) costs
    more than the rest of ``create_app``."""
    return tuple(
        OperationRoute(entry, versioned=versioned)
        for entry in entries
        for versioned in (False, True)
    )


# The body fields that are options of the inference service's input.
_OPTIONS = ("threshold", "contamination", "explain", "top_features", "n_samples", "random_state")


def operation_input(parsed: ParsedBody[Any]) -> OperationInput:
    """The parsed body as the inference service's input (rows the parser read as a matrix stay
    one; its ``instances`` are then empty)."""
    fields = parsed.fields
    if fields is None:
        return NO_INPUT
    values = vars(fields)
    options = {name: values[name] for name in _OPTIONS if values.get(name) is not None}
    return OperationInput(
        matrix=parsed.rows,
        instances=values.get("instances") if parsed.rows is None else None,
        records=values.get("records"),
        columns=parsed.columns,
        **options,
    )
