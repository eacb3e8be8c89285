"""What the client returns: frozen dataclasses, numpy arrays for everything per row, each built
from the API's document by its ``from_document``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Document = Mapping[str, Any]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def _floats(values: object) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def _ints(values: object) -> NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64)


def _time(value: object) -> datetime:
    return datetime.fromisoformat(str(value))


def _maybe_time(value: object) -> datetime | None:
    return None if value is None else _time(value)


# -- the registry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelVersion:
    """One immutable trained version (``GET /v1/models/{name}/versions/{version}``)."""

    name: str
    version: int
    aliases: tuple[str, ...]
    algorithm: str
    params: dict[str, Any]
    preprocessing: tuple[dict[str, Any], ...]
    feature_names: tuple[str, ...] | None
    n_samples: int
    n_features: int
    metrics: dict[str, Any]
    anomaly: dict[str, Any]
    operations: tuple[str, ...]
    artifact_sha256: str
    artifact_size_bytes: int
    library_versions: dict[str, str]
    serving_library_versions: dict[str, str]
    version_drift: bool
    training_seconds: float
    created_at: datetime
    description: str | None
    tags: dict[str, str]
    document: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_document(cls, doc: Document) -> ModelVersion:
        names = doc.get("feature_names")
        return cls(
            name=doc["name"],
            version=int(doc["version"]),
            aliases=tuple(doc.get("aliases", ())),
            algorithm=doc["algorithm"],
            params=dict(doc.get("params", {})),
            preprocessing=tuple(dict(step) for step in doc.get("preprocessing", ())),
            feature_names=None if names is None else tuple(names),
            n_samples=int(doc["n_samples"]),
            n_features=int(doc["n_features"]),
            metrics=dict(doc.get("metrics", {})),
            anomaly=dict(doc.get("anomaly", {})),
            operations=tuple(doc.get("operations", ())),
            artifact_sha256=doc["artifact"]["sha256"],
            artifact_size_bytes=int(doc["artifact"]["size_bytes"]),
            library_versions=dict(doc.get("library_versions", {})),
            serving_library_versions=dict(doc.get("serving_library_versions", {})),
            version_drift=bool(doc.get("version_drift", False)),
            training_seconds=float(doc.get("training_seconds", 0.0)),
            created_at=_time(doc["created_at"]),
            description=doc.get("description"),
            tags=dict(doc.get("tags", {})),
            document=dict(doc),
        )


@dataclass(frozen=True)
class Model:
    """A model name: its latest version, how many it has, and its aliases."""

    name: str
    created_at: datetime
    latest_version: int | None
    n_versions: int
    aliases: dict[str, int]
    algorithm: str | None

    @classmethod
    def from_document(cls, doc: Document) -> Model:
        return cls(
            name=doc["name"],
            created_at=_time(doc["created_at"]),
            latest_version=doc.get("latest_version"),
            n_versions=int(doc["n_versions"]),
            aliases={str(k): int(v) for k, v in doc.get("aliases", {}).items()},
            algorithm=doc.get("algorithm"),
        )


@dataclass(frozen=True)
class Deleted:
    """What a delete removed: the model's name and the version numbers deleted."""

    name: str
    deleted_versions: tuple[int, ...]

    @classmethod
    def from_document(cls, doc: Document) -> Deleted:
        return cls(name=doc["name"], deleted_versions=tuple(doc["deleted_versions"]))


@dataclass(frozen=True)
class Algorithm:
    """An entry of the catalog (``GET /v1/algorithms``)."""

    name: str
    family: str
    wraps: str
    summary: str
    operations: tuple[str, ...]
    params_schema: dict[str, Any]

    @classmethod
    def from_document(cls, doc: Document) -> Algorithm:
        return cls(
            name=doc["name"],
            family=doc["family"],
            wraps=doc["wraps"],
            summary=doc.get("summary", ""),
            operations=tuple(doc.get("operations", ())),
            params_schema=dict(doc.get("params_schema", {})),
        )


