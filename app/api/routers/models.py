"""Models router: list, inspect and delete models and versions; aliases; fitted parameters."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from app.api.auth import READ, WRITE, GuardedRoute
from app.api.bodies import parse_rows_body
from app.api.deps import ModelVersionDep, NamePath, RegistryDep
from app.api.documents import model_out, version_out
from app.api.locations import in_path, located
from app.api.operation_routes import rows_request_body
from app.api.schemas import (
    AliasRequest,
    DeletedOut,
    ModelOut,
    ModelPage,
    ParametersOut,
    Problem,
    VersionOut,
    VersionPage,
)

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=GuardedRoute)

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such model, version or alias."}
}
Offset = Annotated[int, Query(ge=0, description="Items to skip.")]
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
AliasPath = Annotated[
    str,
    Path(
        description="An alias: starts with a letter; letters, digits, '_', '.', '-'; not `latest`.",
        examples=["production"],
    ),
]


@router.get("", response_model=ModelPage, dependencies=[READ])
def list_models(registry: RegistryDep, offset: Offset = 0, limit: Limit = 50) -> ModelPage:
    """List models by name, a page at a time."""
    items, total = registry.list_models(offset=offset, limit=limit)
    return ModelPage(items=[model_out(m) for m in items], total=total, offset=offset, limit=limit)


@router.get("/{name}", response_model=ModelOut, responses=NOT_FOUND, dependencies=[READ])
def get_model(name: NamePath, registry: RegistryDep) -> ModelOut:
    """A model: its latest version, number of versions and aliases."""
    return model_out(registry.get_model(name))


@router.delete("/{name}", response_model=DeletedOut, responses=NOT_FOUND, dependencies=[WRITE])
def delete_model(name: NamePath, registry: RegistryDep) -> DeletedOut:
    """Delete a model with every version, alias and artifact of it."""
    deleted = registry.delete_model(name)
    return DeletedOut(name=name, deleted_versions=[v.version for v in deleted])


@router.get(
    "/{name}/versions", response_model=VersionPage, responses=NOT_FOUND, dependencies=[READ]
)
def list_versions(
    name: NamePath, registry: RegistryDep, offset: Offset = 0, limit: Limit = 50
) -> VersionPage:
    """The versions of a model, oldest first, a page at a time."""
    items, total = registry.list_versions(name, offset=offset, limit=limit)
    return VersionPage(
        items=[version_out(v) for v in items], total=total, offset=offset, limit=limit
    )


@router.get(
    "/{name}/versions/{version}",
    response_model=VersionOut,
    responses=NOT_FOUND,
    dependencies=[READ],
)
def get_version(version: ModelVersionDep) -> VersionOut:
    """One version: hyperparameters, metrics, anomaly threshold, artifact and library versions."""
    return version_out(version)


@router.delete(
    "/{name}/versions/{version}",
    response_model=DeletedOut,
    responses=NOT_FOUND,
    dependencies=[WRITE],
)
def delete_version(version: ModelVersionDep, registry: RegistryDep) -> DeletedOut:
    """Delete one version, its aliases and its artifact. Other versions keep their numbers."""
    deleted = registry.delete_version(version.name, version.version)
    return DeletedOut(name=version.name, deleted_versions=[deleted.version])


@router.get(
    "/{name}/versions/{version}/parameters",
    response_model=ParametersOut,
    responses={
        **NOT_FOUND,
        409: {
            "model": Problem,
            "description": "Artifact failed its check (`artifact_integrity`), or was written by "
            "other library versions (`version_drift`).",
        },
    },
    dependencies=[READ],
)
def get_parameters(
    version: ModelVersionDep,
    registry: RegistryDep,
    core_sample_indices: Annotated[
        bool,
        Query(
            description="DBSCAN: add `core_sample_indices`, the training row of every core "
            "sample (one per core sample: up to every training row). Other algorithms have "
            "none and ignore it."
        ),
    ] = False,
) -> ParametersOut:
    """The fitted parameters: centroids (BIRCH: subcluster centres); weights, means and
    covariances; DBSCAN's core sample count (and indices on request), eps and `max_distance`;
    the classes of `predict_proba` (`-1`, noise, first for the clusterers that have it);
    preprocessing; the anomaly threshold."""
    model = registry.load(version)
    return ParametersOut(
        model=version.name,
        version=version.version,
        algorithm=version.algorithm,
        parameters=model.parameters(core_sample_indices=core_sample_indices),
    )


@router.put(
    "/{name}/aliases/{alias}",
    response_model=VersionOut,
    responses={
        **NOT_FOUND,
        415: {"model": Problem, "description": "A body that is not JSON."},
        422: {"model": Problem, "description": "Invalid alias."},
    },
    dependencies=[WRITE],
    openapi_extra={"requestBody": rows_request_body(AliasRequest, optional=False)},
)
async def set_alias(
    request: Request, name: NamePath, alias: AliasPath, registry: RegistryDep
) -> VersionOut:
    """Point `alias` (e.g. `production`) at a version; moves it if it already exists."""
    # Read here, after the route's key check, never before it (see app.api.bodies).
    body = (await parse_rows_body(request, AliasRequest)).fields
    assert body is not None
    with located(in_path):
        version = await run_in_threadpool(registry.set_alias, name, alias, body.version)
    return version_out(version)


@router.delete(
    "/{name}/aliases/{alias}", status_code=204, responses=NOT_FOUND, dependencies=[WRITE]
)
def delete_alias(name: NamePath, alias: AliasPath, registry: RegistryDep) -> None:
    """Remove an alias; the version it pointed at stays."""
    registry.delete_alias(name, alias)
