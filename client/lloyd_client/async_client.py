"""``AsyncClient``: the asyncio client, and ``AsyncJob``, a training or model selection it
started. The same operations as ``Client``, from the same flows (``_core``), awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Literal, Unpack, cast, overload

import httpx

from lloyd_client._core import DEFAULT_NPY_THRESHOLD, Core, Grid, Version
from lloyd_client._rows import RowsLike
from lloyd_client._transport import Call, Flow, RetryPolicy, Sleep, T
from lloyd_client.options import SelectOptions, TrainOptions
from lloyd_client.results import (
    Algorithm,
    Anomalies,
    Criterion,
    Deleted,
    Distances,
    JobInfo,
    Model,
    ModelVersion,
    Prediction,
    Probabilities,
    Sample,
    Score,
    Scores,
    SelectionReport,
)


class AsyncJob(Generic[T]):
    """A job on the server: a training (``AsyncJob[ModelVersion]``) or a model selection
    (``AsyncJob[SelectionReport]``). ``info`` is the job as last read."""

    def __init__(
        self, client: AsyncClient, info: JobInfo, outcome: Callable[[JobInfo], Flow[T]]
    ) -> None:
        self._client = client
        self._outcome = outcome
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    def __repr__(self) -> str:
        return f"AsyncJob({self.info.id!r}, kind={self.info.kind!r}, status={self.info.status!r})"

    def _seen(self, info: JobInfo) -> None:
        self.info = info

    async def refresh(self) -> JobInfo:
        """Read the job again."""
        self.info = await self._client._run(self._client._core.job(self.id))
        return self.info

    async def wait(self, timeout: float | None = None) -> T:
        """Wait until the job ends: the trained version or the selection report; the job's
        error raised as its exception (``JobCancelled``, ``TrainingFailed``, ...) when it did
        not succeed; ``Timeout`` when it still runs after ``timeout`` seconds."""
        flow = self._client._core.wait(
            self.id, self._outcome, timeout=timeout, seen=self._seen, clock=time.monotonic
        )
        return await self._client._run(flow)

    async def cancel(self) -> JobInfo:
        """Cancel the job (``JobFinished`` if it already ended). The answer's job is
        ``cancelled``, or still running with ``cancel_requested`` while another replica
        stops it."""
        self.info = await self._client._run(self._client._core.cancel(self.id))
        return self.info


class AsyncClient:
    """``Client``, for asyncio: every method is a coroutine, ``AsyncJob`` its jobs. Use it as
    ``async with AsyncClient(...) as lloyd:`` or call ``aclose()``.

    A Lloyd server at ``base_url``: every operation of its ``/v1`` API.

    ``api_key``: sent as ``Authorization: Bearer``. ``timeout``: seconds each HTTP request may
    take to connect, send and answer (keep it above the server's LLOYD_SYNC_TIMEOUT_SECONDS, 30
    by default, after which a waiting training answers with its job, which is then polled).
    ``retries``/``backoff``: idempotent calls are sent again after a connection error, up to
    ``retries`` times, waiting ``backoff`` seconds, doubling up to 2 s. ``npy_threshold``: rows
    holding more values than this go as ``.npy`` (and their answer comes back as ``.npy``);
    fewer go as JSON. ``headers`` are added to every request; ``event_hooks`` go to httpx.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.1,
        npy_threshold: int = DEFAULT_NPY_THRESHOLD,
        headers: Mapping[str, str] | None = None,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        self._core = Core(npy_threshold=npy_threshold, policy=RetryPolicy(retries, backoff))
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=Core.default_headers(api_key, headers),
            timeout=timeout,
            event_hooks=event_hooks,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- performing a flow ----------------------------------------------------------------------
    async def _perform(self, call: Call) -> httpx.Response | httpx.TransportError:
        request = self._http.build_request(
            call.method, call.path, content=call.content, headers=call.headers, params=call.params
        )
        try:
            return await self._http.send(request)
        except httpx.TransportError as error:
            return error

    async def _run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(await self._perform(step))
        except StopIteration as done:
            return cast(T, done.value)
        finally:
            flow.close()

    # -- training -------------------------------------------------------------------------------
    @overload
    async def train(
        self,
        name: str,
        algorithm: str,
        X: RowsLike,
        *,
        wait: Literal[True] = ...,
        **options: Unpack[TrainOptions],
    ) -> ModelVersion: ...
    @overload
    async def train(
        self,
        name: str,
        algorithm: str,
        X: RowsLike,
        *,
        wait: Literal[False],
        **options: Unpack[TrainOptions],
    ) -> AsyncJob[ModelVersion]: ...
    @overload
    async def train(
        self, name: str, algorithm: str, X: RowsLike, *, wait: bool, **options: Unpack[TrainOptions]
    ) -> ModelVersion | AsyncJob[ModelVersion]: ...
    async def train(
        self,
        name: str,
        algorithm: str,
        X: RowsLike,
        *,
        wait: bool = True,
        **options: Unpack[TrainOptions],
    ) -> ModelVersion | AsyncJob[ModelVersion]:
        """Train a new version of model ``name`` on rows ``X`` (see ``TrainOptions``). With
        ``wait`` (the default) the trained version, however long the fit takes; without, the
        ``AsyncJob`` at once."""
        started = await self._run(self._core.train(name, algorithm, X, wait=wait, options=options))
        if isinstance(started, ModelVersion):
            return started
        job = AsyncJob(self, started, self._core.trained_version)
        return await job.wait() if wait else job

    @overload
    async def select(
        self,
        algorithm: str,
        X: RowsLike,
        grid: Grid,
        *,
        wait: Literal[True] = ...,
        **options: Unpack[SelectOptions],
    ) -> SelectionReport: ...
    @overload
    async def select(
        self,
        algorithm: str,
        X: RowsLike,
        grid: Grid,
        *,
        wait: Literal[False],
        **options: Unpack[SelectOptions],
    ) -> AsyncJob[SelectionReport]: ...
    @overload
    async def select(
        self,
        algorithm: str,
        X: RowsLike,
        grid: Grid,
        *,
        wait: bool,
        **options: Unpack[SelectOptions],
    ) -> SelectionReport | AsyncJob[SelectionReport]: ...
    async def select(
        self,
        algorithm: str,
        X: RowsLike,
        grid: Grid,
        *,
        wait: bool = True,
        **options: Unpack[SelectOptions],
    ) -> SelectionReport | AsyncJob[SelectionReport]:
        """Model selection: fit every candidate of ``grid`` (per hyperparameter a list of
        values, or a ``range``) and report them; with ``register=name, criterion=...`` the best
        becomes a new version."""
        started = await self._run(self._core.select(algorithm, X, grid, wait=wait, options=options))
        if isinstance(started, SelectionReport):
            return started
        job = AsyncJob(self, started, self._core.selection_report)
        return await job.wait() if wait else job

    async def job(self, job_id: str) -> AsyncJob[ModelVersion | SelectionReport]:
        """A job by its id (from ``Job.id``, or a 202's Location)."""
        return AsyncJob(self, await self._run(self._core.job(job_id)), self._core.job_outcome)

    async def jobs(
        self, *, status: str | None = None, kind: str | None = None, model: str | None = None
    ) -> list[JobInfo]:
        """Jobs, newest first, optionally only those of a ``status``, ``kind`` or ``model``."""
        return await self._run(self._core.jobs({"status": status, "kind": kind, "model": model}))

    # -- the registry ---------------------------------------------------------------------------
    async def algorithms(self) -> list[Algorithm]:
        return await self._run(self._core.algorithms())

    async def models(self) -> list[Model]:
        """Every model, by name."""
        return await self._run(self._core.models())

    async def model(self, name: str) -> Model:
        return await self._run(self._core.model(name))

    async def versions(self, name: str) -> list[ModelVersion]:
        """Every version of model ``name``, oldest first."""
        return await self._run(self._core.versions(name))

    async def model_version(self, name: str, version: Version = None) -> ModelVersion:
        """One version: a number, an alias, or the latest (None)."""
        return await self._run(self._core.model_version(name, version))

    async def parameters(self, name: str, version: Version = None) -> dict[str, Any]:
        """The fitted parameters: centroids; weights, means, covariances; thresholds."""
        return await self._run(self._core.parameters(name, version))

    async def set_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        """Point ``alias`` at version number ``version`` (moving it if it exists)."""
        return await self._run(self._core.set_alias(name, alias, version))

    async def delete_alias(self, name: str, alias: str) -> None:
        await self._run(self._core.delete_alias(name, alias))

    async def delete(self, name: str, version: Version = None) -> Deleted:
        """Delete one version, or (``version`` None) the model with every version."""
        return await self._run(self._core.delete(name, version))

    # -- inference: ``version`` is a number, an alias, or the latest (None) ----------------------
    async def predict(self, name: str, X: RowsLike, *, version: Version = None) -> Prediction:
        return await self._run(self._core.predict(name, X, version))

    async def predict_proba(
        self, name: str, X: RowsLike, *, version: Version = None
    ) -> Probabilities:
        return await self._run(self._core.predict_proba(name, X, version))

    async def transform(self, name: str, X: RowsLike, *, version: Version = None) -> Distances:
        return await self._run(self._core.transform(name, X, version))

    async def score_samples(self, name: str, X: RowsLike, *, version: Version = None) -> Scores:
        return await self._run(self._core.score_samples(name, X, version))

    async def score(self, name: str, X: RowsLike, *, version: Version = None) -> Score:
        return await self._run(self._core.score(name, X, version))

    async def anomalies(
        self,
        name: str,
        X: RowsLike,
        *,
        version: Version = None,
        contamination: float | None = None,
        threshold: float | None = None,
        explain: bool = False,
        top_features: int | None = None,
    ) -> Anomalies:
        """Anomaly scores, flags and percentiles, against the stored threshold, or the one a
        ``contamination`` or ``threshold`` gives; ``explain`` adds each row's top features."""
        flow = self._core.anomalies(
            name,
            X,
            version,
            contamination=contamination,
            threshold=threshold,
            explain=explain,
            top_features=top_features,
        )
        return await self._run(flow)

    async def sample(
        self,
        name: str,
        n_samples: int = 1,
        *,
        random_state: int | None = None,
        version: Version = None,
    ) -> Sample:
        return await self._run(self._core.sample(name, n_samples, random_state, version))

    async def bic(
        self, name: str, X: RowsLike | None = None, *, version: Version = None
    ) -> Criterion:
        """BIC on rows ``X``, or (None) the training set's."""
        return await self._run(self._core.criterion("bic", name, X, version))

    async def aic(
        self, name: str, X: RowsLike | None = None, *, version: Version = None
    ) -> Criterion:
        """AIC on rows ``X``, or (None) the training set's."""
        return await self._run(self._core.criterion("aic", name, X, version))
