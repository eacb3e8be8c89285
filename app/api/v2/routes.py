"""The Open Inference Protocol (KServe / Triton / MLServer "V2" REST) beside ``/v1``: health,
server and model metadata, readiness, and inference, on the registry's versions (numbers,
aliases, ``latest``) and through the inference service, with keys and scopes as on ``/v1``
(health is open, everything else needs the ``read`` scope). Errors are the protocol's
``{"error": ...}`` (``app.api.v2.errors``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from app.api.auth import READ, GuardedRoute, requirement_of
from app.api.bodies import THREAD_PARSE_MIN_BYTES, receive_body
from app.api.deps import NamePath, RegistryDep, VersionPath, resolve_version
from app.api.responses import FastJSONResponse
from app.api.v2.errors import PREFIX, for_the_protocol
from app.api.v2.infer import BINARY_TYPE, infer
from app.api.v2.outputs import default_output, metadata_shape, outputs_of
from app.api.v2.schemas import (
    V2ErrorResponse,
    V2InferenceRequest,
    V2InferenceResponse,
    V2Live,
    V2MetadataTensor,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
)
from app.api.v2.wire import HEADER_LENGTH, InferCall, read_request
from app.errors import UnsupportedMediaType
from app.registry.model_registry import LATEST, ModelRegistry

TAG = "open inference protocol v2"
EXTENSIONS = ["binary_tensor_data"]
INPUT_NAME = "input-0"
# The model versions metadata lists at most.
LISTED_VERSIONS = 10_000


def _error(description: str) -> dict[str, Any]:
    return {"model": V2ErrorResponse, "description": description}


KEY_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("No API key, or not a valid one (keys configured)."),
    403: _error("The API key lacks the `read` scope."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("No such model, version or alias.")}
# (FastAPI documents a 422 for a route with parameters unless a 4XX is documented: the
# protocol's errors are 400s.)
ANY_OTHER: dict[int | str, dict[str, Any]] = {
    "4XX": _error("Any other refusal (405, ...), in the same shape.")
}
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {**KEY_ERRORS, **NOT_FOUND, **ANY_OTHER}
INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error(
        "Not a valid inference request: malformed JSON, not one input, a shape other than "
        "[rows, features] or of another width than the model's, data that do not fill the "
        "shape, values that are not finite numbers of the datatype, binary sizes that do not "
        "add up, an unknown parameter, an output the model does not offer."
    ),
    **KEY_ERRORS,
    **NOT_FOUND,
    409: _error("The model's artifact failed its integrity check, or its library versions."),
    413: _error("Too many rows (LLOYD_MAX_INFERENCE_ROWS), or a body over LLOYD_MAX_BODY_BYTES."),
    415: _error("A compressed body (Content-Encoding): send it as it is."),
    **ANY_OTHER,
}


class ProtocolRouter(APIRouter):
    """An APIRouter that a request off its prefix passes by with one comparison, rather than
    each of its routes' matching (FastAPI matches the routes of an included router one by one,
    on every request that reaches it)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if not for_the_protocol(scope):
            return Match.NONE, {}
        return super().matches(scope)


router = ProtocolRouter(prefix=PREFIX, tags=[TAG], route_class=GuardedRoute)


# -- inference (first: a router's routes are matched in order, and these are the hot ones) -----
HeaderLength = Annotated[
    int | None,
    Header(
        alias="Inference-Header-Content-Length",
        description="Binary tensor data extension: the length of the JSON object at the start "
        "of the body; the input's bytes follow it.",
    ),
]
INFER_DESCRIPTION = """Run the model on one input tensor of rows (`shape` `[rows, features]`;
FP64, FP32, FP16 or an integer datatype; `data` flat or one array per row) and answer the outputs
the request names (without any: `predict`, or `is_anomaly` for a detector). The outputs are the
operations' results: `predict` (labels), `predict_proba` and `classes`, `transform`,
`score_samples`, `score`, `anomaly_scores`, `is_anomaly`, `percentiles`, `bic`, `aic`; the
parameters `contamination` or `threshold` set the anomalies' threshold.

Binary tensor data extension: the input as `binary_data_size` bytes after the JSON object
(`Inference-Header-Content-Length` gives the JSON's length), outputs as binary with their
`binary_data` parameter or the request's `binary_data_output`; such an answer is
`application/octet-stream`, its JSON's length in `Inference-Header-Content-Length`."""
BINARY_CONTENT = {
    "schema": {"type": "string", "format": "binary"},
    "description": "The JSON object, then the tensors' bytes (binary tensor data extension).",
}
INFER_OK = {
    "content": {BINARY_TYPE.decode(): BINARY_CONTENT},
    "headers": {
        "Inference-Header-Content-Length": {
            "description": "With binary outputs: the length of the JSON object.",
            "schema": {"type": "integer"},
        }
    },
}


async def _infer_latest(
    name: NamePath, body: V2InferenceRequest, header_length: HeaderLength = None
) -> None:
    """Documents the latest-version route; never called (``InferRoute`` serves)."""


async def _infer_version(
    name: NamePath,
    version: VersionPath,
    body: V2InferenceRequest,
    header_length: HeaderLength = None,
) -> None:
    """Documents the named-version route; never called (``InferRoute`` serves)."""


