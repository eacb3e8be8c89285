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
from app.ml.inductive import NOISE

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
# The clusterers with no inertia: their grid (BIRCH's threshold, HDBSCAN's min_cluster_size,
# agglomerative's n_clusters) is judged by the separation of the clusters it finds.
for _name in ("birch", "agglomerative", "hdbscan"):
    CRITERIA[_name] = {"silhouette": "max", "davies_bouldin": "min", "calinski_harabasz": "max"}
SELECTABLE = tuple(CRITERIA)
ELBOW_METHOD = (
    "slope ratio: the k where the fall of the inertia curve slows the most, the slope into k "
    "over the slope out of it (the chapter's reading: the inertia drops fast up to k, then "
    "much more slowly)"
)


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
        labels = model.training_labels
        if labels is None:
            labels = model.estimator.predict(Xt)
        clustered = labels != NOISE  # noise is no cluster of the diagram
        silhouettes = silhouette_diagram(np.ascontiguousarray(Xt[clustered]), labels[clustered])
    return result, silhouettes


def elbow_curve(ks: list[float], inertias: list[float]) -> dict[str, Any] | None:
    """The elbow of a decreasing curve, and the curve it was read from (sorted by k).

    Per inner point, the slope ratio: how fast the curve falls into k (per unit of k) over how
    fast it falls out of it; the elbow is the k of the largest. The ratio only looks at a point
    and its two neighbours, so the elbow does not move with where the grid starts or ends (a
    chord or a rescaling to the unit square, as Kneedle does, moves it: on the chapter's five
    blobs, k = 1..9 gave 3 and 2..9 gave 4). ``slope_ratio`` is null at both ends and where the
    ratio is not a number: where the curve does not fall into k (no elbow there), or does not
    fall out of it (the curve stops falling: the strongest elbow, taken first). None for fewer
    than 3 points."""
    if len(ks) < 3:
        return None
    order = np.argsort(np.asarray(ks, dtype=float), kind="stable")
    x = np.asarray(ks, dtype=float)[order]
    y = np.asarray(inertias, dtype=float)[order]
    slopes = -np.diff(y) / np.diff(x)
    ratios: list[float | None] = [None] * len(x)
    best, best_ratio = None, -np.inf
    for i in range(1, len(x) - 1):
        into, out_of = slopes[i - 1], slopes[i]
        if not into > 0:
            continue
        ratio = into / out_of if out_of > 0 else np.inf
        ratios[i] = float(ratio) if np.isfinite(ratio) else None
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    if best is None:
        return None
    return {
        "elbow": float(x[best]),
        "k": x.tolist(),
        "inertia": y.tolist(),
        "slope_ratio": ratios,
    }


def elbow(ks: list[float], inertias: list[float]) -> float | None:
    """The k at the elbow of a decreasing curve (see ``elbow_curve``), or None."""
    curve = elbow_curve(ks, inertias)
    return None if curve is None else float(curve["elbow"])


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
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The candidate at the elbow of the inertia curve over ``key`` (the other grid values
    fixed at ``anchor``'s) and the report's ``elbow``: the k, the method and the curve it was
    read from; None when the curve has none."""
    others = [v for v in varying if v != key]
    curve = [
        c
        for c in candidates
        if all(c["params"].get(o) == anchor.get(o) for o in others)
        and c["metrics"].get("inertia") is not None
    ]
    found = elbow_curve([c["params"][key] for c in curve], [c["metrics"]["inertia"] for c in curve])
    if found is None:
        return None
    chosen = next(c for c in curve if c["params"][key] == found["elbow"])
    report = {
        key: int(chosen["params"][key]),
        "index": chosen["index"],
        "method": ELBOW_METHOD,
        "curve": {
            key: [int(k) for k in found["k"]],
            "inertia": found["inertia"],
            "slope_ratio": found["slope_ratio"],
        },
    }
    return chosen, report


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
        found = _elbow_of(key, varying, anchor, candidates)
        if found is not None:
            chosen, out["elbow"] = found
            best["inertia"] = {
                "index": chosen["index"],
                "params": chosen["params"],
                "value": chosen["metrics"]["inertia"],
                "rule": "elbow of the inertia curve",
            }
    summary: dict[str, Any] = plain(out)
    return summary
