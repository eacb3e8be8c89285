"""AnomalyThreshold against numpy quantiles and brute-force percentiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.ml.anomaly import REFERENCE_SIZE, SUMMARY_QUANTILES, AnomalyThreshold

CONTAMINATIONS = [0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5]


def scores_of(kind: str, n: int) -> np.ndarray:
    """Seeded training scores: continuous, skewed, or with many ties."""
    rng = np.random.default_rng(n)
    if kind == "normal":
        return rng.normal(loc=3.0, scale=2.0, size=n)
    if kind == "exponential":
        return rng.exponential(scale=1.5, size=n)
    if kind == "ties":
        return rng.integers(0, 10, size=n).astype(np.float64)
    raise ValueError(kind)


def brute_force_percentiles(training: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per score, 100 x the share of training scores strictly lower."""
    return np.array([100.0 * np.mean(training < s) for s in scores])


@pytest.mark.parametrize("n", [50, 1001, 5000])
@pytest.mark.parametrize("contamination", CONTAMINATIONS)
def test_threshold_is_the_numpy_quantile(n, contamination):
    scores = scores_of("normal", n)
    fitted = AnomalyThreshold.fit(scores, contamination)
    expected = np.quantile(scores, 1.0 - contamination)
    np.testing.assert_allclose(fitted.threshold, expected, rtol=1e-9, atol=0)
    assert fitted.contamination == contamination
    assert fitted.n_training == n


@pytest.mark.parametrize("n", [200, 1001, 5000])
@pytest.mark.parametrize("contamination", CONTAMINATIONS)
def test_share_of_training_rows_flagged_is_the_contamination(n, contamination):
    scores = scores_of("normal", n)
    fitted = AnomalyThreshold.fit(scores, contamination)
    flagged = np.mean(scores > fitted.threshold)
    # Strictly above the linear-interpolation quantile: off by less than one row.
    assert abs(flagged - contamination) <= 1.0 / n
    assert fitted.summary["training_flagged_ratio"] == flagged


@pytest.mark.parametrize("kind", ["normal", "exponential", "ties"])
@pytest.mark.parametrize("n", [1, 10, 1001, 5000])
def test_contamination_zero_flags_no_training_row(kind, n):
    scores = scores_of(kind, n)
    fitted = AnomalyThreshold.fit(scores, 0.0)
    assert fitted.threshold == scores.max()
    assert not np.any(scores > fitted.threshold)
    assert fitted.summary["training_flagged_ratio"] == 0.0


@pytest.mark.parametrize("kind", ["normal", "exponential", "ties"])
@pytest.mark.parametrize("n", [1, 2, 37, 1000, 1001])
def test_exact_percentiles_equal_brute_force(kind, n):
    training = scores_of(kind, n)
    fitted = AnomalyThreshold.fit(training, 0.05)
    assert fitted.exact
    assert fitted.summary["percentiles"] == "exact"
    np.testing.assert_array_equal(fitted.reference, np.sort(training))
    rng = np.random.default_rng(7)
    span = training.max() - training.min() + 1.0
    queries = np.concatenate(
        [
            training,  # every training score: ties and "strictly lower" matter here
            rng.uniform(training.min() - span, training.max() + span, size=300),
            [training.min(), training.max(), -1e300, 1e300],
        ]
    )
    expected = brute_force_percentiles(training, queries)
    np.testing.assert_allclose(fitted.percentiles(queries), expected, rtol=1e-12, atol=1e-12)


def test_percentiles_are_exact_up_to_reference_size_and_interpolated_above():
    assert AnomalyThreshold.fit(scores_of("normal", REFERENCE_SIZE), 0.05).exact
    above = AnomalyThreshold.fit(scores_of("normal", REFERENCE_SIZE + 1), 0.05)
    assert not above.exact
    assert len(above.reference) == REFERENCE_SIZE
    assert above.n_training == REFERENCE_SIZE + 1
    assert above.summary["percentiles"] == f"interpolated from {REFERENCE_SIZE} quantiles"


@pytest.mark.parametrize("kind", ["normal", "exponential", "ties"])
@pytest.mark.parametrize("n", [1002, 5000, 20000])
def test_quantile_mode_percentiles_are_close_to_brute_force(kind, n):
    training = scores_of(kind, n)
    fitted = AnomalyThreshold.fit(training, 0.05)
    assert not fitted.exact
    np.testing.assert_allclose(
        fitted.reference,
        np.quantile(training, np.linspace(0.0, 1.0, REFERENCE_SIZE)),
        rtol=1e-9,
        atol=1e-12,
    )
    lo, hi = training.min(), training.max()
    queries = np.sort(
        np.concatenate(
            [
                np.random.default_rng(3).uniform(lo, hi, size=2000),
                training[:500],
                np.unique(training)[:50],
            ]
        )
    )
    got = fitted.percentiles(queries)
    assert np.all(np.diff(got) >= 0), "percentiles must not decrease as the score grows"
    np.testing.assert_allclose(got, brute_force_percentiles(training, queries), rtol=0, atol=0.2)
    assert np.all((got >= 0.0) & (got <= 100.0))


