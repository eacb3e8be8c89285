"""Model selection in the ml layer: grid expansion, the elbow, silhouette diagrams and the
best candidate under each criterion, checked against scikit-learn called directly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_samples

from app.ml.catalog import ALGORITHMS
from app.ml.exceptions import HyperparameterError
from app.ml.selection import (
    CRITERIA,
    ELBOW_METHOD,
    SELECTABLE,
    elbow,
    elbow_curve,
    evaluate_candidate,
    expand_grid,
    grid_size,
    silhouette_diagram,
    summarize,
)

KMEANS = ALGORITHMS["kmeans"]
MIXTURE = ALGORITHMS["gaussian_mixture"]


def grid_params(grid: dict) -> list[dict]:
    candidates = expand_grid(KMEANS, grid)
    assert [c.index for c in candidates] == list(range(len(candidates)))
    return [c.params for c in candidates]


# -- expand_grid -------------------------------------------------------------------------------
def test_a_list_is_taken_as_it_is():
    assert grid_params({"n_clusters": [5, 2, 3]}) == [
        {"n_clusters": 5},
        {"n_clusters": 2},
        {"n_clusters": 3},
    ]


def test_a_range_includes_both_ends():
    assert grid_params({"n_clusters": {"min": 2, "max": 5}}) == [
        {"n_clusters": k} for k in (2, 3, 4, 5)
    ]


def test_a_range_with_a_step_stops_at_max():
    assert grid_params({"n_clusters": {"min": 2, "max": 10, "step": 3}}) == [
        {"n_clusters": k} for k in (2, 5, 8)
    ]
    assert grid_params({"n_clusters": {"min": 4, "max": 4}}) == [{"n_clusters": 4}]


def test_several_parameters_give_their_product_in_order():
    params = grid_params({"n_clusters": {"min": 1, "max": 3}, "init": ["k-means++", "random"]})
    assert params == [
        {"n_clusters": k, "init": init} for k in (1, 2, 3) for init in ("k-means++", "random")
    ]


@pytest.mark.parametrize(
    ("grid", "parameter"),
    [
        pytest.param({}, "grid", id="no-parameter"),
        pytest.param({"n_clusters": []}, "grid.n_clusters", id="empty-list"),
        pytest.param({"n_clusters": {"min": 5, "max": 2}}, "grid.n_clusters", id="min-above-max"),
        pytest.param(
            {"n_clusters": {"min": 2, "max": 5, "step": 0}}, "grid.n_clusters", id="step-0"
        ),
        pytest.param(
            {"init": ["random"], "n_clusters": []}, "grid.n_clusters", id="one-of-two-empty"
        ),
    ],
)
def test_an_empty_grid_is_a_hyperparameter_error(grid, parameter):
    with pytest.raises(HyperparameterError) as raised:
        expand_grid(KMEANS, grid)
    assert raised.value.parameter == parameter


@pytest.mark.parametrize(
    "grid",
    [
        {"n_clusters": [5, 2, 3]},
        {"n_clusters": {"min": 2, "max": 10}},
        {"n_clusters": {"min": 2, "max": 10, "step": 3}},
        {"n_clusters": {"min": 2, "max": 11, "step": 3}},
        {"n_clusters": {"min": 4, "max": 4}},
        {"n_clusters": {"min": 1, "max": 3}, "init": ["k-means++", "random"], "tol": [1e-4, 1e-3]},
    ],
)
def test_grid_size_counts_the_candidates_expand_grid_makes(grid):
    assert grid_size(grid) == len(expand_grid(KMEANS, grid))


def test_grid_size_counts_a_huge_grid_without_expanding_it():
    huge = {"n_clusters": {"min": 1, "max": 10**12}, "max_iter": {"min": 1, "max": 10**6}}
    assert grid_size(huge) == 10**18
    assert grid_size({"n_clusters": {"min": 5, "max": 2}}) == 0


def test_a_huge_range_is_not_expanded_before_an_empty_one_is_found():
    """Ranges stay lazy until every entry is checked: this answers at once, not out of memory."""
    grid = {"max_iter": {"min": 1, "max": 10**12}, "n_clusters": {"min": 5, "max": 2}}
    with pytest.raises(HyperparameterError) as raised:
        expand_grid(KMEANS, grid)
    assert raised.value.parameter == "grid.n_clusters"


# -- elbow ---------------------------------------------------------------------------------------
def test_the_elbow_of_a_curve_that_bends_once_is_where_it_bends():
    ks = list(range(1, 11))
    # Falls steeply to k=4, then slowly: the bend is at 4.
    inertias = [1000.0, 600.0, 250.0, 60.0, 50.0, 42.0, 36.0, 31.0, 27.0, 24.0]
    assert elbow(ks, inertias) == 4


def test_the_elbow_does_not_depend_on_the_order_or_the_scale():
    ks = [2, 3, 4, 5, 6, 7, 8]
    inertias = [90.0, 40.0, 12.0, 10.0, 9.0, 8.5, 8.0]
    assert elbow(ks, inertias) == 4
    shuffled = [6, 2, 8, 4, 3, 7, 5]
    by_k = dict(zip(ks, inertias, strict=True))
    assert elbow(shuffled, [by_k[k] * 1e6 for k in shuffled]) == 4


def test_a_curve_of_fewer_than_three_points_has_no_elbow():
    assert elbow([2, 3], [10.0, 5.0]) is None


def test_the_curve_reports_each_inner_points_slope_ratio():
    curve = elbow_curve([4, 2, 3, 5], [12.0, 90.0, 40.0, 10.0])
    assert curve == {
        "elbow": 4.0,
        "k": [2.0, 3.0, 4.0, 5.0],
        "inertia": [90.0, 40.0, 12.0, 10.0],
        "slope_ratio": [None, 50.0 / 28.0, 28.0 / 2.0, None],
    }


def test_the_slope_ratio_takes_the_grids_steps_into_account():
    # k = 2, 4, 8, 16: the fall per unit of k, not per grid step.
    curve = elbow_curve([2, 4, 8, 16], [100.0, 20.0, 12.0, 4.0])
    assert curve["slope_ratio"] == [None, (80 / 2) / (8 / 4), (8 / 4) / (8 / 8), None]
    assert curve["elbow"] == 4


def test_where_the_curve_stops_falling_is_the_strongest_elbow():
    # MiniBatchKMeans' inertia can rise with k; a curve that is flat or rises after k bends most.
    curve = elbow_curve([1, 2, 3, 4, 5], [100.0, 60.0, 30.0, 31.0, 20.0])
    assert curve["elbow"] == 3
    assert curve["slope_ratio"][2] is None  # unbounded: not a number JSON can carry
    assert curve["slope_ratio"][3] is None  # rises into 4: no elbow there
    assert elbow([1, 2, 3], [5.0, 5.0, 5.0]) is None  # never falls


def chapter_blobs() -> np.ndarray:
    """The chapter's five blobs (three small, close together)."""
    blob_centers = np.array([[0.2, 2.3], [-1.5, 2.3], [-2.8, 1.8], [-2.8, 2.8], [-2.8, 1.3]])
    blob_std = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    X, _ = make_blobs(n_samples=2000, centers=blob_centers, cluster_std=blob_std, random_state=7)
    return X


