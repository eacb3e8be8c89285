"""AnomalyThreshold: the training score distribution, its threshold, and percentiles of new scores.

Anomaly scores in Lloyd are "higher is more anomalous" for every algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_CONTAMINATION = 0.02
MAX_CONTAMINATION = 0.5
# Above this many training rows the distribution is kept as this many evenly spaced quantiles;
# at or below it every training score is kept and percentiles are exact.
REFERENCE_SIZE = 1001
SUMMARY_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)
SCORE_DIRECTION = "higher is more anomalous"


@dataclass(frozen=True, eq=False)
class AnomalyThreshold:
    """The threshold for a contamination, and the training scores it was drawn from.

    ``threshold`` is the ``1 - contamination`` quantile of the training scores (linear
    interpolation, as :func:`numpy.quantile`); a row is an anomaly when its score is strictly
    above the threshold, so a contamination of 0 flags no training row.
    """

    contamination: float
    threshold: float
    reference: np.ndarray  # sorted: every training score, or REFERENCE_SIZE quantiles
    exact: bool  # True when ``reference`` holds every training score
    n_training: int
    summary: dict[str, Any]

    @classmethod
    def fit(cls, scores: np.ndarray, contamination: float) -> AnomalyThreshold:
        scores = np.sort(np.asarray(scores, dtype=np.float64))
        return cls._of(scores, contamination, float(np.quantile(scores, 1.0 - contamination)))

    @classmethod
    def at(cls, scores: np.ndarray, threshold: float, *, rule: str) -> AnomalyThreshold:
        """A threshold the model itself defines (``rule`` says how), rather than a quantile:
        its contamination is then the share of training scores above it."""
        scores = np.sort(np.asarray(scores, dtype=np.float64))
        contamination = float(np.mean(scores > threshold))
        return cls._of(scores, contamination, float(threshold), {"threshold_rule": rule})

    @classmethod
    def _of(
        cls,
        scores: np.ndarray,
        contamination: float,
        threshold: float,
        rule: dict[str, str] | None = None,
    ) -> AnomalyThreshold:
        exact = len(scores) <= REFERENCE_SIZE
        reference = scores if exact else np.quantile(scores, np.linspace(0.0, 1.0, REFERENCE_SIZE))
        summary = {
            "contamination": contamination,
            "threshold": threshold,
            "score_direction": SCORE_DIRECTION,
            "training_flagged_ratio": float(np.mean(scores > threshold)),
            "training_score_quantiles": {
                f"{q:g}": float(v)
                for q, v in zip(
                    SUMMARY_QUANTILES, np.quantile(scores, SUMMARY_QUANTILES), strict=True
                )
            },
            "percentiles": "exact" if exact else f"interpolated from {REFERENCE_SIZE} quantiles",
            **(rule or {}),
        }
        return cls(contamination, threshold, reference, exact, len(scores), summary)

    def threshold_for(self, contamination: float) -> float:
        """The threshold a different contamination would have given on the training scores."""
        if self.exact:
            return float(np.quantile(self.reference, 1.0 - contamination))
        levels = np.linspace(0.0, 1.0, len(self.reference))
        return float(np.interp(1.0 - contamination, levels, self.reference))

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        """Per score, the percentage (0-100) of training rows that scored strictly lower."""
        scores = np.asarray(scores, dtype=np.float64)
        ref = self.reference
        below = np.searchsorted(ref, scores, side="left")
        if self.exact:
            return 100.0 * below / len(ref)
        # Between two stored quantiles, interpolate the level linearly.
        levels = np.linspace(0.0, 1.0, len(ref))
        lo = np.clip(below - 1, 0, len(ref) - 1)
        hi = np.clip(below, 0, len(ref) - 1)
        span = ref[hi] - ref[lo]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(span > 0, (scores - ref[lo]) / span, 0.0)
        level = levels[lo] + np.clip(frac, 0.0, 1.0) * (levels[hi] - levels[lo])
        level = np.where(below == 0, 0.0, np.where(below >= len(ref), 1.0, level))
        return 100.0 * level
