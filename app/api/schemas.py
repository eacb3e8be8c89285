"""Request and response models of the API (pydantic v2), with the examples /docs shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic.config import JsonValue

from app.ml.anomaly import DEFAULT_CONTAMINATION, MAX_CONTAMINATION

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
ModelName = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        max_length=128,
        description="Letters, digits, '_', '.', '-'; starts with a letter or digit; at most 128.",
        examples=["line-7"],
    ),
]
# A feature value: a JSON number, finite; strings, booleans and null are refused.
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Row = list[Number]
Record = dict[str, Number]
# Strict: JSON `true` or "0.1" is not a contamination (lax mode would take them as 1.0 and 0.1).
Contamination = Annotated[float, Strict(), Field(ge=0.0, le=MAX_CONTAMINATION)]

# JsonValue: the type json_schema_extra takes (list is invariant, list[list[float]] is not one).
EXAMPLE_INSTANCES: list[JsonValue] = [[0.1, 2.3], [0.2, 2.1], [5.1, 0.3]]
# Two groups of six parts (the README's session trains k-means on them).
SELECTION_EXAMPLE_ROWS: list[JsonValue] = [
    [0.1, 2.3], [0.2, 2.1], [0.15, 2.2], [0.12, 2.25], [0.18, 2.32], [0.09, 2.18],
    [5.1, 0.3], [5.0, 0.4], [5.2, 0.35], [5.05, 0.32], [4.95, 0.28], [5.12, 0.41],
]  # fmt: skip


class Strict_(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rows(Strict_):
    """Rows as ``instances`` (lists of numbers) or ``records`` (objects keyed by feature name):
    exactly one of the two."""

    instances: list[Row] | None = Field(
        None, description="Rows of numbers, all of one width.", examples=[EXAMPLE_INSTANCES]
    )
    records: list[Record] | None = Field(
        None,
        description="Objects keyed by feature name (the model's `feature_names`).",
        examples=[[{"temperature": 0.1, "pressure": 2.3}]],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Rows:
        if (self.instances is None) == (self.records is None):
            raise ValueError("send exactly one of 'instances' or 'records'")
        return self


class InferenceRequest(Rows):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"instances": EXAMPLE_INSTANCES}]}
    )


class AnomaliesRequest(InferenceRequest):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"instances": EXAMPLE_INSTANCES},
                {"instances": EXAMPLE_INSTANCES, "contamination": 0.05},
                {"instances": EXAMPLE_INSTANCES, "explain": True, "top_features": 2},
            ]
        },
    )
    contamination: Contamination | None = Field(
        None,
        description="Flag the share of training rows this contamination would flag, instead of "
        "the stored threshold. Exclusive with `threshold`.",
    )
    threshold: Number | None = Field(
        None, description="Flag rows scoring above this. Exclusive with `contamination`."
    )
    explain: Annotated[bool, Strict()] = Field(
        False,
        description="Add `contributions`: per row, the features that contributed most to its "
        "anomaly score (exact decompositions for k-means, mixtures, DBSCAN and "
        "pca_reconstruction; median substitution for the other detectors).",
    )
    top_features: Annotated[int, Strict()] | None = Field(
        None,
        ge=1,
        le=10_000,
        description="How many features `contributions` lists per row (default 5; with "
        "`explain` only).",
    )

    @model_validator(mode="after")
    def _one_override(self) -> AnomaliesRequest:
        if self.contamination is not None and self.threshold is not None:
            raise ValueError("send at most one of 'contamination' or 'threshold'")
        if self.top_features is not None and not self.explain:
            raise ValueError("'top_features' needs 'explain': true")
        return self


class SampleRequest(Strict_):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"n_samples": 6, "random_state": 0}]}
    )
    n_samples: int = Field(1, ge=1, description="Rows to draw (at most LLOYD_MAX_SAMPLE_ROWS).")
    random_state: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Seed; the same seed draws the same rows."
    )


class CriterionRequest(InferenceRequest):
    """Rows to compute the criterion on; send no body for the training-set value."""


# -- training ------------------------------------------------------------------------------------
class StandardScalerStep(Strict_):
    step: Literal["standard_scaler"]
    with_mean: bool = True
    with_std: bool = True


class PCAStep(Strict_):
    step: Literal["pca"]
    n_components: Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0.0, lt=1.0)] | None = (
        Field(
            None,
            description="Components to keep (an int), or the share of variance to keep (a "
            "float in (0, 1)); all when null.",
        )
    )
    whiten: bool = False
    svd_solver: Literal["auto", "full", "covariance_eigh", "arpack", "randomized"] = "auto"
    random_state: int | None = Field(None, ge=0, le=2**32 - 1)


PreprocessingStep = Annotated[StandardScalerStep | PCAStep, Field(discriminator="step")]


class AnomalySettings(Strict_):
    contamination: Contamination = Field(
        DEFAULT_CONTAMINATION,
        description="Share of training rows the stored threshold flags, in [0, 0.5].",
    )
    refit_without_outliers: Annotated[bool, Strict()] = Field(
        False,
        description="Clean-data fit: fit, drop the training rows above the threshold, fit "
        "again on the rest. The version's metrics report how many rows were dropped; the "
        "threshold is then drawn from the refitted model's scores on every posted row.",
    )


class TrainRequest(Strict_):
    """Train a new version of model ``name``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "line-7",
                    "algorithm": "gaussian_mixture",
                    "params": {"n_components": 2, "random_state": 42},
                    "preprocessing": [{"step": "standard_scaler"}],
                    "anomaly": {"contamination": 0.04},
                    "data": {
                        "instances": [
                            [0.1, 2.3],
                            [0.2, 2.1],
                            [0.15, 2.2],
                            [0.12, 2.25],
                            [5.1, 0.3],
                            [5.0, 0.4],
                            [5.2, 0.35],
                            [5.05, 0.32],
                        ]
                    },
                    "feature_names": ["temperature", "pressure"],
                    "description": "normal parts, week 47",
                    "tags": {"line": "7"},
                },
                {
                    "name": "line-7-detector",
                    "algorithm": "isolation_forest",
                    "params": {"n_estimators": 200, "random_state": 0},
                    "anomaly": {"contamination": 0.02, "refit_without_outliers": True},
                    "data": {
                        "records": [
                            {"temperature": 70.2, "pressure": 2.1},
                            {"temperature": 69.8, "pressure": 2.0},
                            {"temperature": 70.9, "pressure": 1.9},
                            {"temperature": 70.1, "pressure": 2.2},
                            {"temperature": 69.5, "pressure": 2.05},
                            {"temperature": 71.0, "pressure": 1.95},
                        ]
                    },
                },
                {
                    "name": "press-3",
                    "algorithm": "kmeans",
                    "params": {"n_clusters": 2, "random_state": 0},
                    "anomaly": {"contamination": 0.1},
                    "data": {"instances": SELECTION_EXAMPLE_ROWS},
                    "feature_names": ["temperature", "pressure"],
                },
            ]
        },
    )

    name: ModelName
    algorithm: str = Field(description="A name from `GET /v1/algorithms`.", examples=["kmeans"])
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Hyperparameters, checked against the algorithm's `params_schema`.",
    )
    preprocessing: list[PreprocessingStep] = Field(
        default_factory=list, max_length=8, description="Steps applied before the estimator."
    )
    anomaly: AnomalySettings = Field(default_factory=AnomalySettings)
    data: Rows
    feature_names: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        None, description="Column names; taken from the records' keys when omitted."
    )
    description: str | None = Field(None, max_length=2000)
    tags: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=50
    )
    wait: bool = Field(
        True,
        description="Wait for the fit (201 with the version). `false`: answer 202 with the "
        "job at once. A wait longer than LLOYD_SYNC_TIMEOUT_SECONDS also answers 202.",
    )
    retryable: bool = Field(
        True,
        description="Whether another replica may run the job again should the replica running "
        "it die (its rows are kept in the store until the job ends). `false`: such a job fails "
        "with that reason instead.",
    )


