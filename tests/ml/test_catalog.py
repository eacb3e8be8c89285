"""The catalog: hyperparameter schemas against scikit-learn's defaults, and Algorithm.build."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from app.ml.catalog import ALGORITHMS, EXAMPLE_ROWS, OPERATIONS, SERVER_REFUSED, get_algorithm
from app.ml.exceptions import HyperparameterError, TrainingRowsError
from app.ml.fitting import fit_model

NAMES = sorted(ALGORITHMS)

# DESIGN.md section 3, the catalog table.
DOCUMENTED_OPERATIONS = {
    "kmeans": {"predict", "transform", "score", "anomalies"},
    "minibatch_kmeans": {"predict", "transform", "score", "anomalies"},
    "dbscan": {"predict", "predict_proba", "anomalies"},
    "birch": {"predict", "transform", "anomalies"},
    "mean_shift": {"predict", "anomalies"},
    "affinity_propagation": {"predict", "anomalies"},
    "agglomerative": {"predict", "predict_proba", "anomalies"},
    "spectral": {"predict", "predict_proba", "anomalies"},
    "hdbscan": {"predict", "predict_proba", "anomalies"},
    "gaussian_mixture": {
        "predict",
        "predict_proba",
        "score_samples",
        "score",
        "sample",
        "bic",
        "aic",
        "anomalies",
    },
    "bayesian_gaussian_mixture": {
        "predict",
        "predict_proba",
        "score_samples",
        "score",
        "sample",
        "anomalies",
    },
    **{
        detector: {"score_samples", "anomalies"}
        for detector in (
            "isolation_forest",
            "local_outlier_factor",
            "elliptic_envelope",
            "one_class_svm",
            "pca_reconstruction",
        )
    },
}


def enum_values(schema: Any) -> list[Any]:
    """Every value of every ``enum`` anywhere in a schema."""
    if isinstance(schema, dict):
        found = list(schema.get("enum", []))
        for value in schema.values():
            found += enum_values(value)
        return found
    if isinstance(schema, list):
        return [v for item in schema for v in enum_values(item)]
    return []


def test_catalog_names_and_operations():
    assert set(ALGORITHMS) == set(DOCUMENTED_OPERATIONS)
    for name, algorithm in ALGORITHMS.items():
        assert algorithm.name == name
        assert get_algorithm(name) is algorithm
        assert set(algorithm.operations) == DOCUMENTED_OPERATIONS[name]
        assert set(algorithm.operations) <= set(OPERATIONS)
        assert all(algorithm.supports(op) for op in algorithm.operations)
        assert not algorithm.supports("fit")
    assert get_algorithm("no_such_thing") is None


@pytest.mark.parametrize("name", NAMES)
def test_params_schema_is_json(name):
    schema = ALGORITHMS[name].params_schema
    assert json.loads(json.dumps(schema, allow_nan=False)) == schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("name", NAMES)
def test_params_schema_is_valid_json_schema_and_accepts_its_defaults(name):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = ALGORITHMS[name].params_schema
    jsonschema_rs.meta.validate(schema)
    defaults = {param: prop["default"] for param, prop in schema["properties"].items()}
    jsonschema_rs.validator_for(schema).validate(defaults)
    assert not jsonschema_rs.validator_for(schema).is_valid({"no_such_parameter": 1})


@pytest.mark.parametrize("name", NAMES)
def test_params_schema_defaults_are_the_estimators(name):
    algorithm = ALGORITHMS[name]
    defaults = algorithm.estimator_class().get_params(deep=False)
    properties = algorithm.params_schema["properties"]
    assert set(properties) == set(defaults) - algorithm.refused - set(algorithm.fixed)
    for param, prop in properties.items():
        expected = defaults[param]
        assert prop["default"] == expected, param
        assert type(prop["default"]) is type(expected), param


@pytest.mark.parametrize("name", NAMES)
def test_params_schema_leaves_out_server_settings(name):
    properties = ALGORITHMS[name].params_schema["properties"]
    assert "n_jobs" not in properties
    assert "verbose" not in properties
    assert not set(properties) & SERVER_REFUSED
    assert "precomputed" not in enum_values(ALGORITHMS[name].params_schema)


def test_dbscan_metric_enum_excludes_precomputed():
    metric = ALGORITHMS["dbscan"].params_schema["properties"]["metric"]
    assert metric["type"] == "string"
    assert "precomputed" not in metric["enum"]
    assert "euclidean" in metric["enum"]
    assert metric["default"] == "euclidean"


@pytest.mark.parametrize(
    ("name", "params", "parameter"),
    [
        ("kmeans", {"no_such_parameter": 1}, "no_such_parameter"),
        ("kmeans", {"n_jobs": 2}, "n_jobs"),
        ("kmeans", {"verbose": 1}, "verbose"),
        ("kmeans", {"copy_x": False}, "copy_x"),
        ("kmeans", {"n_clusters": 0}, "n_clusters"),
        ("kmeans", {"n_clusters": "x"}, "n_clusters"),
        ("kmeans", {"n_clusters": 3, "max_iter": 0}, "max_iter"),
        ("kmeans", {"n_clusters": 3, "n_init": 0}, "n_init"),
        ("kmeans", {"algorithm": "full"}, "algorithm"),
        ("minibatch_kmeans", {"n_clusters": 0}, "n_clusters"),
        ("minibatch_kmeans", {"n_jobs": 1}, "n_jobs"),
        ("gaussian_mixture", {"covariance_type": "bogus"}, "covariance_type"),
        ("gaussian_mixture", {"n_components": 0}, "n_components"),
        ("gaussian_mixture", {"warm_start": True}, "warm_start"),
        ("gaussian_mixture", {"verbose_interval": 5}, "verbose_interval"),
        ("bayesian_gaussian_mixture", {"covariance_type": "bogus"}, "covariance_type"),
        (
            "bayesian_gaussian_mixture",
            {"weight_concentration_prior": -1.0},
            "weight_concentration_prior",
        ),
        ("dbscan", {"metric": "precomputed"}, "metric"),
        ("dbscan", {"algorithm": "precomputed"}, "algorithm"),
        ("dbscan", {"metric": "mahalanobis"}, "metric"),
        ("dbscan", {"eps": 0}, "eps"),
        ("dbscan", {"n_jobs": 4}, "n_jobs"),
        ("dbscan", {"metric_params": {"p": 3}}, "metric_params"),
        ("birch", {"compute_labels": False}, "compute_labels"),
        ("birch", {"threshold": 0}, "threshold"),
        ("birch", {"n_clusters": True}, "n_clusters"),
        ("mean_shift", {"n_jobs": 2}, "n_jobs"),
        ("mean_shift", {"bandwidth": -1.0}, "bandwidth"),
        ("affinity_propagation", {"affinity": "precomputed"}, "affinity"),
        ("affinity_propagation", {"copy": False}, "copy"),
        ("affinity_propagation", {"verbose": True}, "verbose"),
        ("affinity_propagation", {"damping": 0.2}, "damping"),
        ("agglomerative", {"metric": "precomputed"}, "metric"),
        ("agglomerative", {"metric": "mahalanobis"}, "metric"),
        ("agglomerative", {"connectivity": [[0, 1], [1, 0]]}, "connectivity"),
        ("agglomerative", {"memory": "/tmp"}, "memory"),
        ("agglomerative", {"linkage": "bogus"}, "linkage"),
        ("spectral", {"affinity": "precomputed"}, "affinity"),
        ("spectral", {"affinity": "precomputed_nearest_neighbors"}, "affinity"),
        ("spectral", {"kernel_params": {"gamma": 1}}, "kernel_params"),
        ("spectral", {"n_jobs": 2}, "n_jobs"),
        ("spectral", {"n_clusters": 0}, "n_clusters"),
        ("hdbscan", {"metric": "precomputed"}, "metric"),
        ("hdbscan", {"metric": "cosine"}, "metric"),
        ("hdbscan", {"algorithm": "brute"}, "algorithm"),
        ("hdbscan", {"metric_params": {"p": 3}}, "metric_params"),
        ("hdbscan", {"copy": True}, "copy"),
        ("hdbscan", {"store_centers": "centroid"}, "store_centers"),
        ("hdbscan", {"n_jobs": -1}, "n_jobs"),
        ("hdbscan", {"min_cluster_size": 1}, "min_cluster_size"),
    ],
)
def test_build_refuses_and_names_the_parameter(name, params, parameter):
    with pytest.raises(HyperparameterError) as caught:
        ALGORITHMS[name].build(params)
    assert caught.value.parameter == parameter
    assert parameter in caught.value.message
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("kmeans", {"n_clusters": 4, "random_state": 3, "n_init": 2}),
        ("minibatch_kmeans", {"n_clusters": 2, "batch_size": 64}),
        ("dbscan", {"eps": 0.3, "metric": "manhattan", "max_distance": 0.5}),
        ("birch", {"threshold": 0.2, "n_clusters": None}),
        ("mean_shift", {"bandwidth": 2.0, "bin_seeding": True}),
        ("affinity_propagation", {"damping": 0.9, "preference": -50.0}),
        ("agglomerative", {"n_clusters": None, "distance_threshold": 1.5, "linkage": "average"}),
        ("spectral", {"n_clusters": 4, "affinity": "nearest_neighbors", "knn_neighbors": 3}),
        ("hdbscan", {"min_cluster_size": 15, "cluster_selection_method": "leaf"}),
        ("gaussian_mixture", {"n_components": 2, "covariance_type": "diag"}),
        ("bayesian_gaussian_mixture", {"n_components": 6, "weight_concentration_prior": 0.1}),
    ],
)
def test_build_gives_an_unfitted_estimator_with_the_params(name, params):
    algorithm = ALGORITHMS[name]
    estimator = algorithm.build(params)
    assert isinstance(estimator, BaseEstimator)
    assert type(estimator) is algorithm.estimator_class
    resolved = estimator.get_params(deep=False)
    assert {k: resolved[k] for k in params} == params
    defaults = algorithm.estimator_class().get_params(deep=False)
    assert {k: v for k, v in resolved.items() if k not in params} == {
        k: v for k, v in defaults.items() if k not in params
    }
    assert not [a for a in vars(estimator) if a.endswith("_") and not a.startswith("_")]


@pytest.mark.parametrize("name", NAMES)
def test_build_accepts_every_schema_default(name):
    algorithm = ALGORITHMS[name]
    defaults = {p: prop["default"] for p, prop in algorithm.params_schema["properties"].items()}
    estimator = algorithm.build(defaults)
    expected = algorithm.estimator_class(**algorithm.fixed).get_params(deep=False)
    assert estimator.get_params(deep=False) == expected


QUADRATIC = {"affinity_propagation": 3_000, "agglomerative": 6_000, "spectral": 3_000}


def test_the_algorithms_of_quadratic_memory_bound_their_rows():
    bounded = {n: a.max_training_rows for n, a in ALGORITHMS.items() if a.max_training_rows}
    assert bounded == QUADRATIC
    for name in QUADRATIC:
        assert "square of the rows" in ALGORITHMS[name].row_limit_reason


@pytest.mark.parametrize("name", sorted(QUADRATIC))
def test_check_training_rows_refuses_one_row_more_and_says_why(name):
    algorithm = ALGORITHMS[name]
    limit = QUADRATIC[name]
    algorithm.check_training_rows(limit)
    with pytest.raises(TrainingRowsError) as caught:
        algorithm.check_training_rows(200_000)
    assert (caught.value.n_rows, caught.value.limit) == (200_000, limit)
    message = str(caught.value)
    assert f"at most {limit:,} rows" in message
    assert "square of the rows" in message
    assert "200,000" in message
    with pytest.raises(TrainingRowsError):
        algorithm.check_training_rows(limit + 1)


def test_the_others_take_any_number_of_rows():
    for name, algorithm in ALGORITHMS.items():
        if name not in QUADRATIC:
            algorithm.check_training_rows(10**9)


@pytest.mark.parametrize("name", NAMES)
def test_every_example_trains_on_the_example_rows(name):
    algorithm = ALGORITHMS[name]
    assert algorithm.example_params
    result = fit_model(
        algorithm=algorithm,
        params=algorithm.example_params,
        preprocessing=[],
        X=np.asarray(EXAMPLE_ROWS),
        feature_names=None,
        contamination=0.02,
    )
    if algorithm.family == "clustering":
        assert result.metrics["n_clusters"] == 2, name
        assert "warnings" not in result.metrics, result.metrics["warnings"]


@pytest.mark.parametrize("name", ["dbscan", "agglomerative", "spectral", "hdbscan"])
def test_the_inductive_hyperparameters_are_described(name):
    properties = ALGORITHMS[name].params_schema["properties"]
    assert "noise" in properties["max_distance"]["description"]
    neighbours = "knn_neighbors" if name == "spectral" else "n_neighbors"
    assert "vote" in properties[neighbours]["description"]
