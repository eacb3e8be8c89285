"""What scikit-learn answers when called directly: the numbers every API result must equal."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.testing import assert_allclose
from sklearn.base import BaseEstimator
from sklearn.cluster import (
    DBSCAN,
    HDBSCAN,
    AffinityPropagation,
    AgglomerativeClustering,
    Birch,
    KMeans,
    MeanShift,
    MiniBatchKMeans,
    SpectralClustering,
)
from sklearn.decomposition import PCA
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    pairwise_distances,
    silhouette_score,
)
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from app.ml.dbscan_knn import DBSCANKNN
from app.ml.inductive_clusterers import HDBSCANKNN, AgglomerativeKNN, SpectralKNN
from tests.api.contract import INDUCTIVE, Case

RTOL = 1e-9
ESTIMATORS: dict[str, type[BaseEstimator]] = {
    "kmeans": KMeans,
    "minibatch_kmeans": MiniBatchKMeans,
    "dbscan": DBSCANKNN,
    "gaussian_mixture": GaussianMixture,
    "bayesian_gaussian_mixture": BayesianGaussianMixture,
    "birch": Birch,
    "mean_shift": MeanShift,
    "affinity_propagation": AffinityPropagation,
    "agglomerative": AgglomerativeKNN,
    "spectral": SpectralKNN,
    "hdbscan": HDBSCANKNN,
}
# What the inductive clusterers run: scikit-learn's own, called here directly.
CLUSTERERS: dict[str, Any] = {
    "dbscan": DBSCAN,
    "agglomerative": AgglomerativeClustering,
    "spectral": SpectralClustering,
    "hdbscan": lambda **p: HDBSCAN(copy=True, **p),
}
STEPS = {"standard_scaler": StandardScaler, "pca": PCA}


def pipeline_of(case: Case) -> Pipeline:
    """The scikit-learn Pipeline the request describes: its preprocessing, then the estimator."""
    steps: list[tuple[str, BaseEstimator]] = []
    for index, spec in enumerate(case.preprocessing):
        options = {k: v for k, v in spec.items() if k != "step"}
        steps.append((f"{index}_{spec['step']}", STEPS[spec["step"]](**options)))
    steps.append(("estimator", ESTIMATORS[case.algorithm](**case.params)))
    return Pipeline(steps)


@dataclass
class Reference:
    """``case`` fitted by scikit-learn itself, and what each operation should answer."""

    case: Case
    pipeline: Pipeline

    @classmethod
    def fit(cls, case: Case) -> Reference:
        return cls(case, pipeline_of(case).fit(case.X))

    @property
    def estimator(self) -> Any:
        return self.pipeline[-1]

    @property
    def preprocessor(self) -> Pipeline | None:
        return self.pipeline[:-1] if len(self.pipeline) > 1 else None

    def model_space(self, X: np.ndarray) -> np.ndarray:
        return self.preprocessor.transform(X) if self.preprocessor is not None else X

    @property
    def training_model_space(self) -> np.ndarray:
        return self.model_space(self.case.X)

    # -- the inductive clusterers, by hand ------------------------------------------------------
    @property
    def inductive(self) -> bool:
        return self.case.algorithm in INDUCTIVE

    def sklearn_clusterer(self) -> BaseEstimator:
        """scikit-learn's own clusterer, fitted on the training rows in model space."""
        params = {k: v for k, v in self.case.params.items() if k not in ("knn_neighbors",)}
        return CLUSTERERS[self.case.algorithm](**params).fit(self.training_model_space)

    @property
    def anchor_rows(self) -> np.ndarray:
        """DBSCAN's core samples; the other clusterers' clustered rows."""
        clusterer = self.sklearn_clusterer()
        if isinstance(clusterer, DBSCAN):
            return clusterer.core_sample_indices_
        return np.flatnonzero(clusterer.labels_ != -1)

    def _anchor_distances(self, Xt: np.ndarray) -> np.ndarray:
        # Directly, not by the |x|^2 - 2xy + |y|^2 trick: an anchor is at exactly 0 of itself.
        anchors = self.training_model_space[self.anchor_rows]
        differences = Xt[:, np.newaxis, :] - anchors[np.newaxis, :, :]
        return np.sqrt((differences**2).sum(axis=2))

    @property
    def max_distance(self) -> float:
        """Where noise begins: eps for DBSCAN; else the largest distance from an anchor to its
        nearest other anchor."""
        if self.case.algorithm == "dbscan":
            return float(self.case.params.get("eps", 0.5))
        distances = self._anchor_distances(self.training_model_space[self.anchor_rows])
        np.fill_diagonal(distances, np.inf)
        return float(distances.min(axis=1).max())

    def _vote(self, Xt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The classifier's labels, vote shares and classes, and which rows are noise."""
        anchors = self.anchor_rows
        labels = self.sklearn_clusterer().labels_
        knn = KNeighborsClassifier(n_neighbors=min(5, len(anchors)))
        knn.fit(self.training_model_space[anchors], labels[anchors])
        noise = self._anchor_distances(Xt).min(axis=1) > self.max_distance
        return np.where(noise, -1, knn.predict(Xt)), knn.predict_proba(Xt), knn.classes_

    # -- anomalies ------------------------------------------------------------------------------
    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        """Higher is more anomalous, computed from the fitted attributes."""
        est, Xt = self.estimator, self.model_space(X)
        if self.inductive:
            return self._anchor_distances(Xt).min(axis=1)
        if isinstance(est, Birch):
            return pairwise_distances(Xt, est.subcluster_centers_).min(axis=1)
        if hasattr(est, "cluster_centers_"):
            return pairwise_distances(Xt, est.cluster_centers_).min(axis=1)
        return -est.score_samples(Xt)

    @property
    def training_scores(self) -> np.ndarray:
        """What the stored threshold and the percentiles are drawn from: for an inductive
        clusterer, each training row scored with itself left out of the anchors."""
        if not self.inductive:
            return self.anomaly_scores(self.case.X)
        distances = self._anchor_distances(self.training_model_space)
        anchors = self.anchor_rows
        distances[anchors, np.arange(len(anchors))] = np.inf
        return distances.min(axis=1)

    def stored_threshold(self, contamination: float) -> float:
        if self.inductive:
            return self.max_distance
        return float(np.quantile(self.training_scores, 1.0 - contamination))

    def stored_contamination(self, contamination: float) -> float:
        if self.inductive:
            return float(np.mean(self.training_scores > self.max_distance))
        return contamination

    def anomalies(
        self,
        X: np.ndarray,
        *,
        stored_contamination: float,
        contamination: float | None = None,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        train = self.training_scores
        if threshold is not None:
            source, used_contamination = "threshold", None
        elif contamination is not None:
            source, used_contamination = "contamination", contamination
            threshold = float(np.quantile(train, 1.0 - contamination))
        else:
            source = "stored"
            used_contamination = self.stored_contamination(stored_contamination)
            threshold = self.stored_threshold(stored_contamination)
        scores = self.anomaly_scores(X)
        return {
            "anomaly_scores": scores,
            "is_anomaly": scores > threshold,
            "percentiles": np.array([100.0 * np.mean(train < s) for s in scores]),
            "threshold": threshold,
            "threshold_source": source,
            "contamination": used_contamination,
            "score_direction": "higher is more anomalous",
        }

    # -- operations -----------------------------------------------------------------------------
    def answer(
        self, operation: str, body: dict[str, Any] | None, *, stored_contamination: float
    ) -> dict[str, Any]:
        """The response fields of ``operation`` with ``body``, as scikit-learn computes them."""
        est = self.estimator
        if operation == "sample":
            body = body or {}
            drawn = copy.deepcopy(est).set_params(random_state=body.get("random_state"))
            X, components = drawn.sample(body.get("n_samples", 1))
            if self.preprocessor is not None:
                X = self.preprocessor.inverse_transform(X)
            return {"instances": X, "components": components}
        if body is None:  # bic / aic with no body: the training set
            Xt = self.training_model_space
            return {operation: getattr(est, operation)(Xt), "n_samples": len(Xt)}
        X = np.asarray(body["instances"], dtype=np.float64)
        Xt = self.model_space(X)
        if operation == "predict" and self.inductive:
            return {"labels": self._vote(Xt)[0]}
        if operation == "predict":
            return {"labels": est.predict(Xt)}
        if operation == "predict_proba" and self.inductive:
            labels, votes, classes = self._vote(Xt)
            noise = labels == -1
            proba = np.column_stack([noise, np.where(noise[:, None], 0.0, votes)])
            return {"probabilities": proba, "classes": np.r_[-1, classes]}
        if operation == "predict_proba":
            classes = getattr(est, "classes_", np.arange(len(getattr(est, "weights_", []))))
            return {"probabilities": est.predict_proba(Xt), "classes": classes}
        if operation == "transform":
            return {"distances": est.transform(Xt)}
        if operation == "score_samples":
            return {"scores": est.score_samples(Xt)}
        if operation == "score":
            return {"score": est.score(Xt), "n_samples": len(X)}
        if operation in ("bic", "aic"):
            return {operation: getattr(est, operation)(Xt), "n_samples": len(X)}
        if operation == "anomalies":
            return self.anomalies(
                X,
                stored_contamination=stored_contamination,
                contamination=body.get("contamination"),
                threshold=body.get("threshold"),
            )
        raise AssertionError(f"no reference for {operation}")

    # -- training metrics -----------------------------------------------------------------------
    @property
    def estimator_family(self) -> str:
        mixtures = ("gaussian_mixture", "bayesian_gaussian_mixture")
        return "mixture" if self.case.algorithm in mixtures else "clustering"

    def clusterer_metrics(self) -> dict[str, Any]:
        """The new clusterers: their clusters and noise, the separation of the clustered
        rows, and what each says of its own fit."""
        Xt = self.training_model_space
        clusterer = self.sklearn_clusterer() if self.inductive else self.estimator
        labels = clusterer.labels_
        clustered = labels != -1
        n_clusters = len(np.unique(labels[clustered]))
        separated = 2 <= n_clusters < np.sum(clustered)
        Xc, lc = Xt[clustered], labels[clustered]
        return {
            "silhouette": silhouette_score(Xc, lc) if separated else None,
            "davies_bouldin": davies_bouldin_score(Xc, lc) if separated else None,
            "calinski_harabasz": calinski_harabasz_score(Xc, lc) if separated else None,
            "n_clusters": n_clusters,
            "n_noise": int(np.sum(~clustered)),
            "cluster_sizes": np.bincount(lc, minlength=n_clusters),
            **_own_metrics(self.case.algorithm, clusterer),
        }

    def sklearn_dbscan(self) -> DBSCAN:
        params = {k: v for k, v in self.case.params.items() if k in ("eps", "min_samples")}
        return DBSCAN(**params).fit(self.training_model_space)

    def metrics(self) -> dict[str, Any]:
        """The training metrics of DESIGN.md section 3, by family."""
        est, Xt = self.estimator, self.training_model_space
        if self.case.algorithm == "dbscan":
            labels = self.sklearn_dbscan().labels_
            n_clusters = len(set(labels.tolist()) - {-1})
            return {
                "n_clusters": n_clusters,
                "n_core_samples": len(self.sklearn_dbscan().core_sample_indices_),
                "n_noise": int(np.sum(labels == -1)),
                "noise_ratio": float(np.mean(labels == -1)),
                "cluster_sizes": np.bincount(labels[labels >= 0], minlength=n_clusters),
            }
        if self.case.algorithm in ("kmeans", "minibatch_kmeans"):
            labels = est.labels_
            return {
                "inertia": est.inertia_,
                "silhouette": silhouette_score(Xt, labels),
                "davies_bouldin": davies_bouldin_score(Xt, labels),
                "calinski_harabasz": calinski_harabasz_score(Xt, labels),
                "n_iter": est.n_iter_,
                "n_clusters": len(np.unique(labels)),
                "n_noise": 0,
                "cluster_sizes": np.bincount(labels, minlength=est.n_clusters),
            }
        if self.case.algorithm in ESTIMATORS and self.estimator_family == "clustering":
            return self.clusterer_metrics()
        labels = est.predict(Xt)
        out = {
            "log_likelihood": est.score(Xt) * len(Xt),
            "converged": est.converged_,
            "n_iter": est.n_iter_,
            "lower_bound": est.lower_bound_,
            "cluster_sizes": np.bincount(labels, minlength=len(est.weights_)),
        }
        if self.case.algorithm == "gaussian_mixture":
            return out | {"bic": est.bic(Xt), "aic": est.aic(Xt)}
        return out | {
            "effective_components": int(np.sum(est.weights_ > 0.01)),
            "weights": est.weights_,
        }


def assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every expected field is in ``actual``: integers, booleans and strings exactly, floats to a
    relative 1e-9."""
    for key, want in expected.items():
        assert key in actual, (key, sorted(actual))
        got = actual[key]
        if want is None or isinstance(want, str | bool):
            assert got == want, key
            continue
        want_array = np.asarray(want)
        got_array = np.asarray(got)
        assert got_array.shape == want_array.shape, (key, got_array.shape, want_array.shape)
        if want_array.dtype.kind in "iub":
            assert got_array.tolist() == want_array.tolist(), key
        else:
            assert_allclose(
                got_array.astype(np.float64), want_array, rtol=RTOL, atol=0, err_msg=key
            )


def _own_metrics(algorithm: str, clusterer: Any) -> dict[str, Any]:
    """What each new clusterer reports of its own fit, from scikit-learn's attributes."""
    if algorithm == "birch":
        return {"n_subclusters": len(clusterer.subcluster_centers_)}
    if algorithm == "mean_shift":
        return {"n_iter": clusterer.n_iter_}
    if algorithm == "affinity_propagation":
        return {"n_iter": clusterer.n_iter_, "converged": True}
    if algorithm == "agglomerative":
        return {
            "n_leaves": clusterer.n_leaves_,
            "n_connected_components": clusterer.n_connected_components_,
        }
    if algorithm == "hdbscan":
        return {
            "noise_ratio": float(np.mean(clusterer.labels_ == -1)),
            "mean_probability": float(np.mean(clusterer.probabilities_)),
        }
    return {}
