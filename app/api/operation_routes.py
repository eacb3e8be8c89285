"""Registers one operation twice: on a model's latest version and on a named version."""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, which
# refer to this factory's arguments.
from typing import Annotated, Any

from fastapi import APIRouter, Body
from starlette.responses import Response

from app.api.deps import LatestVersionDep, ModelVersionDep, RegistryDep, SettingsDep
from app.api.responses import FastJSONResponse
from app.api.schemas import Problem
from app.services import inference

OPERATION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such model, version or alias."},
    409: {"model": Problem, "description": "The model's artifact failed its integrity check."},
    413: {"model": Problem, "description": "Too many rows, or body too large."},
    422: {
        "model": Problem,
        "description": "Invalid rows (ragged, non-numeric, non-finite, wrong width), or an "
        "operation this algorithm does not support.",
    },
}


def add_operation(
    router: APIRouter,
    operation: str,
    *,
    body_model: type,
    response_model: type,
    description: str,
    body_optional: bool = False,
) -> None:
    """``POST /v1/models/{name}/{operation}`` and ``.../versions/{version}/{operation}``."""
    if body_optional:
        BodyType = Annotated[body_model | None, Body()]
    else:
        BodyType = Annotated[body_model, Body()]

    async def on_latest(
        version: LatestVersionDep,
        registry: RegistryDep,
        settings: SettingsDep,
        body: BodyType = None,
    ) -> Response:
        result = await inference.perform(
            registry=registry, version=version, operation=operation, body=body, settings=settings
        )
        return FastJSONResponse(result)

    async def on_version(
        version: ModelVersionDep,
        registry: RegistryDep,
        settings: SettingsDep,
        body: BodyType = None,
    ) -> Response:
        result = await inference.perform(
            registry=registry, version=version, operation=operation, body=body, settings=settings
        )
        return FastJSONResponse(result)

    if not body_optional:
        # A required body: drop the "= None" default so FastAPI marks it required.
        for endpoint in (on_latest, on_version):
            endpoint.__defaults__ = None
    common = {
        "methods": ["POST"],
        "response_model": response_model,
        "responses": OPERATION_ERRORS,
        "description": description,
    }
    router.add_api_route(
        f"/v1/models/{{name}}/{operation}",
        on_latest,
        name=f"{operation}_latest",
        summary=f"{operation} (latest version)",
        **common,
    )
    router.add_api_route(
        f"/v1/models/{{name}}/versions/{{version}}/{operation}",
        on_version,
        name=f"{operation}_version",
        summary=f"{operation} (a version, alias or latest)",
        **common,
    )
