"""Model selection: expand a hyperparameter grid, score each candidate, find the elbow and the
best candidate by each criterion, and the data of silhouette diagrams."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import silhouette_samples

from app.ml.catalog import Algorithm
from app.ml.cluster_separation import SILHOUETTE_SAMPLE_SIZE
from app.ml.exceptions import HyperparameterError
from app.ml.fitting import FitResult, fit_model, plain

# Per algorithm: which metric ranks candidates under each criterion, and in which direction.
CRITERIA: dict[str, dict[str, str]] = {
    "kmeans": {
        "silhouette": "max",
        "davies_bouldin": "min",
        "calinski_harabasz": "max",
        "inertia": "elbow",
    },
    "gaussian_mixture": {"bic": "min", "aic": "min", "log_likelihood": "max"},
    "bayesian_gaussian_mixture": {"lower_bound": "max", "log_likelihood": "max"},
}
CRITERIA["minibatch_kmeans"] = CRITERIA["kmeans"]
SELECTABLE = tuple(CRITERIA)


@dataclass(frozen=True)
class Candidate:
    index: int
    params: dict[str, Any]  # the grid's values for this candidate only


def expand_grid(
    algorithm: Algorithm, grid: dict[str, list[Any] | dict[str, int]]
) -> list[Candidate]:
    """Every combination of the grid's values; ``{"min": a, "max": b, "step": s}`` is a range
    of integers (``step`` defaults to 1)."""
    if not grid:
        raise HyperparameterError("grid", "the grid is empty: give at least one parameter")
    names: list[str] = []
    value_lists: list[list[Any] | range] = []
    for name, values in grid.items():
        options: list[Any] | range
        if isinstance(values, dict):
            low, high, step = values["min"], values["max"], values.get("step", 1)
            if low > high or step < 1:
                raise HyperparameterError(f"grid.{name}", f"empty range for {name}: {values}")
            options = range(low, high + 1, step)  # lazy until every entry is checked
        else:
            options = values
        if not options:
            raise HyperparameterError(f"grid.{name}", f"no values for {name}")
        names.append(name)
        value_lists.append(options)
    return [
        Candidate(index, dict(zip(names, combination, strict=True)))
        for index, combination in enumerate(itertools.product(*value_lists))
    ]


def grid_size(grid: dict[str, list[Any] | dict[str, int]]) -> int:
    """How many candidates ``expand_grid`` would make, counted without making them: a range of
    a billion values must be refused before it is expanded into memory."""
    size = 1
    for values in grid.values():
        if isinstance(values, dict):
            low, high, step = values["min"], values["max"], values.get("step", 1)
            size *= max(0, (high - low) // step + 1) if step >= 1 else 0
        else:
            size *= len(values)
    return size


def silhouette_diagram(
    Xt: np.ndarray, labels: np.ndarray, *, sample_size: int = SILHOUETTE_SAMPLE_SIZE
) -> dict[str, Any] | None:
    """Per cluster, its size and its members' silhouette coefficients sorted from high to low:
    what a silhouette diagram draws. Above ``sample_size`` rows, on a seeded sample."""
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return None
    sampled = len(labels) > sample_size
    if sampled:
        rows = np.random.RandomState(0).choice(len(labels), sample_size, replace=False)
        Xt, labels = Xt[rows], labels[rows]
    coefficients = silhouette_samples(Xt, labels)
    clusters = [
        {
            "cluster": int(cluster),
            "size": int(np.sum(labels == cluster)),
            "coefficients": np.sort(coefficients[labels == cluster])[::-1].tolist(),
        }
        for cluster in np.unique(labels)
    ]
    return {
        "mean": float(coefficients.mean()),
        "clusters": clusters,
        "sampled": sampled,
        "sample_size": len(labels),
    }


def evaluate_candidate(
    *,
    algorithm: Algorithm,
    params: dict[str, Any],
    preprocessing: list[dict[str, Any]],
    X: np.ndarray,
    feature_names: list[str] | None,
    contamination: float,
    diagram: bool,
) -> tuple[FitResult, dict[str, Any] | None]:
    """Fit one candidate; with ``diagram``, the data of its silhouette diagram too."""
    result = fit_model(
        algorithm=algorithm,
        params=params,
        preprocessing=preprocessing,
        X=X,
        feature_names=feature_names,
        contamination=contamination,
    )
    silhouettes = None
    if diagram:
        model = result.model
        Xt = model.model_space(X)
        silhouettes = silhouette_diagram(Xt, model.estimator.predict(Xt))
    return result, silhouettes


def elbow(ks: list[float], inertias: list[float]) -> float | None:
    """The elbow of a decreasing curve: the point farthest from the straight line joining its
    ends (both axes scaled to [0, 1])."""
    if len(ks) < 3:
        return None
    x = np.asarray(ks, dtype=float)
    y = np.asarray(inertias, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    x = (x - x[0]) / (x[-1] - x[0]) if x[-1] != x[0] else x * 0
    span = y.max() - y.min()
    y = (y - y.min()) / span if span else y * 0
    # Distance of each point to the chord from the first to the last point.
    chord = np.array([x[-1] - x[0], y[-1] - y[0]])
    norm = np.hypot(*chord)
    if norm == 0:
        return None
    distances = np.abs(chord[0] * (y[0] - y) - chord[1] * (x[0] - x)) / norm
    return float(np.asarray(ks, dtype=float)[order][int(np.argmax(distances))])


def _best_by_criterion(
    criteria: dict[str, str], candidates: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per criterion to minimise or maximise, the best candidate (the elbow is not one)."""
    best: dict[str, Any] = {}
    for criterion, direction in criteria.items():
        scored = [c for c in candidates if c["metrics"].get(criterion) is not None]
        if not scored or direction == "elbow":
            continue
        pick = min if direction == "min" else max
        chosen = pick(scored, key=lambda c: c["metrics"][criterion])
        best[criterion] = {
            "index": chosen["index"],
            "params": chosen["params"],
            "value": chosen["metrics"][criterion],
        }
    return best