# -- responses -----------------------------------------------------------------------------------
class ArtifactOut(BaseModel):
    sha256: str
    size_bytes: int


class VersionOut(BaseModel):
    """One immutable trained version."""

    name: str
    version: int
    aliases: list[str]
    algorithm: str
    params: dict[str, Any] = Field(description="Every resolved hyperparameter.")
    preprocessing: list[dict[str, Any]]
    feature_names: list[str] | None
    n_samples: int
    n_features: int
    metrics: dict[str, Any] = Field(description="Training metrics of the algorithm's family.")
    anomaly: dict[str, Any] = Field(
        description="Stored threshold, contamination, score direction and training score quantiles."
    )
    operations: list[str]
    artifact: ArtifactOut
    library_versions: dict[str, str] = Field(
        description="The library versions the version was trained with (its artifact was "
        "written by these).",
        examples=[{"scikit-learn": "1.6.1", "numpy": "2.2.4"}],
    )
    serving_library_versions: dict[str, str] = Field(
        description="The library versions of the server answering this request.",
        examples=[{"scikit-learn": "1.6.1", "numpy": "2.2.4"}],
    )
    version_drift: bool = Field(
        description="True when the version was trained with another scikit-learn version, or "
        "another numpy major version, than the server runs. Its operations then answer 409 "
        "`version_drift` unless the server allows it (LLOYD_ALLOW_VERSION_DRIFT)."
    )
    training_seconds: float
    created_at: datetime
    description: str | None
    tags: dict[str, str]