@pytest.fixture(scope="module")
def chapter_inertias() -> dict[int, float]:
    X = chapter_blobs()
    return {
        k: KMeans(n_clusters=k, n_init=10, random_state=42).fit(X).inertia_ for k in range(1, 13)
    }


@pytest.mark.parametrize("ks", [range(1, 10), range(2, 10), range(2, 13)], ids=str)
def test_the_chapters_blobs_have_their_elbow_at_4_wherever_the_grid_starts(chapter_inertias, ks):
    candidates = [kmeans_candidate(i, k, inertia=chapter_inertias[k]) for i, k in enumerate(ks)]
    summary = summarize(KMEANS, candidates, ["n_clusters"])
    assert summary["elbow"]["n_clusters"] == 4  # where the chapter reads it
    assert summary["elbow"]["index"] == list(ks).index(4)
    assert summary["elbow"]["method"] == ELBOW_METHOD
    curve = summary["elbow"]["curve"]
    assert curve["n_clusters"] == list(ks)
    assert curve["inertia"] == [chapter_inertias[k] for k in ks]
    ratios = curve["slope_ratio"]
    assert ratios[0] is None and ratios[-1] is None
    assert max(r for r in ratios if r is not None) == ratios[list(ks).index(4)]


def test_the_chord_the_elbow_was_read_from_before_moved_with_the_grid(chapter_inertias):
    """Why the chord (the point farthest from the line joining the ends, which is Kneedle's
    knee on this curve) is not used: k = 1 adds a fall so steep that the bend moves to 3."""

    def chord(ks: list[int]) -> int:
        x = (np.asarray(ks, float) - ks[0]) / (ks[-1] - ks[0])
        y = np.array([chapter_inertias[k] for k in ks])
        y = (y - y.min()) / (y.max() - y.min())
        return ks[int(np.argmax(np.abs(x[-1] * (y - y[0]) - (y[-1] - y[0]) * x)))]

    assert chord(list(range(1, 10))) == 3
    assert chord(list(range(2, 10))) == 4


