"""What the client raises: one exception class per problem ``code`` the API answers with, and
the two failures that get no answer at all (the connection failed, or the answer was too slow).

Every class below ``LloydError`` carries the problem document (RFC 9457) the server sent. A code
this table does not know is raised as ``LloydError`` itself, so a newer server never breaks an
older client. tests/client keeps the table in step with the codes the server can send.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


class LloydClientError(Exception):
    """Base of everything this package raises."""


class LloydError(LloydClientError):
    """The API answered with a problem document (``application/problem+json``).

    ``problem`` is the whole document, fields beyond the standard ones included (an
    ``unsupported_operation`` lists the ``supported`` operations; a ``forbidden`` names the
    ``required_scope``). ``request_id`` is the answer's ``X-Request-ID``: quote it when
    reporting a server error.
    """

    def __init__(
        self,
        problem: Mapping[str, Any],
        *,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.problem: dict[str, Any] = dict(problem)
        given = self.problem.get("status")
        self.status: int = status if status is not None else given if isinstance(given, int) else 0
        code = self.problem.get("code")
        self.code: str | None = code if isinstance(code, str) else None
        self.title: str = str(self.problem.get("title", ""))
        self.detail: str = str(self.problem.get("detail", ""))
        errors = self.problem.get("errors")
        self.errors: list[dict[str, Any]] | None = (
            list(errors) if isinstance(errors, list) else None
        )
        self.request_id = request_id
        super().__init__(f"{self.status} {self.code or self.title}: {self.detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (multiprocessing, concurrent.futures), though __init__ takes no message.
        return (type(self), (self.problem,), {"status": self.status, "request_id": self.request_id})


# -- grouping bases: a status whose codes share a meaning -----------------------------------------
class Conflict(LloydError):
    """409: the resource is not in a state that allows the request."""


class Unprocessable(LloydError):
    """422: the request is well formed, but its content cannot be used."""


class ServerError(LloydError):
    """500: the server, or a job's worker, failed."""


# -- one class per code ----------------------------------------------------------------------------
class BadRequest(LloydError):
    """400 ``bad_request``."""


class MalformedJson(BadRequest):
    """400 ``malformed_json``: the body is not JSON."""


class Unauthorized(LloydError):
    """401 ``unauthorized``: no API key, or one the server does not know."""


class Forbidden(LloydError):
    """403 ``forbidden``: the key lacks the scope (``read``, ``write``) the endpoint needs."""


class NotFound(LloydError):
    """404 ``not_found``, and the base of every more precise 404."""


class ModelNotFound(NotFound):
    """404 ``model_not_found``."""


class VersionNotFound(NotFound):
    """404 ``version_not_found``."""


class AliasNotFound(NotFound):
    """404 ``alias_not_found``."""


class AlgorithmNotFound(NotFound):
    """404 ``algorithm_not_found``."""


class JobNotFound(NotFound):
    """404 ``job_not_found``."""


class MethodNotAllowed(LloydError):
    """405 ``method_not_allowed``."""


class NotAcceptable(LloydError):
    """406 ``not_acceptable``: e.g. ``.npy`` asked for an explanation (JSON only)."""


class ArtifactIntegrity(Conflict):
    """409 ``artifact_integrity``: the stored artifact is missing or fails its sha256."""


class VersionDrift(Conflict):
    """409 ``version_drift``: trained with other scikit-learn (or numpy major) versions."""


class JobFinished(Conflict):
    """409 ``job_finished``: cancelling a job that already ended."""


class JobCancelled(Conflict):
    """409 ``job_cancelled``: the job was cancelled (while a client waited for it)."""


class JobNotHeld(Conflict):
    """409 ``job_not_held``: the job's result was not committed (cancelled or taken over)."""


class PayloadTooLarge(LloydError):
    """413 ``payload_too_large``: too many rows, cells or bytes."""


class UnsupportedMediaType(LloydError):
    """415 ``unsupported_media_type``."""


class InvalidInput(Unprocessable):
    """422 ``invalid_input``: the rows (ragged, empty, not finite, the wrong width, ...)."""


class ValidationError(InvalidInput):
    """422 ``validation_error``: the body does not match the request's schema (a string among
    the numbers, an unknown field, ...). A kind of ``InvalidInput``: ``except InvalidInput``
    catches both."""


class InvalidParameter(Unprocessable):
    """422 ``invalid_parameter``: a hyperparameter scikit-learn refuses."""


class UnknownAlgorithm(Unprocessable):
    """422 ``unknown_algorithm``."""


class TrainingFailed(Unprocessable):
    """422 ``training_failed``: the fit itself failed on this data."""


class UnsupportedOperation(Unprocessable):
    """422 ``unsupported_operation``: ``problem["supported"]`` lists what the model does."""


class ExplanationUnavailable(Unprocessable):
    """422 ``explanation_unavailable``."""


class InternalError(ServerError):
    """500 ``internal_error``: quote ``request_id`` when reporting it."""


class JobFailed(ServerError):
    """500 ``job_failed``: a job failed for a reason not the client's (a worker died)."""


class JobTimeout(JobFailed):
    """500 ``job_timeout``: the job ran past the server's time limit."""


class JobInterrupted(JobFailed):
    """500 ``interrupted``: the server shut down (or died) while the job ran."""


ERRORS_BY_CODE: Mapping[str, type[LloydError]] = MappingProxyType(
    {
        "bad_request": BadRequest,
        "malformed_json": MalformedJson,
        "unauthorized": Unauthorized,
        "forbidden": Forbidden,
        "not_found": NotFound,
        "model_not_found": ModelNotFound,
        "version_not_found": VersionNotFound,
        "alias_not_found": AliasNotFound,
        "algorithm_not_found": AlgorithmNotFound,
        "job_not_found": JobNotFound,
        "method_not_allowed": MethodNotAllowed,
        "not_acceptable": NotAcceptable,
        "artifact_integrity": ArtifactIntegrity,
        "version_drift": VersionDrift,
        "job_finished": JobFinished,
        "job_cancelled": JobCancelled,
        "job_not_held": JobNotHeld,
        "payload_too_large": PayloadTooLarge,
        "unsupported_media_type": UnsupportedMediaType,
        "invalid_input": InvalidInput,
        "validation_error": ValidationError,
        "invalid_parameter": InvalidParameter,
        "unknown_algorithm": UnknownAlgorithm,
        "training_failed": TrainingFailed,
        "unsupported_operation": UnsupportedOperation,
        "explanation_unavailable": ExplanationUnavailable,
        "internal_error": InternalError,
        "job_failed": JobFailed,
        "job_timeout": JobTimeout,
        "interrupted": JobInterrupted,
    }
)


def error_from_problem(
    problem: Mapping[str, Any], *, status: int | None = None, request_id: str | None = None
) -> LloydError:
    """The exception of ``problem``'s code (``LloydError`` itself for a code not listed)."""
    cls = ERRORS_BY_CODE.get(str(problem.get("code")), LloydError)
    return cls(problem, status=status, request_id=request_id)


# -- no answer -------------------------------------------------------------------------------------
class ConnectionFailed(LloydClientError, ConnectionError):
    """The server could not be reached (after the retries an idempotent call gets). The httpx
    error is its ``__cause__``."""


class Timeout(LloydClientError, TimeoutError):
    """No answer in time: an HTTP request past the client's ``timeout`` (never retried: the
    server may still be working on it), or a job still running when ``wait(timeout=...)``
    gave up."""
