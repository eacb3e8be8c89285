"""fit_model: validate, fit, score and summarise one training, as scikit-learn would do it."""

from __future__ import annotations

import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.cluster import AffinityPropagation
from sklearn.exceptions import ConvergenceWarning

from app.ml.catalog import Algorithm
from app.ml.clustering_metrics import cluster_sizes, clustering_metrics
from app.ml.column_medians import column_medians
from app.ml.exceptions import FitError
from app.ml.fast_inference import FastGaussianMixture
from app.ml.model import FittedModel
from app.ml.preprocessing import build_preprocessor

# A mixture component with at least this weight counts as effective (Bayesian mixtures).
EFFECTIVE_WEIGHT = 0.01


@dataclass(frozen=True)
class FitResult:
    model: FittedModel
    params: dict[str, Any]  # every resolved hyperparameter, JSON-ready
    metrics: dict[str, Any]
    training_seconds: float


def plain(value: Any) -> Any:
    """A value as plain JSON (numpy scalars and arrays included; non-finite floats become None)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


@dataclass(frozen=True)
class _Fit:
    estimator: Any
    preprocessor: Any
    Xt: np.ndarray  # the rows fitted on, in model space
    seconds: float
    warnings: list[str]


def _fit_once(
    algorithm: Algorithm, params: dict[str, Any], preprocessing: list[dict[str, Any]], X: np.ndarray
) -> _Fit:
    algorithm.check_training_rows(len(X))
    estimator = algorithm.build(params)
    preprocessor = build_preprocessor(preprocessing)
    if algorithm.n_clusters_param:
        k = estimator.get_params()[algorithm.n_clusters_param]
        if isinstance(k, int) and k > len(X):  # BIRCH and agglomerative take None too
            raise FitError(f"{algorithm.n_clusters_param}={k} is more than the {len(X)} rows")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        try:
            Xt = preprocessor.fit_transform(X) if preprocessor is not None else X
            estimator.fit(Xt)
        except (ValueError, TypeError) as exc:
            # TypeError: an array-like hyperparameter (init, means_init, ...) posted as a JSON
            # object or with objects inside; scikit-learn's constraints only look at its outside.
            raise FitError(str(exc)) from exc
        seconds = time.perf_counter() - started
        _refuse_unconverged(estimator, caught)
    return _Fit(estimator, preprocessor, Xt, seconds, sorted({str(w.message) for w in caught}))


def _refuse_unconverged(estimator: Any, caught: list[warnings.WarningMessage]) -> None:
    """Affinity propagation that did not converge warns and keeps whatever exemplars it had,
    which scikit-learn itself calls degenerate (or none: then it labels every row -1). That is
    no model to store."""
    if isinstance(estimator, AffinityPropagation) and any(
        issubclass(w.category, ConvergenceWarning) for w in caught
    ):
        raise FitError(
            f"affinity propagation did not converge in max_iter={estimator.max_iter} "
            f"iterations (damping={estimator.damping}): its exemplars would be degenerate; "
            "raise max_iter, or damping toward 0.9"
        )


@dataclass(frozen=True)
class _Scored:
    """The training rows' anomaly scores and, for a mixture scored by the fast path, their
    labels, computed in the same pass."""

    scores: np.ndarray
    labels: np.ndarray | None = None


def _training_scores(model: FittedModel, Xt: np.ndarray) -> _Scored:
    # Finite rows can still overflow (values near 1e308): distances become inf, and
    # scikit-learn's metrics refuse them. That is the client's data, not a server fault.
    fast = model.fast_estimator_for(Xt)
    labels = None
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(fast, FastGaussianMixture):
            log_density, labels = fast.log_density_and_labels(Xt)
            scores = -log_density  # the mixtures' anomaly score, as anomaly_scores gives it
        else:
            scores = model.training_anomaly_scores(Xt, fast)
    if not np.all(np.isfinite(scores)):
        raise FitError(
            "the anomaly scores of the training rows overflow (values too large for float64)"
        )
    return _Scored(scores, labels)


def fit_model(
    *,
    algorithm: Algorithm,
    params: dict[str, Any],
    preprocessing: list[dict[str, Any]],
    X: np.ndarray,
    feature_names: list[str] | None,
    contamination: float,
    refit_without_outliers: bool = False,
) -> FitResult:
    """Fit ``algorithm`` on ``X`` exactly as scikit-learn would, then measure it.

    With ``refit_without_outliers``, the rows above the threshold of the first fit are dropped
    and the model is fitted again on the rest (a clean-data fit). The stored threshold is then
    the ``1 - contamination`` quantile of the refitted model's scores on every posted row, so
    it still flags the share of the training set the client believes contaminated."""
    fit = _fit_once(algorithm, params, preprocessing, X)
    fitted_rows = X

    def model_of(fit: _Fit) -> FittedModel:
        return FittedModel(
            algorithm=algorithm.name,
            family=algorithm.family,
            estimator=fit.estimator,
            preprocessor=fit.preprocessor,
            n_features_in=X.shape[1],
            feature_names=feature_names,
        )

    # The training medians need no model: they are computed on a thread of their own while the
    # scores and metrics are, which run mostly one numpy call at a time and leave the worker's
    # second core idle; numpy lets go of the GIL while it copies and partitions.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medians") as background:
        medians = background.submit(column_medians, X)
        model = model_of(fit)
        scored = fit_scored = _training_scores(model, fit.Xt)
        scores = scored.scores
        threshold = model.calibrated_threshold(scores, contamination)
        seconds, fit_warnings = fit.seconds, fit.warnings
        refit: dict[str, Any] | None = None
        if refit_without_outliers:
            keep = scores <= threshold.threshold
            refit = {"dropped_rows": int(np.sum(~keep)), "refit_rows": int(np.sum(keep))}
            if not keep.all():
                fitted_rows = X[keep]
                medians.cancel()
                fit = _fit_once(algorithm, params, preprocessing, fitted_rows)
                medians = background.submit(column_medians, fitted_rows)
                seconds += fit.seconds
                fit_warnings = sorted(set(fit_warnings) | set(fit.warnings))
                model = model_of(fit)
                scored = _training_scores(model, model.model_space(X))
                scores = scored.scores
                threshold = model.calibrated_threshold(scores, contamination)
                fit_scored = _training_scores(model, fit.Xt)
        model.anomaly = threshold  # the model's scores were needed first
        model.mixture_labels = _mixture_labels(model, fit.Xt, fit_scored.labels)
        try:
            # Detectors report the scores the threshold was drawn from (every posted row); the
            # other families' metrics are of the rows fitted on.
            metric_scores = scored if model.family == "anomaly" else fit_scored
            metrics = training_metrics(
                model, fit.Xt, metric_scores.scores, labels=model.mixture_labels
            )
        except ValueError as exc:
            raise FitError(str(exc)) from exc
        model.training_medians = medians.result()
    if refit is not None:
        metrics["refit_without_outliers"] = refit
    if fit_warnings:
        metrics["warnings"] = fit_warnings
    resolved = {
        k: v for k, v in fit.estimator.get_params(deep=False).items() if k not in algorithm.refused
    }
    return FitResult(model, plain(resolved), plain(metrics), seconds)


def _mixture_labels(
    model: FittedModel, Xt: np.ndarray, known: np.ndarray | None
) -> np.ndarray | None:
    """A mixture's training labels (its estimator keeps none): ``known`` when the fast path
    gave them with the scores, else its predict on the rows fitted on. None for the others."""
    if model.family != "mixture":
        return None
    if known is not None:
        return known
    labels: np.ndarray = (model.fast_estimator_for(Xt) or model.estimator).predict(Xt)
    return labels


def training_metrics(
    model: FittedModel, Xt: np.ndarray, scores: np.ndarray, *, labels: np.ndarray | None = None
) -> dict[str, Any]:
    """Metrics by family, on the rows fitted on (in model space); ``scores`` are the anomaly
    scores of the training rows, ``labels`` their mixture components when already known."""
    if model.family == "anomaly":
        return {
            "anomaly_score_mean": float(np.mean(scores)),
            "anomaly_score_std": float(np.std(scores)),
            "anomaly_score_min": float(np.min(scores)),
            "anomaly_score_max": float(np.max(scores)),
            **{k: v for k, v in model.parameters().items() if k.startswith("n_")},
        }
    if model.family == "clustering":
        return clustering_metrics(model.estimator, Xt)
    return _mixture_metrics(model, Xt, scores, labels)


def _mixture_metrics(
    model: FittedModel, Xt: np.ndarray, scores: np.ndarray, labels: np.ndarray | None
) -> dict[str, Any]:
    est = model.estimator
    n = len(Xt)
    # ``scores`` are minus the rows' log-densities (scikit-learn's score_samples, negated
    # exactly): score, BIC and AIC follow with scikit-learn's own formulas, bit for bit,
    # without three more passes over the rows.
    if labels is None:
        labels = _mixture_labels(model, Xt, None)
        assert labels is not None
    score = float(np.mean(-scores))
    out: dict[str, Any] = {
        "log_likelihood": score * n,
        "converged": bool(est.converged_),
        "n_iter": int(est.n_iter_),
        "lower_bound": float(est.lower_bound_),
        "cluster_sizes": cluster_sizes(labels, len(est.weights_)),
    }
    if hasattr(est, "bic"):
        parameters = est._n_parameters()
        out = {
            "bic": -2 * score * n + parameters * math.log(n),
            "aic": -2 * score * n + 2 * parameters,
            **out,
        }
    else:
        out["effective_components"] = int(np.sum(est.weights_ > EFFECTIVE_WEIGHT))
        out["weights"] = est.weights_
    return out