# -- silhouette_diagram ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def four_blobs() -> tuple[np.ndarray, np.ndarray]:
    X, _ = make_blobs(n_samples=300, centers=4, cluster_std=1.2, random_state=3)
    labels = KMeans(n_clusters=4, n_init=3, random_state=0).fit(X).labels_
    X.setflags(write=False)
    labels.setflags(write=False)
    return X, labels


def test_the_diagram_has_every_row_with_its_sklearn_coefficient(four_blobs):
    X, labels = four_blobs
    diagram = silhouette_diagram(X, labels)
    expected = silhouette_samples(X, labels)
    assert diagram["sampled"] is False
    assert diagram["sample_size"] == len(X)
    assert diagram["mean"] == pytest.approx(expected.mean(), rel=1e-12)
    assert [c["cluster"] for c in diagram["clusters"]] == [0, 1, 2, 3]
    assert sum(c["size"] for c in diagram["clusters"]) == len(X)
    for cluster in diagram["clusters"]:
        coefficients = np.asarray(cluster["coefficients"])
        assert cluster["size"] == len(coefficients) == np.sum(labels == cluster["cluster"])
        assert np.all(np.diff(coefficients) <= 0), "sorted from high to low"
        want = np.sort(expected[labels == cluster["cluster"]])[::-1]
        np.testing.assert_allclose(coefficients, want, rtol=1e-12)


def test_above_the_sample_size_the_diagram_is_sampled_and_says_so(four_blobs):
    X, labels = four_blobs
    diagram = silhouette_diagram(X, labels, sample_size=100)
    assert diagram["sampled"] is True
    assert diagram["sample_size"] == 100
    assert sum(c["size"] for c in diagram["clusters"]) == 100
    for cluster in diagram["clusters"]:
        assert np.all(np.diff(cluster["coefficients"]) <= 0)
    # The same seeded sample every time.
    assert silhouette_diagram(X, labels, sample_size=100) == diagram


def test_one_cluster_has_no_diagram(four_blobs):
    X, _ = four_blobs
    assert silhouette_diagram(X, np.zeros(len(X), dtype=int)) is None


# -- summarize ---------------------------------------------------------------------------------
def kmeans_candidate(index: int, k: int, **metrics: float) -> dict:
    return {"index": index, "params": {"n_clusters": k}, "metrics": metrics}


def test_summarize_picks_the_max_or_min_of_each_kmeans_criterion():
    table = [
        # k, inertia, silhouette, davies_bouldin, calinski_harabasz
        (2, 900.0, 0.50, 0.9, 100.0),
        (3, 300.0, 0.70, 0.6, 150.0),
        (4, 80.0, 0.65, 0.4, 400.0),
        (5, 70.0, 0.40, 0.8, 380.0),
        (6, 65.0, 0.30, 1.0, 350.0),
    ]
    candidates = [
        kmeans_candidate(
            index, k, inertia=inertia, silhouette=s, davies_bouldin=db, calinski_harabasz=ch
        )
        for index, (k, inertia, s, db, ch) in enumerate(table)
    ]
    summary = summarize(KMEANS, candidates, ["n_clusters"])
    best = summary["best"]
    assert best["silhouette"] == {"index": 1, "params": {"n_clusters": 3}, "value": 0.70}
    assert best["davies_bouldin"] == {"index": 2, "params": {"n_clusters": 4}, "value": 0.4}
    assert best["calinski_harabasz"] == {"index": 2, "params": {"n_clusters": 4}, "value": 400.0}
    assert summary["elbow"] == {
        "n_clusters": 4,
        "index": 2,
        "method": ELBOW_METHOD,
        "curve": {
            "n_clusters": [2, 3, 4, 5, 6],
            "inertia": [900.0, 300.0, 80.0, 70.0, 65.0],
            "slope_ratio": [None, 600 / 220, 220 / 10, 10 / 5, None],
        },
    }
    assert best["inertia"] == {
        "index": 2,
        "params": {"n_clusters": 4},
        "value": 80.0,
        "rule": "elbow of the inertia curve",
    }
    assert summary["criteria"] == {
        "silhouette": "max",
        "davies_bouldin": "min",
        "calinski_harabasz": "max",
        "inertia": "elbow",
    }