class ModelOut(BaseModel):
    name: str
    created_at: datetime
    latest_version: int | None
    n_versions: int
    aliases: dict[str, int] = Field(description="Alias -> version number.")
    algorithm: str | None = Field(description="Algorithm of the latest version.")


class Page(BaseModel):
    total: int
    offset: int
    limit: int


class ModelPage(Page):
    items: list[ModelOut]


class VersionPage(Page):
    items: list[VersionOut]


class AliasRequest(Strict_):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 1}]})
    version: int = Field(ge=1, description="The version number the alias points at.")


class DeletedOut(BaseModel):
    name: str
    deleted_versions: list[int]


class AlgorithmOut(BaseModel):
    name: str
    family: str
    wraps: str
    summary: str
    operations: list[str]
    params_schema: dict[str, Any]
    max_training_rows: int | None = Field(
        None,
        description="The most rows one training takes (413 beyond): set for the algorithms "
        "whose memory grows with the square of the rows; null: only LLOYD_MAX_TRAINING_CELLS.",
    )
    max_training_rows_reason: str | None = Field(None, description="Why the limit.")
    example: dict[str, Any] = Field(
        description="A training request (`POST /v1/models`) that runs as it is."
    )


class ParametersOut(BaseModel):
    model: str
    version: int
    algorithm: str
    parameters: dict[str, Any]


class Answer(BaseModel):
    model: str
    version: int


class PredictOut(Answer):
    labels: list[int] = Field(
        description="Cluster index per row; -1 is noise (DBSCAN, agglomerative, spectral, "
        "HDBSCAN: farther than `max_distance` from every anchor)."
    )


class PredictProbaOut(Answer):
    probabilities: list[list[float]] = Field(description="Rows x classes.")
    classes: list[int] = Field(
        description="The label of each column. For the clusterers with noise (DBSCAN, "
        "agglomerative, spectral, HDBSCAN) the first is -1: 1 for a row `predict` calls "
        "noise (all others 0), else 0."
    )


class TransformOut(Answer):
    distances: list[list[float]] = Field(
        description="Distance to every centroid (BIRCH: subcluster centre), rows x k."
    )


class ScoreSamplesOut(Answer):
    scores: list[float] = Field(description="scikit-learn's score_samples: higher is more normal.")


class ScoreOut(Answer):
    score: float
    n_samples: int


class Contribution(BaseModel):
    feature: str | int = Field(description="Feature name, or column index without names.")
    value: float = Field(description="The row's value of this feature.")
    contribution: float = Field(
        description="Exact: the feature's term of the decomposed quantity. Median "
        "substitution: how much the anomaly score drops with this feature at its training "
        "median."
    )
    share: float = Field(description="The contribution over the row's total (see the docs).")


class ExplanationOut(BaseModel):
    method: Literal["exact", "median_substitution"]
    decomposes: str = Field(description="What the contributions add up to, or measure.")


class AnomaliesOut(Answer):
    anomaly_scores: list[float] = Field(description="Higher is more anomalous.")
    is_anomaly: list[bool]
    percentiles: list[float] = Field(
        description="Per row, the percentage (0-100) of training rows that scored lower."
    )
    threshold: float
    threshold_source: Literal["stored", "contamination", "threshold"]
    contamination: float | None
    score_direction: str
    explanation: ExplanationOut | None = Field(None, description="With `explain` only.")
    contributions: list[list[Contribution]] | None = Field(
        None, description="With `explain` only: per row, the top features, largest first."
    )


class SampleOut(Answer):
    instances: list[list[float]] = Field(description="Rows in the original feature space.")
    components: list[int]


class BicOut(Answer):
    bic: float
    n_samples: int


class AicOut(Answer):
    aic: float
    n_samples: int


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


# -- model selection and jobs --------------------------------------------------------------------
Tags = dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]]


class GridRange(Strict_):
    """Integers from ``min`` to ``max`` (both included) in steps of ``step``."""

    min: int = Field(ge=0)
    max: int = Field(ge=0)
    step: int = Field(1, ge=1)


