"""Domain errors: each carries a stable code and its HTTP status; one handler writes problems."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

Location = list[str | int]


class LloydError(Exception):
    """Base of every error the API reports on purpose."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(
        self,
        detail: str,
        *,
        at: list[str | int] | None = None,
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """``at`` is the request location of a single bad value, e.g. ``["body", "params",
        "n_clusters"]``; ``errors`` lists several."""
        super().__init__(detail)
        self.detail = detail
        if at is not None:
            errors = [{"loc": at, "msg": detail, "type": "value_error"}]
        self.errors = errors
        self.extra = extra or {}

    def relocate(self, where: Callable[[Location], Location]) -> None:
        """Translate each of its locations by ``where``: a service locates a bad value in its
        own input, a transport says where that value sits on its wire."""
        if self.errors:
            self.errors = [
                {**error, "loc": where(list(error["loc"]))} if "loc" in error else error
                for error in self.errors
            ]


class InvalidInput(LloydError):
    status, code, title = 422, "invalid_input", "Invalid input"


class InvalidParameter(LloydError):
    status, code, title = 422, "invalid_parameter", "Invalid hyperparameter"


class UnknownAlgorithm(LloydError):
    status, code, title = 422, "unknown_algorithm", "Unknown algorithm"


class TrainingFailed(LloydError):
    status, code, title = 422, "training_failed", "Training failed"


class UnsupportedOperation(LloydError):
    status, code, title = 422, "unsupported_operation", "Operation not supported"


class ExplanationUnavailable(LloydError):
    status, code, title = 422, "explanation_unavailable", "Explanation unavailable"


class PayloadTooLarge(LloydError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class Unauthorized(LloydError):
    """No API key, or one that is not configured. Answered with ``WWW-Authenticate: Bearer``."""

    status, code, title = 401, "unauthorized", "Unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="lloyd"'}


class Forbidden(LloydError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotAcceptable(LloydError):
    status, code, title = 406, "not_acceptable", "Not acceptable"


class UnsupportedMediaType(LloydError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class NotFound(LloydError):
    status, code, title = 404, "not_found", "Not found"


class ModelNotFound(NotFound):
    code, title = "model_not_found", "Model not found"


class VersionNotFound(NotFound):
    code, title = "version_not_found", "Model version not found"


class AlgorithmNotFound(NotFound):
    code, title = "algorithm_not_found", "Algorithm not found"


class AliasNotFound(NotFound):
    code, title = "alias_not_found", "Alias not found"


class ArtifactIntegrityError(LloydError):
    """The artifact on disk is missing or does not match its recorded sha256: it is never
    unpickled. The version stays listed so that an operator can see and delete it."""

    status, code, title = 409, "artifact_integrity", "Model artifact failed its integrity check"


class ArtifactMissing(ArtifactIntegrityError):
    """The artifact's file is not in the store (deleted by hand, or by a concurrent delete of
    its version, which the registry then reports as the 404 it is)."""


class VersionDrift(LloydError):
    """The artifact was written by another scikit-learn (or numpy major) version than the one
    running, and LLOYD_ALLOW_VERSION_DRIFT is off: it is not unpickled, since scikit-learn does
    not support loading a model across versions."""

    status, code, title = 409, "version_drift", "Model trained with other library versions"


class JobFinished(LloydError):
    status, code, title = 409, "job_finished", "Job already finished"


class JobCancelled(LloydError):
    status, code, title = 409, "job_cancelled", "Job cancelled"


class JobNotHeld(LloydError):
    """A job's result was not committed: its row no longer says the replica that computed it
    runs it (it was cancelled meanwhile, or taken over after that replica's lease lapsed)."""

    status, code, title = 409, "job_not_held", "Job no longer held"


class JobFailed(LloydError):
    """A job's failure that is not the client's doing (time limit, a worker that died)."""

    status, code, title = 500, "job_failed", "Job failed"


def _subclasses(cls: type[LloydError]) -> list[type[LloydError]]:
    return [cls] + [s for c in cls.__subclasses__() for s in _subclasses(c)]


def error_document(exc: LloydError) -> dict[str, Any]:
    """An error as stored with a job, or sent back from a worker process."""
    return {
        "code": exc.code,
        "status": exc.status,
        "title": exc.title,
        "detail": exc.detail,
        "errors": exc.errors,
        "extra": exc.extra,
    }


def error_from_document(document: dict[str, Any]) -> LloydError:
    """The error a stored document describes, as the class of its code."""
    by_code = {cls.code: cls for cls in _subclasses(LloydError)}
    code = document.get("code", "")
    cls = by_code.get(code, JobFailed)
    error = cls(
        document.get("detail", "the job failed"),
        errors=document.get("errors"),
        extra=document.get("extra"),
    )
    if cls is JobFailed and code:
        # A code with no class of its own (job_timeout, interrupted) is kept, so that a client
        # that waited reads the same code and status as the job.
        error.code = code
        error.status = document.get("status", error.status)
        error.title = document.get("title", error.title)
    return error