def test_summarize_skips_candidates_without_the_metric():
    candidates = [
        kmeans_candidate(0, 1, inertia=900.0, silhouette=None),
        kmeans_candidate(1, 2, inertia=100.0, silhouette=0.3),
        kmeans_candidate(2, 3, inertia=90.0, silhouette=0.2),
    ]
    assert summarize(KMEANS, candidates, ["n_clusters"])["best"]["silhouette"]["index"] == 1


def test_the_elbow_follows_the_best_silhouettes_other_grid_values():
    candidates, index = [], 0
    for init, inertias, silhouettes in (
        ("random", [500.0, 100.0, 90.0, 85.0], [0.1, 0.2, 0.1, 0.1]),
        ("k-means++", [500.0, 400.0, 60.0, 55.0], [0.3, 0.4, 0.9, 0.5]),
    ):
        for k, inertia, silhouette in zip((2, 3, 4, 5), inertias, silhouettes, strict=True):
            candidates.append(
                {
                    "index": index,
                    "params": {"n_clusters": k, "init": init},
                    "metrics": {"inertia": inertia, "silhouette": silhouette},
                }
            )
            index += 1
    summary = summarize(KMEANS, candidates, ["n_clusters", "init"])
    assert summary["best"]["silhouette"]["params"] == {"n_clusters": 4, "init": "k-means++"}
    # On the k-means++ curve the bend is at 4 (on the random one it would be at 3).
    assert (summary["elbow"]["n_clusters"], summary["elbow"]["index"]) == (4, 6)
    assert summary["elbow"]["curve"]["inertia"] == [500.0, 400.0, 60.0, 55.0]


def test_summarize_picks_the_lowest_bic_and_aic_and_the_highest_likelihood():
    rows = [(1, "full", 900.0, 880.0, -440.0), (2, "full", 700.0, 690.0, -300.0),
            (3, "full", 650.0, 600.0, -280.0), (3, "diag", 660.0, 590.0, -290.0),
            (4, "full", 655.0, 595.0, -270.0)]  # fmt: skip
    candidates = [
        {
            "index": i,
            "params": {"n_components": k, "covariance_type": c},
            "metrics": {"bic": bic, "aic": aic, "log_likelihood": ll},
        }
        for i, (k, c, bic, aic, ll) in enumerate(rows)
    ]
    summary = summarize(MIXTURE, candidates, ["n_components", "covariance_type"])
    best = summary["best"]
    assert (best["bic"]["index"], best["bic"]["value"]) == (2, 650.0)
    assert (best["aic"]["index"], best["aic"]["value"]) == (3, 590.0)
    assert (best["log_likelihood"]["index"], best["log_likelihood"]["value"]) == (4, -270.0)
    assert "elbow" not in summary


# -- the clusterers without inertia --------------------------------------------------------------
def test_birch_agglomerative_and_hdbscan_are_selected_by_their_separation():
    for name in ("birch", "agglomerative", "hdbscan"):
        assert name in SELECTABLE
        assert CRITERIA[name] == {
            "silhouette": "max",
            "davies_bouldin": "min",
            "calinski_harabasz": "max",
        }
    for name in ("mean_shift", "affinity_propagation", "spectral", "dbscan"):
        assert name not in SELECTABLE


def test_the_diagram_of_a_clusterer_with_noise_leaves_the_noise_out(moons):
    result, diagram = evaluate_candidate(
        algorithm=ALGORITHMS["hdbscan"],
        params={"min_cluster_size": 10},
        preprocessing=[],
        X=moons.X,
        feature_names=None,
        contamination=0.02,
        diagram=True,
    )
    labels = result.model.training_labels
    clustered = labels != -1
    assert not clustered.all()
    expected = silhouette_samples(moons.X[clustered], labels[clustered])
    assert diagram["sample_size"] == clustered.sum()
    assert diagram["mean"] == pytest.approx(expected.mean(), rel=1e-12)
    assert diagram["mean"] == pytest.approx(result.metrics["silhouette"], rel=1e-12)