# -- jobs and model selection ----------------------------------------------------------------------
@dataclass(frozen=True)
class JobInfo:
    """A job as ``GET /v1/jobs/{id}`` shows it. ``result`` is ``{model, version}`` for a
    training, the selection report for a model selection; ``error`` the problem it failed with."""

    id: str
    kind: Literal["training", "model_selection"]
    status: JobStatus
    model_name: str | None
    algorithm: str
    progress_done: int
    progress_total: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    retryable: bool
    cancel_requested: bool
    document: dict[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_document(cls, doc: Document) -> JobInfo:
        progress = doc.get("progress") or {}
        return cls(
            id=doc["id"],
            kind=doc["kind"],
            status=doc["status"],
            model_name=doc.get("model_name"),
            algorithm=doc.get("algorithm", ""),
            progress_done=int(progress.get("done", 0)),
            progress_total=int(progress.get("total", 0)),
            result=doc.get("result"),
            error=doc.get("error"),
            created_at=_time(doc["created_at"]),
            started_at=_maybe_time(doc.get("started_at")),
            finished_at=_maybe_time(doc.get("finished_at")),
            attempts=int(doc.get("attempts", 0)),
            retryable=bool(doc.get("retryable", True)),
            cancel_requested=bool(doc.get("cancel_requested", False)),
            document=dict(doc),
        )


@dataclass(frozen=True)
class Registered:
    """The candidate a model selection registered as a new version."""

    model: str
    version: int
    criterion: str
    index: int


@dataclass(frozen=True)
class SelectionReport:
    """Every candidate of a grid with its metrics, the best under each criterion (``criteria``
    says whether that is the ``min``, ``max`` or ``elbow``), and what was registered."""

    algorithm: str
    n_candidates: int
    candidates: tuple[dict[str, Any], ...]
    criteria: dict[str, str]
    best: dict[str, Any]
    elbow: dict[str, Any] | None
    registered: Registered | None
    document: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_document(cls, doc: Document) -> SelectionReport:
        registered = doc.get("registered")
        return cls(
            algorithm=doc["algorithm"],
            n_candidates=int(doc["n_candidates"]),
            candidates=tuple(dict(c) for c in doc.get("candidates", ())),
            criteria=dict(doc.get("criteria", {})),
            best=dict(doc.get("best", {})),
            elbow=doc.get("elbow"),
            registered=None
            if registered is None
            else Registered(
                model=registered["model"],
                version=int(registered["version"]),
                criterion=registered["criterion"],
                index=int(registered.get("index", -1)),
            ),
            document=dict(doc),
        )


# -- inference -------------------------------------------------------------------------------------
# Arrays make ``==`` ambiguous: results holding them compare by identity (eq=False).
@dataclass(frozen=True, eq=False)
class Prediction:
    """``predict``: the cluster of each row (``-1``: noise, where the algorithm has it)."""

    labels: NDArray[np.int64]
    model: str
    version: int

    @classmethod
    def from_document(cls, doc: Document) -> Prediction:
        return cls(_ints(doc["labels"]), doc["model"], int(doc["version"]))


@dataclass(frozen=True, eq=False)
class Probabilities:
    """``predict_proba``: rows x ``classes``."""

    probabilities: NDArray[np.float64]
    classes: NDArray[np.int64]
    model: str
    version: int

    @classmethod
    def from_document(cls, doc: Document) -> Probabilities:
        return cls(
            _floats(doc["probabilities"]), _ints(doc["classes"]), doc["model"], int(doc["version"])
        )


@dataclass(frozen=True, eq=False)
class Distances:
    """``transform``: the distance from each row to every centroid (rows x clusters)."""

    distances: NDArray[np.float64]
    model: str
    version: int

    @classmethod
    def from_document(cls, doc: Document) -> Distances:
        return cls(_floats(doc["distances"]), doc["model"], int(doc["version"]))


@dataclass(frozen=True, eq=False)
class Scores:
    """``score_samples``: scikit-learn's, higher is more normal (log-density for mixtures)."""

    scores: NDArray[np.float64]
    model: str
    version: int

    @classmethod
    def from_document(cls, doc: Document) -> Scores:
        return cls(_floats(doc["scores"]), doc["model"], int(doc["version"]))


@dataclass(frozen=True)
class Score:
    """``score``: minus the inertia for k-means, the mean log-likelihood for mixtures."""

    score: float
    n_samples: int
    model: str
    version: int

    @classmethod
    def from_document(cls, doc: Document) -> Score:
        return cls(float(doc["score"]), int(doc["n_samples"]), doc["model"], int(doc["version"]))


@dataclass(frozen=True)
class Criterion:
    """``bic`` or ``aic`` (``name``), on the posted rows or, with none, the training set."""

    name: Literal["bic", "aic"]
    value: float
    n_samples: int
    model: str
    version: int

    @classmethod
    def from_document(cls, name: Literal["bic", "aic"], doc: Document) -> Criterion:
        return cls(name, float(doc[name]), int(doc["n_samples"]), doc["model"], int(doc["version"]))


@dataclass(frozen=True)
class Contribution:
    """One feature's part in a row's anomaly score (``anomalies(..., explain=True)``)."""

    feature: str | int
    value: float
    contribution: float
    share: float


@dataclass(frozen=True)
class Explanation:
    method: Literal["exact", "median_substitution"]
    decomposes: str


@dataclass(frozen=True, eq=False)
class Anomalies:
    """``anomalies``: per row its score (higher is more anomalous), whether it is above
    ``threshold``, and its percentile among the training rows; with ``explain``, the
    ``contributions`` of the top features of each row."""

    anomaly_scores: NDArray[np.float64]
    is_anomaly: NDArray[np.bool_]
    percentiles: NDArray[np.float64]
    threshold: float
    threshold_source: Literal["stored", "contamination", "threshold"]
    contamination: float | None
    score_direction: str
    model: str
    version: int
    explanation: Explanation | None = None
    contributions: tuple[tuple[Contribution, ...], ...] | None = None

    @classmethod
    def from_document(cls, doc: Document) -> Anomalies:
        explanation = doc.get("explanation")
        contributions = doc.get("contributions")
        contamination = doc.get("contamination")
        return cls(
            anomaly_scores=_floats(doc["anomaly_scores"]),
            is_anomaly=np.asarray(doc["is_anomaly"], dtype=np.bool_),
            percentiles=_floats(doc["percentiles"]),
            threshold=float(doc["threshold"]),
            threshold_source=doc["threshold_source"],
            contamination=None if contamination is None else float(contamination),
            score_direction=doc.get("score_direction", ""),
            model=doc["model"],
            version=int(doc["version"]),
            explanation=None
            if explanation is None
            else Explanation(explanation["method"], explanation["decomposes"]),
            contributions=None
            if contributions is None
            else tuple(tuple(Contribution(**c) for c in row) for row in contributions),
        )


@dataclass(frozen=True, eq=False)
class Sample:
    """``sample``: rows drawn from a mixture (original feature space) and their components."""

    instances: NDArray[np.float64]
    components: NDArray[np.int64]
    model: str
    version: int

    @classmethod
    def from_document(cls, doc: Document) -> Sample:
        return cls(
            _floats(doc["instances"]), _ints(doc["components"]), doc["model"], int(doc["version"])
        )