class RegisterBest(Strict_):
    name: ModelName
    criterion: str = Field(
        description="Which best candidate to register: `bic`, `aic`, `log_likelihood` "
        "(Gaussian mixture); `silhouette`, `davies_bouldin`, `calinski_harabasz`, `inertia` "
        "(the elbow) for k-means; `lower_bound`, `log_likelihood` (Bayesian mixture); "
        "`silhouette`, `davies_bouldin`, `calinski_harabasz` (birch, agglomerative, hdbscan).",
        examples=["bic"],
    )
    description: str | None = Field(None, max_length=2000)
    tags: Tags = Field(default_factory=dict, max_length=50)


class ModelSelectionRequest(Strict_):
    """Fit every candidate of a grid and report them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "algorithm": "kmeans",
                    "params": {"n_init": 10, "random_state": 42},
                    "grid": {"n_clusters": {"min": 2, "max": 5}},
                    "data": {"instances": SELECTION_EXAMPLE_ROWS},
                },
                {
                    "algorithm": "gaussian_mixture",
                    "params": {"random_state": 42},
                    "grid": {"n_components": [1, 2], "covariance_type": ["full", "diag"]},
                    "data": {"instances": SELECTION_EXAMPLE_ROWS},
                    "register": {"name": "line-7-selected", "criterion": "bic"},
                },
            ]
        },
    )

    algorithm: str = Field(
        description="`kmeans`, `minibatch_kmeans`, `gaussian_mixture`, "
        "`bayesian_gaussian_mixture`, `birch`, `agglomerative` or `hdbscan`."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters every candidate shares."
    )
    grid: dict[str, Annotated[list[Any], Field(min_length=1, max_length=1000)] | GridRange] = Field(
        description="Per hyperparameter, a list of values or an integer range; the "
        "candidates are every combination.",
        min_length=1,
        max_length=8,
    )
    preprocessing: list[PreprocessingStep] = Field(default_factory=list, max_length=8)
    anomaly: AnomalySettings = Field(default_factory=AnomalySettings)
    data: Rows
    feature_names: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = None
    silhouette_diagrams: bool = Field(
        True, description="k-means: add each candidate's silhouette diagram data."
    )
    # "register" is the JSON name; as an attribute it would shadow ABCMeta.register.
    register_best: RegisterBest | None = Field(
        None,
        alias="register",
        description="Register the best candidate under `criterion` as a new version.",
    )
    wait: bool = Field(True, description="As for training: `false` answers 202 with the job.")
    retryable: bool = Field(
        True, description="As for training: whether another replica may run it again."
    )


class JobOwnerOut(BaseModel):
    id: str = Field(description="`host|pid|start`.")
    host: str
    pid: int | None
    started_at: str | None = Field(description="When that process started (ISO 8601).")


class ProgressOut(BaseModel):
    done: int
    total: int


class JobOut(BaseModel):
    id: str
    kind: Literal["training", "model_selection"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model_name: str | None
    algorithm: str
    progress: ProgressOut = Field(description="Fits done of total (grid candidates).")
    request: dict[str, Any] = Field(description="A summary of what was asked.")
    result: dict[str, Any] | None = Field(
        description="Training: `{model, version}`. Model selection: the report."
    )
    error: dict[str, Any] | None = Field(description="`code`, `status`, `detail` on failure.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: JobOwnerOut | None = Field(
        description="The replica that runs (or ran) the job; null while it waits in the queue "
        "for any replica."
    )
    lease_expires_at: datetime | None = Field(
        description="Until when the owner holds the job unless it renews its lease (every "
        "LLOYD_JOB_HEARTBEAT_SECONDS); past it, another replica takes the job over."
    )
    attempts: int = Field(description="How many times a replica has started the job.")
    retryable: bool = Field(description="Whether another replica may run it again.")
    cancel_requested: bool = Field(
        description="A client asked to cancel it; its owner stops it at its next heartbeat."
    )


class JobPage(Page):
    items: list[JobOut]


class SelectionReport(BaseModel):
    """Every candidate with its metrics, the best under each criterion, and the elbow."""

    algorithm: str
    n_candidates: int
    candidates: list[dict[str, Any]] = Field(
        description="`index`, the grid `params`, `metrics` and (k-means) `silhouette_diagram`."
    )
    criteria: dict[str, str] = Field(description="Criterion -> `min`, `max` or `elbow`.")
    best: dict[str, Any] = Field(description="Per criterion: the best candidate.")
    elbow: dict[str, Any] | None = Field(
        None,
        description="k-means: the k at the elbow of the inertia curve, its candidate `index`, "
        "the `method` and the `curve` it was read from (k, inertia, slope ratio per k).",
    )
    registered: dict[str, Any] | None = Field(
        None, description="`{model, version, criterion}` of the registered candidate."
    )
