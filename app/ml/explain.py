"""Why a row is unusual: per-feature contributions to its anomaly score.

Exact decompositions where the score has one and the preprocessing maps each model feature to
one original feature (none, or standard scaling):

- k-means, mean-shift, affinity propagation, BIRCH: the squared difference to the nearest
  centroid (exemplar, subcluster centre), per feature; the terms sum to the squared distance
  (the anomaly score squared).
- Gaussian mixtures: the per-feature terms ``d_i * (P d)_i`` of the squared Mahalanobis
  distance to the most responsible component (``d`` the difference to its mean, ``P`` its
  precision matrix); the terms sum to the squared distance. With full or tied covariances a
  term can be negative (a feature that correlates against the others).
- PCA reconstruction: the per-feature squared reconstruction error; the terms sum to the
  anomaly score.
- DBSCAN, agglomerative, spectral and HDBSCAN with the euclidean metric: the squared difference
  to the nearest anchor (DBSCAN's core sample, the others' clustered training row).

Every other case (the detectors whose score has no per-feature form, or a PCA in the
preprocessing) uses median substitution: a feature's contribution is how much the anomaly score
drops when that feature alone is set to its training median. It needs one extra scoring pass
per feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.preprocessing import StandardScaler

from app.ml.cluster_centers import center_distances, centers_of
from app.ml.inductive import InductiveClusterer
from app.ml.model import FittedModel
from app.ml.pca_reconstruction import PCAReconstruction

DEFAULT_TOP_FEATURES = 5


@dataclass(frozen=True)
class Explanation:
    method: str  # "exact" or "median_substitution"
    decomposes: str  # the quantity the terms add up to (exact) or are changes of
    terms: np.ndarray  # rows x original features


def _feature_wise(model: FittedModel) -> bool:
    if model.preprocessor is None:
        return True
    return all(isinstance(step, StandardScaler) for _, step in model.preprocessor.steps)


def _mahalanobis_terms(est: Any, Xt: np.ndarray) -> np.ndarray:
    component: NDArray[np.intp] = est.predict(Xt)
    means: NDArray[np.float64] = est.means_
    precisions: NDArray[np.float64] = est.precisions_
    diff: NDArray[np.float64] = Xt - means[component]
    if est.covariance_type == "full":
        precise_diff: NDArray[np.float64] = np.einsum("nij,nj->ni", precisions[component], diff)
        return diff * precise_diff
    if est.covariance_type == "tied":
        return diff * (diff @ precisions.T)
    if est.covariance_type == "diag":
        return diff**2 * precisions[component]
    return diff**2 * precisions[component][:, None]  # spherical


def _anchor_terms(est: InductiveClusterer, Xt: np.ndarray) -> Explanation | None:
    metric, p = est.distance_metric()
    if metric not in ("euclidean", "l2") and not (metric == "minkowski" and p == 2):
        return None
    _, index = est.knn_.kneighbors(Xt, n_neighbors=1)
    terms = (Xt - est.anchors_[index[:, 0]]) ** 2
    what = "core sample" if hasattr(est, "core_sample_indices_") else "clustered training row"
    return Explanation("exact", f"squared distance to the nearest {what}", terms)


def exact_terms(model: FittedModel, X: np.ndarray) -> Explanation | None:
    """The exact decomposition, or None where the model has none."""
    if not _feature_wise(model):
        return None
    est = model.estimator
    Xt = model.model_space(X)
    if isinstance(est, PCAReconstruction):
        return Explanation("exact", "squared reconstruction error", est.reconstruction_errors(Xt))
    if isinstance(est, InductiveClusterer):
        return _anchor_terms(est, Xt)
    centers = centers_of(est)
    if centers is not None:
        nearest = center_distances(est, Xt).argmin(axis=1)
        terms = (Xt - centers[nearest]) ** 2
        return Explanation("exact", "squared distance to the nearest centroid", terms)
    if model.family == "mixture":
        return Explanation(
            "exact",
            "squared Mahalanobis distance to the most responsible component",
            _mahalanobis_terms(est, Xt),
        )
    return None


def median_substitution_terms(model: FittedModel, X: np.ndarray) -> Explanation:
    """Per feature, the anomaly score minus the score with that feature at its training median."""
    if model.training_medians is None:
        raise ValueError("this model was stored without training medians")
    base = model.anomaly_scores(X)
    terms = np.empty_like(X, dtype=np.float64)
    substituted = X.copy()
    for j in range(X.shape[1]):
        substituted[:, j] = model.training_medians[j]
        terms[:, j] = base - model.anomaly_scores(substituted)
        substituted[:, j] = X[:, j]
    return Explanation("median_substitution", "drop in anomaly score at the median", terms)


def explain(model: FittedModel, X: np.ndarray) -> Explanation:
    return exact_terms(model, X) or median_substitution_terms(model, X)


def top_contributions(
    explanation: Explanation,
    X: np.ndarray,
    *,
    feature_names: list[str] | None,
    top: int,
) -> list[list[dict[str, Any]]]:
    """Per row, the ``top`` features by contribution, largest first.

    ``share`` is the term over the sum of the row's terms (exact: the shares sum to 1) or over
    the sum of their absolute values (median substitution)."""
    terms = explanation.terms
    exact = explanation.method == "exact"
    totals = terms.sum(axis=1) if exact else np.abs(terms).sum(axis=1)
    order = np.argsort(-terms, axis=1, kind="stable")[:, :top]
    rows = []
    for i in range(len(terms)):
        total = totals[i]
        rows.append(
            [
                {
                    "feature": feature_names[j] if feature_names else int(j),
                    "value": float(X[i, j]),
                    "contribution": float(terms[i, j]),
                    "share": float(terms[i, j] / total) if total else 0.0,
                }
                for j in order[i]
            ]
        )
    return rows
