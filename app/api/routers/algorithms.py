"""Algorithms router: the catalog."""

from typing import Any

from fastapi import APIRouter, Path

from app.api.auth import READ, GuardedRoute
from app.api.schemas import AlgorithmOut, Problem
from app.errors import AlgorithmNotFound
from app.ml.catalog import ALGORITHMS, EXAMPLE_ROWS, Algorithm

router = APIRouter(
    prefix="/v1/algorithms", tags=["algorithms"], route_class=GuardedRoute, dependencies=[READ]
)


def _example(algorithm: Algorithm) -> dict[str, Any]:
    """A training request that runs as it is (`POST /v1/models`)."""
    return {
        "name": f"{algorithm.name.replace('_', '-')}-example",
        "algorithm": algorithm.name,
        "params": algorithm.example_params,
        "data": {"instances": EXAMPLE_ROWS},
    }


def _out(algorithm: Algorithm) -> AlgorithmOut:
    return AlgorithmOut(
        name=algorithm.name,
        family=algorithm.family,
        wraps=algorithm.wraps,
        summary=algorithm.summary,
        operations=list(algorithm.operations),
        params_schema=algorithm.params_schema,
        max_training_rows=algorithm.max_training_rows,
        max_training_rows_reason=algorithm.row_limit_reason or None,
        example=_example(algorithm),
    )


@router.get("", response_model=list[AlgorithmOut])
async def list_algorithms() -> list[AlgorithmOut]:
    """Every algorithm Lloyd trains, its operations and the JSON Schema of its hyperparameters."""
    return [_out(a) for a in ALGORITHMS.values()]


@router.get(
    "/{name}",
    response_model=AlgorithmOut,
    responses={404: {"model": Problem, "description": "No such algorithm."}},
)
async def get_algorithm(
    name: str = Path(description="Algorithm name.", examples=["kmeans"]),
) -> AlgorithmOut:
    """One algorithm of the catalog."""
    algorithm = ALGORITHMS.get(name)
    if algorithm is None:
        raise AlgorithmNotFound(f"no algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    return _out(algorithm)
