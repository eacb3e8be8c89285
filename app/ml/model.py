"""FittedModel: fitted preprocessing, estimator and anomaly threshold, and every operation."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from app.ml.anomaly import AnomalyThreshold
from app.ml.cluster_centers import center_distances, centers_of
from app.ml.exceptions import InferenceInputError
from app.ml.fast_inference import FastInference, compile_fast
from app.ml.finite import all_finite
from app.ml.fitted_parameters import estimator_parameters, preprocessing_parameters
from app.ml.inductive import InductiveClusterer

# How the stored threshold of an inductive clusterer is drawn (its version's anomaly summary).
NOISE_BOUNDARY = "max_distance: a row is an anomaly exactly when predict calls it noise (-1)"


@dataclass(eq=False)
class FittedModel:
    """What an artifact holds. Inference runs the preprocessing, then the estimator, exactly as a
    :class:`sklearn.pipeline.Pipeline` of the same steps would."""

    algorithm: str
    family: str
    estimator: BaseEstimator
    preprocessor: Pipeline | None
    n_features_in: int
    feature_names: list[str] | None
    # Per original feature, the training median: the reference of median-substitution
    # explanations. None in artifacts written before explanations existed.
    training_medians: np.ndarray | None = None
    # A mixture's training labels (its components of the rows fitted on), which its estimator
    # does not keep; every clusterer's are its estimator's labels_. See training_labels.
    mixture_labels: np.ndarray | None = None
    # Drawn from the training rows' anomaly scores, which need the model itself: fit_model sets
    # it once they are known, before the model leaves it.
    anomaly: AnomalyThreshold = field(init=False)

    # -- exact fast inference (app.ml.fast_inference): built on load, never stored -----------------
    def __post_init__(self) -> None:
        self._compile_fast()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_fast_estimator", None)
        state.pop("_fast_preprocessor", None)
        state.pop("_cost_per_row", None)
        state.pop("_classes", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compile_fast()

    def _compile_fast(self) -> None:
        self._fast_estimator = compile_fast(self.estimator)
        self._fast_preprocessor = (
            compile_fast(self.preprocessor) if self.preprocessor is not None else None
        )
        self._cost_per_row = self._estimate_cost_per_row()
        self._classes: np.ndarray | None = None  # predict_proba's column labels, once known

    def fast_estimator_for(self, X: np.ndarray) -> FastInference | None:
        """The exact fast estimator, when there is one and ``X`` (finite float64) may take it."""
        fast = self._fast_estimator
        if fast is not None and X.dtype == np.float64 and all_finite(X):
            return fast
        return None

    # -- input ---------------------------------------------------------------------------------
    def model_space(self, X: np.ndarray) -> np.ndarray:
        """``X`` checked for width and passed through the preprocessing."""
        return self._prepared(X)[1]

    def _prepared(self, X: np.ndarray) -> tuple[FastInference | None, np.ndarray]:
        """The fast estimator, when the rows may take it, and the rows in model space. The fast
        path needs finite float64 rows (the API guarantees them); anything else takes
        scikit-learn's, with its own checks and errors."""
        if X.ndim != 2 or X.shape[1] != self.n_features_in:
            width = X.shape[1] if X.ndim == 2 else "?"
            raise InferenceInputError(
                f"rows have {width} features; this model was trained on {self.n_features_in}"
            )
        fast = self.fast_estimator_for(X)
        if fast is not None:
            X = np.ascontiguousarray(X)
            if self.preprocessor is None:
                return fast, X
            if self._fast_preprocessor is not None:
                return fast, self._fast_preprocessor.transform(X)
        return None, self.preprocessor.transform(X) if self.preprocessor is not None else X

    @property
    def cost_per_row(self) -> int:
        """Rough multiply-adds per row of inference, for deciding what may run inline."""
        return self._cost_per_row

    def _estimate_cost_per_row(self) -> int:
        est = self.estimator
        d = self.n_features_in
        if isinstance(est, InductiveClusterer):
            return d * len(est.anchor_indices_)
        centers = centers_of(est)
        if centers is not None:
            return d * len(centers)
        if hasattr(est, "means_"):
            return d * d * len(est.means_)
        if hasattr(est, "support_vectors_"):
            return d * len(est.support_vectors_)
        if hasattr(est, "estimators_"):  # isolation forest: a root-to-leaf walk per tree
            return 16 * len(est.estimators_)
        if hasattr(est, "n_samples_fit_"):  # local outlier factor: neighbours among the fit rows
            return d * int(est.n_samples_fit_)
        if hasattr(est, "pca_"):
            return 2 * d * int(est.n_components_)
        return d * d

    # -- operations ----------------------------------------------------------------------------
    # Each operation takes the exact fast path where there is one (k-means and mixtures; equal
    # to scikit-learn's answers bit for bit), else scikit-learn itself.
    def predict(self, X: np.ndarray) -> np.ndarray:
        fast, Xt = self._prepared(X)
        return (fast or self.estimator).predict(Xt)

    def predict_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (rows x classes) and the class label of each column."""
        fast, Xt = self._prepared(X)
        proba = (fast or self.estimator).predict_proba(Xt)
        classes = self._classes
        if classes is None or len(classes) != proba.shape[1]:
            classes = np.array(getattr(self.estimator, "classes_", np.arange(proba.shape[1])))
            classes.setflags(write=False)  # shared by every answer
            self._classes = classes
        return proba, classes

    def transform(self, X: np.ndarray) -> np.ndarray:
        fast, Xt = self._prepared(X)
        return (fast or self.estimator).transform(Xt)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        fast, Xt = self._prepared(X)
        return (fast or self.estimator).score_samples(Xt)

    def score(self, X: np.ndarray) -> float:
        fast, Xt = self._prepared(X)
        return float((fast or self.estimator).score(Xt))

    def anomaly_scores_in_model_space(
        self, Xt: np.ndarray, fast: FastInference | None = None
    ) -> np.ndarray:
        """Higher is more anomalous: distance to the nearest centroid (k-means, mean-shift),
        exemplar (affinity propagation) or subcluster (BIRCH); to the nearest anchor of an
        inductive clusterer (DBSCAN's core samples, the clustered rows of the others); the
        negative log-density (mixtures); minus scikit-learn's ``score_samples`` (detectors: for
        PCA reconstruction, the squared error)."""
        est = fast or self.estimator
        if isinstance(est, InductiveClusterer):
            return est.anchor_distance(Xt)
        if self.family in ("mixture", "anomaly"):
            # scikit-learn's score_samples is "higher is more normal" for both.
            return -est.score_samples(Xt)
        nearest: np.ndarray = center_distances(est, Xt).min(axis=1)
        return nearest

    def training_anomaly_scores(
        self, Xt: np.ndarray, fast: FastInference | None = None
    ) -> np.ndarray:
        """The anomaly scores of training rows (in model space), which the threshold and the
        percentiles are drawn from. An inductive clusterer's rows are scored as if each were new
        (left out of the anchors it is one of): its own distance, 0, says nothing."""
        if isinstance(self.estimator, InductiveClusterer):
            return self.estimator.leave_one_out_distance(Xt)
        return self.anomaly_scores_in_model_space(Xt, fast)

    def calibrated_threshold(self, scores: np.ndarray, contamination: float) -> AnomalyThreshold:
        """The stored threshold of these training scores: their ``1 - contamination`` quantile,
        or, for an inductive clusterer, its noise boundary ``max_distance_``, so that
        ``anomalies`` and ``predict``'s ``-1`` agree whatever the training set (its
        contamination is then the share of training rows beyond it)."""
        if isinstance(self.estimator, InductiveClusterer):
            return AnomalyThreshold.at(scores, self.estimator.max_distance_, rule=NOISE_BOUNDARY)
        return AnomalyThreshold.fit(scores, contamination)

    @property
    def training_labels(self) -> np.ndarray | None:
        """The label of every row fitted on: scikit-learn's ``fit_predict`` on them (noise
        ``-1``); a mixture's most probable component. None for the detectors."""
        labels: np.ndarray | None = getattr(self.estimator, "labels_", None)
        return labels if labels is not None else self.mixture_labels

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        fast, Xt = self._prepared(X)
        return self.anomaly_scores_in_model_space(Xt, fast)

    def sample(self, n_samples: int, random_state: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``n_samples`` rows drawn from the mixture, in the original feature space."""
        estimator = copy.copy(self.estimator)  # the cached model itself stays untouched
        estimator.random_state = random_state
        X, components = estimator.sample(n_samples)
        if self.preprocessor is not None:
            X = self.preprocessor.inverse_transform(X)
        return X, components

    def bic(self, X: np.ndarray) -> float:
        return float(self.estimator.bic(self.model_space(X)))

    def aic(self, X: np.ndarray) -> float:
        return float(self.estimator.aic(self.model_space(X)))

    # -- inspection ----------------------------------------------------------------------------
    def parameters(self, *, core_sample_indices: bool = False) -> dict[str, Any]:
        """The fitted parameters, as plain JSON-ready values (DBSCAN's core sample indices with
        ``core_sample_indices`` only)."""
        out = estimator_parameters(
            self.estimator,
            self.preprocessor,
            self.family,
            core_sample_indices=core_sample_indices,
        )
        out["anomaly"] = {
            "contamination": self.anomaly.contamination,
            "threshold": self.anomaly.threshold,
        }
        out["preprocessing"] = preprocessing_parameters(self.preprocessor)
        return out
