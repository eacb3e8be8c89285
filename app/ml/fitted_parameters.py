"""What a fitted model learnt, as plain JSON-ready values: the parameters document's content."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.cluster import AffinityPropagation, Birch
from sklearn.pipeline import Pipeline

from app.ml.dbscan_knn import DBSCANKNN
from app.ml.inductive import NOISE, InductiveClusterer
from app.ml.inductive_clusterers import HDBSCANKNN


def estimator_parameters(
    est: BaseEstimator,
    preprocessor: Pipeline | None,
    family: str,
    *,
    core_sample_indices: bool = False,
) -> dict[str, Any]:
    """The estimator's fitted parameters; DBSCAN's core sample indices with
    ``core_sample_indices`` only (there is one per core sample: up to every training row)."""
    if isinstance(est, InductiveClusterer):
        return _inductive_parameters(est, core_sample_indices=core_sample_indices)
    if isinstance(est, Birch):
        return _birch_parameters(est, preprocessor)
    if hasattr(est, "cluster_centers_"):
        return _centroid_parameters(est, preprocessor)
    if hasattr(est, "means_"):
        return _mixture_parameters(est, preprocessor)
    if family == "anomaly":
        return detector_parameters(est)
    return {}


def _inductive_parameters(est: InductiveClusterer, *, core_sample_indices: bool) -> dict[str, Any]:
    clusters = est.classes_[est.classes_ != NOISE]
    out: dict[str, Any] = {
        "n_clusters": len(clusters),
        # The columns of predict_proba: -1 (noise) first.
        "classes": est.classes_.tolist(),
        "n_anchors": len(est.anchor_indices_),
        "max_distance": est.max_distance_,
        "n_neighbors": est.n_neighbors_,
    }
    if isinstance(est, DBSCANKNN):
        out |= {"n_core_samples": len(est.core_sample_indices_), "eps": float(est.eps)}
        if core_sample_indices:
            out["core_sample_indices"] = est.core_sample_indices_.tolist()
    if isinstance(est, HDBSCANKNN):
        out["mean_probability"] = float(np.mean(est.probabilities_))
    return out


def _in_input_space(preprocessor: Pipeline | None, key: str, points: np.ndarray) -> dict[str, Any]:
    if preprocessor is None:
        return {}
    return {f"{key}_input_space": preprocessor.inverse_transform(points).tolist()}


def _centroid_parameters(est: Any, preprocessor: Pipeline | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n_clusters": len(est.cluster_centers_),
        "cluster_centers": est.cluster_centers_.tolist(),
    }
    if isinstance(est, AffinityPropagation):
        out["cluster_centers_indices"] = est.cluster_centers_indices_.tolist()
    return out | _in_input_space(preprocessor, "cluster_centers", est.cluster_centers_)


def _birch_parameters(est: Birch, preprocessor: Pipeline | None) -> dict[str, Any]:
    """BIRCH predicts by the nearest subcluster: its centres are the columns of transform."""
    centers = est.subcluster_centers_
    return {
        "n_clusters": len(np.unique(est.subcluster_labels_)),
        "n_subclusters": len(centers),
        "subcluster_centers": centers.tolist(),
        "subcluster_labels": est.subcluster_labels_.tolist(),
    } | _in_input_space(preprocessor, "subcluster_centers", centers)


def _mixture_parameters(est: Any, preprocessor: Pipeline | None) -> dict[str, Any]:
    return {
        "n_components": len(est.weights_),
        "covariance_type": est.covariance_type,
        "weights": est.weights_.tolist(),
        "means": est.means_.tolist(),
        "covariances": est.covariances_.tolist(),
    } | _in_input_space(preprocessor, "means", est.means_)


def detector_parameters(est: BaseEstimator) -> dict[str, Any]:
    """What each detector learnt, in a size that stays small whatever the training set."""
    if hasattr(est, "support_vectors_"):
        return {"n_support_vectors": len(est.support_vectors_), "offset": float(est.offset_[0])}
    if hasattr(est, "estimators_"):
        return {"n_estimators": len(est.estimators_), "max_samples": int(est.max_samples_)}
    if hasattr(est, "n_samples_fit_"):
        return {"n_neighbors": int(est.n_neighbors_), "n_samples_fit": int(est.n_samples_fit_)}
    if hasattr(est, "location_"):
        return {"location": est.location_.tolist(), "covariance": est.covariance_.tolist()}
    if hasattr(est, "pca_"):
        return {
            "n_components": est.n_components_,
            "components": est.pca_.components_.tolist(),
            "mean": est.pca_.mean_.tolist(),
            "explained_variance_ratio": est.pca_.explained_variance_ratio_.tolist(),
        }
    return {}


def preprocessing_parameters(preprocessor: Pipeline | None) -> list[dict[str, Any]]:
    if preprocessor is None:
        return []
    steps = []
    for name, step in preprocessor.steps:
        entry: dict[str, Any] = {"step": name.split("_", 1)[1]}
        for attr in ("mean_", "scale_", "components_", "explained_variance_ratio_"):
            value = getattr(step, attr, None)
            if value is not None:
                entry[attr.rstrip("_")] = np.asarray(value).tolist()
        if hasattr(step, "n_components_"):
            entry["n_components"] = int(step.n_components_)
        steps.append(entry)
    return steps
