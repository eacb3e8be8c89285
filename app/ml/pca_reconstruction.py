"""PCAReconstruction: an outlier detector scoring rows by their squared PCA reconstruction error."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data


class PCAReconstruction(BaseEstimator):  # type: ignore[misc]  # scikit-learn has no types: Any
    """Fit a PCA on normal rows; a row the kept components cannot rebuild is unusual.

    ``n_components`` is an int (components kept) or a float in (0, 1) (share of variance kept).
    ``score_samples`` keeps scikit-learn's outlier sign: minus the squared reconstruction
    error, so lower is more abnormal. ``reconstruction_errors`` gives the per-feature squared
    errors, whose row sums are exactly minus ``score_samples``.
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 - scikit-learn's own convention
        "n_components": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="neither"),
        ],
        "svd_solver": [StrOptions({"auto", "full", "covariance_eigh", "arpack", "randomized"})],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components: int | float = 0.95,
        *,
        svd_solver: str = "auto",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_components = n_components
        self.svd_solver = svd_solver
        self.random_state = random_state

    def fit(self, X: ArrayLike, y: object = None) -> PCAReconstruction:
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        self.pca_ = PCA(
            n_components=self.n_components,
            svd_solver=self.svd_solver,
            random_state=self.random_state,
        ).fit(X)
        self.n_components_ = int(self.pca_.n_components_)
        return self

    def reconstruction_errors(self, X: ArrayLike) -> NDArray[np.float64]:
        """Per row and feature, the squared difference between the row and its reconstruction."""
        check_is_fitted(self, "pca_")
        rows: NDArray[np.float64] = validate_data(self, X, dtype=np.float64, reset=False)
        rebuilt: NDArray[np.float64] = self.pca_.inverse_transform(self.pca_.transform(rows))
        return (rows - rebuilt) ** 2

    def score_samples(self, X: ArrayLike) -> NDArray[np.float64]:
        """Minus the squared reconstruction error: lower is more abnormal."""
        squared_errors: NDArray[np.float64] = self.reconstruction_errors(X).sum(axis=1)
        return -squared_errors
