"""The catalog: hyperparameter schemas against scikit-learn's defaults, and Algorithm.build."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sklearn.base import BaseEstimator

from app.ml.catalog import ALGORITHMS, OPERATIONS, SERVER_REFUSED, get_algorithm
from app.ml.exceptions import HyperparameterError

NAMES = sorted(ALGORITHMS)

# DESIGN.md section 3, the catalog table.
DOCUMENTED_OPERATIONS = {
    "kmeans": {"predict", "transform", "score", "anomalies"},
    "minibatch_kmeans": {"predict", "transform", "score", "anomalies"},
    "dbscan": {"predict", "predict_proba", "anomalies"},
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
