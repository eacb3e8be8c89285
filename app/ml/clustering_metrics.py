"""The training metrics of the clustering family: what every clusterer found (clusters, noise,
sizes), how well separated its clusters are, and what each algorithm says of its own fit."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import AffinityPropagation, Birch, MeanShift

from app.ml.cluster_separation import separation_metrics
from app.ml.dbscan_knn import DBSCANKNN
from app.ml.inductive import NOISE
from app.ml.inductive_clusterers import HDBSCANKNN, AgglomerativeKNN


def cluster_sizes(labels: np.ndarray, n_clusters: int) -> list[int]:
    sizes: list[int] = np.bincount(labels[labels >= 0], minlength=n_clusters).tolist()
    return sizes


def cluster_counts(labels: np.ndarray, n_clusters: int | None = None) -> dict[str, Any]:
    """How many clusters the labels hold, how many rows are noise (``-1``), and each
    cluster's size (``n_clusters`` of them, when the model has that many, empty or not)."""
    found = len(np.unique(labels[labels != NOISE]))
    return {
        "n_clusters": found,
        "n_noise": int(np.sum(labels == NOISE)),
        "cluster_sizes": cluster_sizes(labels, found if n_clusters is None else n_clusters),
    }


def clustering_metrics(est: Any, Xt: np.ndarray) -> dict[str, Any]:
    """Metrics of a fitted clusterer on the rows it was fitted on (model space)."""
    if isinstance(est, DBSCANKNN):
        labels = est.labels_
        counts = cluster_counts(labels)
        return {
            "n_clusters": counts["n_clusters"],
            "n_core_samples": len(est.core_sample_indices_),
            "n_noise": counts["n_noise"],
            "noise_ratio": float(np.mean(labels == NOISE)),
            "cluster_sizes": counts["cluster_sizes"],
        }
    if hasattr(est, "inertia_"):  # k-means
        kept = getattr(est, "labels_", None)
        labels = est.predict(Xt) if kept is None else kept
        return {
            "inertia": float(est.inertia_),
            **separation_metrics(Xt, labels),
            "n_iter": int(est.n_iter_),
            **cluster_counts(labels, len(est.cluster_centers_)),
        }
    labels = est.labels_
    clustered = labels != NOISE
    # Noise is no cluster: the separation is the clustered rows'.
    separation = separation_metrics(np.ascontiguousarray(Xt[clustered]), labels[clustered])
    return {**separation, **cluster_counts(labels), **_own_metrics(est)}


def _own_metrics(est: Any) -> dict[str, Any]:
    """What each algorithm reports of its own fit."""
    if isinstance(est, Birch):
        return {"n_subclusters": len(est.subcluster_centers_)}
    if isinstance(est, MeanShift):
        return {"n_iter": int(est.n_iter_)}
    if isinstance(est, AffinityPropagation):
        # A fit that did not converge is refused (app.ml.fitting): this one did.
        return {"n_iter": int(est.n_iter_), "converged": True}
    if isinstance(est, AgglomerativeKNN):
        return {
            "n_leaves": est.n_leaves_,
            "n_connected_components": est.n_connected_components_,
        }
    if isinstance(est, HDBSCANKNN):
        return {
            "noise_ratio": float(np.mean(est.labels_ == NOISE)),
            "mean_probability": float(np.mean(est.probabilities_)),
        }
    return {}
