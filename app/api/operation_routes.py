"""Registers one operation twice: on a model's latest version and on a named version."""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, which
# refer to this factory's arguments.
from typing import Any, TypedDict

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from app.api.auth import AUTH_ERRORS, BEARER_SCHEME, authorize
from app.api.binary import NPY_MEDIA_TYPE, RESPONSE_HEADER
from app.api.bodies import parse_rows_body
from app.api.deps import resolve_version
from app.api.inference_front import FrontOperation
from app.api.operation_answer import AnswerResponse, answer_operation
from app.api.schemas import Problem
from app.registry.model_registry import LATEST

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
    415: {"model": Problem, "description": "A body neither JSON nor `.npy`."},
    422: {
        "model": Problem,
        "description": "Invalid rows (ragged, non-numeric, non-finite, wrong width), or an "
        "operation this algorithm does not support.",
    },
}


# Request bodies parsed by hand (see app.api.bodies) are documented here, by reference, and
# added to the OpenAPI components by app.api.problems.
DOCUMENTED_BODIES: set[type[BaseModel]] = set()
NPY_CONTENT = {
    "schema": {"type": "string", "format": "binary"},
    "description": "A NumPy `.npy` 2-D numeric array (rows x features); the request's other "
    "fields as a JSON object in the `Lloyd-Request` header.",
}
NAME_PARAMETER = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The model's name.",
    "schema": {"type": "string", "title": "Name", "examples": ["line-7"]},
}
VERSION_PARAMETER = {
    "name": "version",
    "in": "path",
    "required": True,
    "description": "A version number, an alias (e.g. `production`) or `latest`.",
    "schema": {"type": "string", "title": "Version", "examples": ["latest"]},
}
LLOYD_REQUEST_HEADER = {
    "name": "Lloyd-Request",
    "in": "header",
    "required": False,
    "description": "With a `.npy` body only: the request's fields other than the rows, as a JSON "
    'object (e.g. `{"contamination": 0.05}`).',
    "schema": {"type": "string"},
}


class _RouteOptions(TypedDict):
    """The ``add_api_route`` arguments both of an operation's documented routes share."""

    methods: list[str]
    response_model: type
    responses: dict[int | str, dict[str, Any]]
    description: str


class ServedRoute(Route):
    """An inference route as a plain Starlette route, placed ahead of the FastAPI route that
    documents it (see ``install``): FastAPI's request handling, which these endpoints do not
    use, costs a third of a 1-row request (237 -> 167 us measured in-process). Its ``route``
    in the scope gives the metrics their template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


# Every operation's served routes; ``install`` puts them at the head of an app's routes.
SERVED_ROUTES: list[ServedRoute] = []
# What app.api.inference_front needs to answer these operations' common requests itself.
FRONT_OPERATIONS: dict[str, FrontOperation] = {}


def install(app: FastAPI) -> None:
    """Serve the inference routes ahead of everything else (they are the hot ones). The
    FastAPI routes stay, for the OpenAPI document."""
    app.router.routes[:0] = SERVED_ROUTES


def rows_request_body(body_model: type[BaseModel], *, optional: bool) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a body read by ``parse_rows_body``: the model as JSON and,
    where it carries rows, ``.npy``."""
    DOCUMENTED_BODIES.add(body_model)
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{body_model.__name__}"}}
    }
    if {"instances", "data"} & body_model.model_fields.keys():
        content[NPY_MEDIA_TYPE] = NPY_CONTENT
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


def add_operation(
    router: APIRouter,
    operation: str,
    *,
    body_model: type[BaseModel],
    response_model: type,
    description: str,
    body_optional: bool = False,
) -> None:
    """``POST /v1/models/{name}/{operation}`` and ``.../versions/{version}/{operation}``.

    The body is read by ``parse_rows_body`` (rows straight into a float64 matrix, JSON or
    ``.npy``) and documented as ``body_model``; the answer is JSON, or ``.npy`` when asked for."""
    takes_rows = "instances" in body_model.model_fields

    # The hot path: no FastAPI dependencies (their resolution costs more than a 1-row
    # prediction); the same authorization and version resolution the dependencies use, called
    # directly, in the same order (the key before the lookup), and documented below by hand.
    async def run(request: Request, ref: str) -> Response:
        authorize(request, "read")
        state = request.app.state
        version = await resolve_version(state.registry, request.path_params["name"], ref)
        parsed = await parse_rows_body(request, body_model, optional=body_optional)
        body, headers = await answer_operation(
            state=state,
            version=version,
            operation=operation,
            parsed=parsed,
            accept=request.headers.get("accept"),
        )
        return AnswerResponse(body, headers)

    async def on_latest(request: Request) -> Response:
        return await run(request, LATEST)

    async def on_version(request: Request) -> Response:
        return await run(request, request.path_params["version"])

    latest_path = f"/v1/models/{{name}}/{operation}"
    version_path = f"/v1/models/{{name}}/versions/{{version}}/{operation}"
    SERVED_ROUTES.extend(
        [
            ServedRoute(latest_path, on_latest, methods=["POST"]),
            ServedRoute(version_path, on_version, methods=["POST"]),
        ]
    )
    if takes_rows:
        FRONT_OPERATIONS[operation] = FrontOperation(body_model, latest_path, version_path)

    common: _RouteOptions = {
        "methods": ["POST"],
        "response_model": response_model,
        "responses": {200: _ok_response(), **AUTH_ERRORS, **OPERATION_ERRORS},
        "description": description,
    }

    def documented(*path_parameters: dict[str, Any]) -> dict[str, Any]:
        parameters = [*path_parameters, *([LLOYD_REQUEST_HEADER] if takes_rows else [])]
        return {
            "requestBody": rows_request_body(body_model, optional=body_optional),
            "parameters": parameters,
            "security": [{BEARER_SCHEME: []}],
        }

    router.add_api_route(
        latest_path,
        on_latest,
        name=f"{operation}_latest",
        summary=f"{operation} (latest version)",
        openapi_extra=documented(NAME_PARAMETER),
        **common,
    )
    router.add_api_route(
        version_path,
        on_version,
        name=f"{operation}_version",
        summary=f"{operation} (a version, alias or latest)",
        openapi_extra=documented(NAME_PARAMETER, VERSION_PARAMETER),
        **common,
    )
