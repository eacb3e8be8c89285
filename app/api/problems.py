"""The exception handlers: every error leaves as application/problem+json (on the Open Inference
Protocol's paths, /v2, as its own error object: ``app.api.v2.errors``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api import schemas
from app.api.responses import PROBLEM_MEDIA_TYPE, problem
from app.api.schemas import Problem
from app.api.v2.errors import for_the_protocol, on_protocol_path, protocol_error
from app.errors import LloydError

Handler = Callable[[Request, Exception], Awaitable[Response]]

log = logging.getLogger("app.errors")


def json_pointer(loc: list[Any] | tuple[Any, ...]) -> str:
    """``("body", "data", "instances", 0, 1)`` -> ``/data/instances/0/1`` (RFC 6901)."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "pointer": json_pointer(e["loc"]),
            "loc": list(e["loc"]),
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in errors
    ]


async def lloyd_error(_: Request, exc: LloydError) -> Response:
    errors = None
    if exc.errors:
        errors = [{"pointer": json_pointer(e.get("loc", [])), **e} for e in exc.errors]
    return problem(
        exc.status,
        exc.code,
        exc.title,
        exc.detail,
        errors=errors,
        extra=exc.extra,
        headers=exc.headers,
    )


async def validation_error(_: Request, exc: RequestValidationError) -> Response:
    errors = _validation_errors(list(exc.errors()))
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(
            400,
            "malformed_json",
            "Malformed JSON",
            "the request body is not valid JSON",
            errors=errors,
        )
    first = errors[0] if errors else {"pointer": "", "msg": "invalid request"}
    where = first["pointer"] or "the request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return problem(
        422, "validation_error", "Invalid request", f"{where}: {first['msg']}{more}", errors=errors
    )


# Stable codes for the statuses Starlette itself raises.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
HTTP_TITLES = {413: "Payload too large"}


async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
    phrase = HTTP_TITLES.get(exc.status_code) or HTTPStatus(exc.status_code).phrase
    code = HTTP_CODES.get(exc.status_code) or phrase.lower().replace(" ", "_").replace("-", "_")
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else phrase
    if exc.status_code == 404 and detail == phrase:
        detail = "no such endpoint; see /docs"
    return problem(exc.status_code, code, phrase, detail, headers=getattr(exc, "headers", None))


def _document_problems(app: FastAPI) -> None:
    """Document every error response as what is sent: a Problem as application/problem+json.
    FastAPI would list routes' error models as application/json, and its default 422 as an
    ``HTTPValidationError`` that the validation handler above never sends."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for operation in (
            op
            for path, item in schema.get("paths", {}).items()
            if not on_protocol_path(path)  # the protocol documents its own errors
            for op in item.values()
        ):
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault(
                    "400", {"description": "The body is not valid JSON.", "content": {}}
                )
            for status, response in responses.items():
                if status[0] in "45" and "content" in response:
                    response["content"] = {
                        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault(
            "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        # Bodies read by hand (rows straight into numpy) are documented by their models.
        _, definitions = models_json_schema(
            [(model, "validation") for model in _hand_parsed_bodies(schema)],
            ref_template="#/components/schemas/{model}",
        )
        for name, definition in definitions.get("$defs", {}).items():
            components.setdefault(name, definition)
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _hand_parsed_bodies(schema: dict[str, Any]) -> list[type[BaseModel]]:
    """The request body models the document refers to but FastAPI did not add to its
    components: those of routes that read their body by hand (``rows_request_body``)."""
    known = schema.get("components", {}).get("schemas", {})
    names = {
        media["schema"]["$ref"].rsplit("/", 1)[-1]
        for path in schema.get("paths", {}).values()
        for operation in path.values()
        for media in operation.get("requestBody", {}).get("content", {}).values()
        if "$ref" in media.get("schema", {})
    }
    return [getattr(schemas, name) for name in sorted(names - known.keys())]


def _in_the_protocol_shape(handler: Callable[[Request, Any], Awaitable[Response]]) -> Handler:
    """``handler``, but on a path of the Open Inference Protocol (``/v2``): the protocol's own
    error shape (``app.api.v2.errors``), whatever raised the error (a route, the edge's body
    limit, an unknown path)."""

    async def answer(request: Request, exc: Exception) -> Response:
        if for_the_protocol(request.scope):
            return protocol_error(exc)
        return await handler(request, exc)

    return answer


def install(app: FastAPI) -> None:
    for cls, handler in (
        (LloydError, lloyd_error),
        (RequestValidationError, validation_error),
        (StarletteHTTPException, http_error),
    ):
        app.add_exception_handler(cls, _in_the_protocol_shape(handler))
    # app.api.edge answers every error with these, and anything else with its 500.
    _document_problems(app)
