"""What scikit-learn answers when called directly: the numbers every API result must equal."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.testing import assert_allclose
from sklearn.base import BaseEstimator
from sklearn.cluster import DBSCAN, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    pairwise_distances,
    silhouette_score,
)
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from app.ml.dbscan_knn import DBSCANKNN
from tests.api.contract import Case

RTOL = 1e-9
ESTIMATORS: dict[str, type[BaseEstimator]] = {
    "kmeans": KMeans,
    "minibatch_kmeans": MiniBatchKMeans,
    "dbscan": DBSCANKNN,
    "gaussian_mixture": GaussianMixture,
    "bayesian_gaussian_mixture": BayesianGaussianMixture,
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

    # -- anomalies ------------------------------------------------------------------------------
    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        """Higher is more anomalous, computed from the fitted attributes."""
        est, Xt = self.estimator, self.model_space(X)
        if self.case.algorithm == "dbscan":
            # Directly, not by the |x|^2 - 2xy + |y|^2 trick: a core sample is at exactly 0.
            differences = Xt[:, np.newaxis, :] - est.components_[np.newaxis, :, :]
            return np.sqrt((differences**2).sum(axis=2)).min(axis=1)
        if self.case.algorithm in ("kmeans", "minibatch_kmeans"):
            return pairwise_distances(Xt, est.cluster_centers_).min(axis=1)
        return -est.score_samples(Xt)

    @property
    def training_scores(self) -> np.ndarray:
        return self.anomaly_scores(self.case.X)

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
            source, used_contamination = "stored", stored_contamination
            threshold = float(np.quantile(train, 1.0 - stored_contamination))
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
        if operation == "predict":
            return {"labels": est.predict(Xt)}
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
                "cluster_sizes": np.bincount(labels, minlength=est.n_clusters),
            }
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