class InferRoute(GuardedRoute):
    """The inference route: the key and scope first, the version, then the body read once by
    ``app.api.v2.wire`` (in the thread pool when large) and the answer of ``infer``. It serves
    requests by itself, without FastAPI's body parsing and validation of the documented model,
    which would build a Python object per number."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        requirement = requirement_of(self)

        async def serve(request: Request) -> Response:
            if requirement is not None:
                requirement.check(request)
            state = request.app.state
            path = request.path_params
            version = await resolve_version(
                state.registry, path["name"], path.get("version", LATEST)
            )
            call = await _call(request)
            body, headers = await infer(state.inference, version, call)
            response = Response(body)
            response.raw_headers = [
                (b"content-length", str(len(body)).encode()),
                *headers,
            ]
            return response

        return serve


async def _call(request: Request) -> InferCall:
    headers = request.headers
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported: send the body uncompressed"
        )
    raw = await receive_body(request.receive, headers.get("content-length"))
    if len(raw) >= THREAD_PARSE_MIN_BYTES:
        return await run_in_threadpool(read_request, raw, headers.get(HEADER_LENGTH))
    return read_request(raw, headers.get(HEADER_LENGTH))


for _path, _endpoint, _summary in (
    ("/models/{name}/infer", _infer_latest, "infer (latest version)"),
    ("/models/{name}/versions/{version}/infer", _infer_version, "infer (a version or alias)"),
):
    router.add_api_route(
        _path,
        _endpoint,
        methods=["POST"],
        name=_endpoint.__name__.lstrip("_"),
        summary=_summary,
        description=INFER_DESCRIPTION,
        response_model=V2InferenceResponse,
        responses={200: INFER_OK, **INFER_ERRORS},
        dependencies=[READ],
        route_class_override=InferRoute,
        openapi_extra={"requestBody": {"content": {BINARY_TYPE.decode(): BINARY_CONTENT}}},
    )


# -- health ------------------------------------------------------------------------------------
@router.get("/health/live", response_model=V2Live)
async def server_live() -> V2Live:
    """The server is alive (open, as `/healthz`)."""
    return V2Live(live=True)


@router.get(
    "/health/ready",
    response_model=V2Ready,
    responses={400: {"model": V2Ready, "description": "Not ready (the protocol's 4xx)."}},
)
async def server_ready(registry: RegistryDep) -> Response:
    """Ready when the database answers and the model store is writable (as `/readyz`; open)."""
    ready = await run_in_threadpool(registry.ping) and await run_in_threadpool(
        registry.store.is_writable
    )
    return FastJSONResponse({"ready": ready}, status_code=200 if ready else 400)


# -- metadata ----------------------------------------------------------------------------------
@router.get("", response_model=V2ServerMetadata, dependencies=[READ], responses=KEY_ERRORS)
async def server_metadata(request: Request) -> V2ServerMetadata:
    """The server: its name, version and the protocol extensions it supports."""
    return V2ServerMetadata(
        name=request.app.title.lower(), version=request.app.version, extensions=EXTENSIONS
    )


async def _model_metadata(registry: ModelRegistry, name: str, ref: str) -> V2ModelMetadata:
    version = await resolve_version(registry, name, ref)
    versions, _ = await run_in_threadpool(
        registry.list_versions, name, offset=0, limit=LISTED_VERSIONS
    )
    aliases = sorted(alias for v in versions for alias in v.aliases)
    outputs = outputs_of(version)
    return V2ModelMetadata(
        name=version.name,
        versions=[str(v.version) for v in versions] + aliases,
        platform="scikit-learn",
        inputs=[V2MetadataTensor(name=INPUT_NAME, datatype="FP64", shape=[-1, version.n_features])],
        outputs=[
            V2MetadataTensor(name=o.name, datatype=o.datatype, shape=metadata_shape(o, version))
            for o in outputs
        ],
        parameters={
            "version": str(version.version),
            "algorithm": version.algorithm,
            "default_output": default_output(version).name,
        },
    )


@router.get(
    "/models/{name}", response_model=V2ModelMetadata, dependencies=[READ], responses=MODEL_ERRORS
)
async def model_metadata(name: NamePath, registry: RegistryDep) -> V2ModelMetadata:
    """The model's latest version: its input (rows of `n_features`), its outputs (those of the
    operations its algorithm supports) and every version and alias that can be asked for."""
    return await _model_metadata(registry, name, LATEST)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=V2ModelMetadata,
    dependencies=[READ],
    responses=MODEL_ERRORS,
)
async def version_metadata(
    name: NamePath, version: VersionPath, registry: RegistryDep
) -> V2ModelMetadata:
    """A version (a number, an alias or `latest`), as the model's metadata describes it."""
    return await _model_metadata(registry, name, version)


@router.get(
    "/models/{name}/ready", response_model=V2ModelReady, dependencies=[READ], responses=MODEL_ERRORS
)
async def model_ready(name: NamePath, registry: RegistryDep) -> V2ModelReady:
    """The model's latest version can be served (404 when there is none)."""
    await resolve_version(registry, name, LATEST)
    return V2ModelReady(name=name, ready=True)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=V2ModelReady,
    dependencies=[READ],
    responses=MODEL_ERRORS,
)
async def version_ready(
    name: NamePath, version: VersionPath, registry: RegistryDep
) -> V2ModelReady:
    """The version (a number, an alias or `latest`) can be served (404 when it does not
    exist)."""
    await resolve_version(registry, name, version)
    return V2ModelReady(name=name, ready=True)