def _elbow_of(
    key: str, varying: list[str], anchor: dict[str, Any], candidates: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The candidate at the elbow of the inertia curve over ``key`` (the other grid values
    fixed at ``anchor``'s), or None when the curve has none."""
    others = [v for v in varying if v != key]
    curve = [
        c
        for c in candidates
        if all(c["params"].get(o) == anchor.get(o) for o in others)
        and c["metrics"].get("inertia") is not None
    ]
    k_at_elbow = elbow([c["params"][key] for c in curve], [c["metrics"]["inertia"] for c in curve])
    if k_at_elbow is None:
        return None
    chosen: dict[str, Any] = next(c for c in curve if c["params"][key] == k_at_elbow)
    return chosen


def summarize(
    algorithm: Algorithm, candidates: list[dict[str, Any]], varying: list[str]
) -> dict[str, Any]:
    """The best candidate under each criterion, and for k-means the elbow of the inertia
    curve (over the number of clusters, the other grid values fixed at the best silhouette's)."""
    criteria = CRITERIA[algorithm.name]
    best = _best_by_criterion(criteria, candidates)
    out: dict[str, Any] = {"best": best, "criteria": criteria}
    key = algorithm.n_clusters_param
    if "inertia" in criteria and key is not None and key in varying:
        anchor = best.get("silhouette", {}).get("params", candidates[0]["params"])
        chosen = _elbow_of(key, varying, anchor, candidates)
        if chosen is not None:
            out["elbow"] = {key: int(chosen["params"][key]), "index": chosen["index"]}
            best["inertia"] = {
                "index": chosen["index"],
                "params": chosen["params"],
                "value": chosen["metrics"]["inertia"],
                "rule": "elbow of the inertia curve",
            }
    summary: dict[str, Any] = plain(out)
    return summary
