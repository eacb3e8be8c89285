"""The request core Client and AsyncClient share, free of I/O: a request described as data
(``Call``), an operation written as a generator of steps (``Flow``: it yields a ``Call`` and is
sent back the ``httpx.Response``, or the ``httpx.TransportError`` sending it raised; it yields
a ``Sleep`` and is sent back None), and the retry policy. The two clients only perform steps,
one blocking, one awaiting: every decision is made here, once."""

from __future__ import annotations

import random
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import httpx

from lloyd_client.errors import ConnectionFailed, LloydError, Timeout, error_from_problem

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One HTTP request. ``idempotent``: sending it twice does what sending it once does (GET,
    PUT, DELETE, the read-only inference POSTs), so it may be sent again after a connection
    error; a training or a model selection never is (the API has no idempotency key)."""

    method: str
    path: str
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str | int] | None = None
    idempotent: bool = True


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step: TypeAlias = Call | Sleep
Flow: TypeAlias = Generator[Step, object, T]

# Failures of the connection itself: the request may not have reached the server, or the
# server went away mid-answer (restarted; a stale keep-alive connection). A timeout is not
# one: the server may still be working on the request.
RETRIED_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``retries`` more attempts of an idempotent call after a connection error,
    waiting ``backoff`` seconds, then twice as long each time up to ``max_backoff`` (each wait
    drawn between half and all of that, so that clients do not retry in lockstep)."""

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2.0**attempt)
        return ceiling * (0.5 + 0.5 * random.random())


def send(call: Call, policy: RetryPolicy) -> Flow[httpx.Response]:
    """``call`` sent (again, while the policy allows it) until it gets an answer; an error
    answer is raised as the exception of its problem code."""
    attempt = 0
    while True:
        outcome = yield call
        if isinstance(outcome, httpx.Response):
            if outcome.is_error:
                raise error_from_response(outcome)
            return outcome
        assert isinstance(outcome, httpx.TransportError), outcome
        if call.idempotent and isinstance(outcome, RETRIED_ERRORS) and attempt < policy.retries:
            yield Sleep(policy.delay(attempt))
            attempt += 1
            continue
        raise no_answer(call, outcome, attempt + 1) from outcome


def no_answer(call: Call, error: httpx.TransportError, attempts: int) -> Exception:
    what = f"{call.method} {call.path}"
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
        return Timeout(f"{what}: no answer within the timeout ({type(error).__name__})")
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return ConnectionFailed(f"{what}: {type(error).__name__}{tries}: {error}")


def error_from_response(response: httpx.Response) -> LloydError:
    """The exception of an error answer: of its problem code, or ``LloydError`` for an answer
    that is no problem document (a proxy's error page)."""
    problem: Any = None
    if "json" in response.headers.get("content-type", ""):
        try:
            problem = response.json()
        except ValueError:
            problem = None
    if not isinstance(problem, dict):
        problem = {
            "status": response.status_code,
            "title": response.reason_phrase,
            "detail": response.text[:1000],
        }
    return error_from_problem(
        problem, status=response.status_code, request_id=response.headers.get("x-request-id")
    )


def finished(value: T) -> Flow[T]:
    """A flow that needs no request: ``value`` at once."""
    yield from ()
    return value