@pytest.mark.parametrize("kind", ["normal", "exponential", "ties"])
def test_quantile_mode_percentiles_are_0_below_and_100_above_the_training_range(kind):
    training = scores_of(kind, 5000)
    fitted = AnomalyThreshold.fit(training, 0.05)
    below = training.min() - np.array([1e-9, 1.0, 1e6, 1e300])
    above = training.max() + np.array([1e-9, 1.0, 1e6, 1e300])
    np.testing.assert_array_equal(fitted.percentiles(below), 0.0)
    np.testing.assert_array_equal(fitted.percentiles(above), 100.0)
    assert fitted.percentiles(np.array([training.min()]))[0] == 0.0


@pytest.mark.parametrize("contamination", [0.0, 0.003, 0.01, 0.0123, 0.05, 0.2, 0.5])
def test_threshold_for_equals_numpy_quantile_in_exact_mode(contamination):
    training = scores_of("exponential", 800)
    fitted = AnomalyThreshold.fit(training, 0.05)
    np.testing.assert_allclose(
        fitted.threshold_for(contamination),
        np.quantile(training, 1.0 - contamination),
        rtol=1e-9,
        atol=0,
    )


@pytest.mark.parametrize("kind", ["normal", "exponential"])
@pytest.mark.parametrize("contamination", [0.0, 0.003, 0.01, 0.0123, 0.05, 0.2, 0.5])
def test_threshold_for_is_close_to_numpy_quantile_in_quantile_mode(kind, contamination):
    training = scores_of(kind, 20000)
    fitted = AnomalyThreshold.fit(training, 0.05)
    got = fitted.threshold_for(contamination)
    # Between the two stored quantiles that bracket the level (so within one 0.1 % step) ...
    level = 1.0 - contamination
    step = 1.0 / (REFERENCE_SIZE - 1)
    lower = np.quantile(training, max(level - step, 0.0))
    upper = np.quantile(training, min(level + step, 1.0))
    assert lower <= got <= upper
    # ... and, at the stored levels, the quantile itself.
    if np.isclose(level * (REFERENCE_SIZE - 1), round(level * (REFERENCE_SIZE - 1))):
        np.testing.assert_allclose(got, np.quantile(training, level), rtol=1e-9, atol=0)
    # The share of training rows above it is the contamination, to within 0.1 %.
    assert abs(np.mean(training > got) - contamination) <= step


def test_threshold_for_its_own_contamination_is_the_threshold():
    for n in (500, 5000):
        fitted = AnomalyThreshold.fit(scores_of("normal", n), 0.05)
        np.testing.assert_allclose(fitted.threshold_for(0.05), fitted.threshold, rtol=1e-9, atol=0)


@pytest.mark.parametrize("n", [20, 1001, 5000])
def test_summary(n):
    training = scores_of("exponential", n)
    fitted = AnomalyThreshold.fit(training, 0.04)
    summary = fitted.summary
    expected = np.quantile(training, SUMMARY_QUANTILES)
    got = [summary["training_score_quantiles"][f"{q:g}"] for q in SUMMARY_QUANTILES]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    assert list(summary["training_score_quantiles"]) == ["0.01", "0.05", "0.5", "0.95", "0.99"]
    assert summary["contamination"] == 0.04
    assert summary["threshold"] == fitted.threshold
    assert summary["score_direction"] == "higher is more anomalous"
    json.dumps(summary, allow_nan=False)


def test_fit_does_not_change_the_callers_scores():
    training = scores_of("normal", 300)
    before = training.copy()
    AnomalyThreshold.fit(training, 0.05)
    np.testing.assert_array_equal(training, before)


@pytest.mark.parametrize("n", [50, 5000])
@pytest.mark.parametrize("threshold", [-1.0, 0.0, 1.5, 3.0, 100.0])
def test_a_threshold_the_model_defines_reports_the_share_it_flags(n, threshold):
    scores = scores_of("exponential", n)
    made = AnomalyThreshold.at(scores, threshold, rule="the model's own")
    assert made.threshold == threshold
    assert made.contamination == np.mean(scores > threshold)
    assert made.summary["contamination"] == made.contamination
    assert made.summary["training_flagged_ratio"] == made.contamination
    assert made.summary["threshold_rule"] == "the model's own"
    # The rest of the contract is the quantile threshold's: the same reference and percentiles.
    quantile = AnomalyThreshold.fit(scores, 0.05)
    np.testing.assert_array_equal(made.reference, quantile.reference)
    new = np.linspace(-1, 10, 23)
    np.testing.assert_array_equal(made.percentiles(new), quantile.percentiles(new))
    assert made.threshold_for(0.05) == quantile.threshold_for(0.05)
    assert "threshold_rule" not in quantile.summary
    assert json.loads(json.dumps(made.summary)) == made.summary
