"""Every API operation as a flow (see ``_transport``): which request it makes, how its rows are
sent (JSON below the ``.npy`` threshold, ``.npy`` above it), and what its answer becomes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx

from lloyd_client._rows import (
    JSON,
    NPY,
    REQUEST_HEADER,
    RESPONSE_HEADER,
    Rows,
    RowsLike,
    json_bytes,
    npy_bytes,
    read_npy_answer,
    read_rows,
)
from lloyd_client._transport import Call, Flow, RetryPolicy, Sleep, T, finished, send
from lloyd_client.errors import Timeout, error_from_problem
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

__version__ = "0.1.0"
DEFAULT_NPY_THRESHOLD = 10_000
PAGE_SIZE = 500
Version = int | str | None
Grid = Mapping[str, Sequence[Any] | range | Mapping[str, int]]

# Per operation, its per-row answer fields: a .npy answer's array (or structured array's
# fields), as app/api/operations.py lists them.
ROW_FIELDS: Mapping[str, tuple[str, ...]] = {
    "predict": ("labels",),
    "predict_proba": ("probabilities",),
    "transform": ("distances",),
    "score_samples": ("scores",),
    "score": ("score",),
    "anomalies": ("anomaly_scores", "is_anomaly", "percentiles"),
    "sample": ("instances", "components"),
    "bic": ("bic",),
    "aic": ("aic",),
}


def _segment(value: object) -> str:
    return quote(str(value), safe="")


def _answer(response: httpx.Response, row_fields: Sequence[str]) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith(NPY):
        header = response.headers.get(RESPONSE_HEADER)
        return read_npy_answer(response.content, header, row_fields)
    answer: dict[str, Any] = response.json()
    return answer


def _anomaly_settings(options: TrainOptions | SelectOptions) -> dict[str, Any]:
    anomaly: dict[str, Any] = {}
    if "contamination" in options:
        anomaly["contamination"] = options["contamination"]
    if "refit_without_outliers" in options:
        anomaly["refit_without_outliers"] = options["refit_without_outliers"]
    return {"anomaly": anomaly} if anomaly else {}


def _fitting_fields(options: TrainOptions | SelectOptions, rows: Rows) -> dict[str, Any]:
    """The fields a training and a selection share, as the API names them."""
    fields: dict[str, Any] = {}
    if "params" in options:
        fields["params"] = dict(options["params"])
    if "preprocessing" in options:
        fields["preprocessing"] = [dict(step) for step in options["preprocessing"]]
    names = options.get("feature_names", rows.feature_names)
    if names is not None:
        fields["feature_names"] = list(names)
    if "retryable" in options:
        fields["retryable"] = options["retryable"]
    return fields | _anomaly_settings(options)


def _grid(grid: Grid) -> dict[str, Any]:
    """A ``range`` becomes the API's integer range; anything else goes as it is."""
    document: dict[str, Any] = {}
    for name, values in grid.items():
        if isinstance(values, range) and values.step > 0 and len(values) > 0:
            document[name] = {"min": values.start, "max": values[-1], "step": values.step}
        elif isinstance(values, Mapping):
            document[name] = dict(values)
        else:
            document[name] = list(values)
    return document


def _register(options: SelectOptions) -> dict[str, Any]:
    if "register" not in options:
        if "criterion" in options or "description" in options or "tags" in options:
            raise ValueError("'criterion', 'description' and 'tags' describe 'register'")
        return {}
    register: dict[str, Any] = {"name": options["register"]}
    if "criterion" in options:
        register["criterion"] = options["criterion"]
    if "description" in options:
        register["description"] = options["description"]
    if "tags" in options:
        register["tags"] = dict(options["tags"])
    return {"register": register}


class Core:
    """The operations, for one server: its ``.npy`` threshold and retry policy."""

    def __init__(self, *, npy_threshold: int, policy: RetryPolicy) -> None:
        self.npy_threshold = npy_threshold
        self.policy = policy

    @staticmethod
    def default_headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"User-Agent": f"lloyd-client/{__version__}", "Accept": JSON}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers | dict(extra or {})

    # -- requests -------------------------------------------------------------------------------
    def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Flow[Any]:
        headers = {"Accept": JSON}
        content = None
        if body is not None:
            content = json_bytes(body)
            headers["Content-Type"] = JSON
        call = Call(method, path, content, headers, params)
        response = yield from send(call, self.policy)
        return response.json() if response.content else None

    def _pages(self, path: str, params: Mapping[str, str | int]) -> Flow[list[dict[str, Any]]]:
        items: list[dict[str, Any]] = []
        while True:
            page = yield from self._json(
                "GET", path, params={**params, "offset": len(items), "limit": PAGE_SIZE}
            )
            items.extend(page["items"])
            if not page["items"] or len(items) >= page["total"]:
                return items

    def as_npy(self, rows: Rows) -> bool:
        """Whether ``rows`` go as ``.npy``: more values than the threshold, or values JSON
        cannot carry (NaN, infinity: the server then says where they are)."""
        return rows.matrix is not None and (rows.size > self.npy_threshold or not rows.finite)

    @staticmethod
    def _body(
        rows: Rows | None,
        fields: Mapping[str, Any],
        *,
        npy: bool,
        records: bool = False,
        under: str | None = None,
    ) -> tuple[bytes | None, dict[str, str]]:
        """The request's body and its content headers: ``rows`` as ``.npy`` (the other
        ``fields`` in the Lloyd-Request header) or in the JSON document (``under`` a key, for
        a training's ``data``), as ``instances`` or as ``records``."""
        if rows is None:
            return (json_bytes(fields), {"Content-Type": JSON}) if fields else (None, {})
        if npy:
            assert rows.matrix is not None
            headers = {"Content-Type": NPY}
            if fields:
                headers[REQUEST_HEADER] = json_bytes(fields).decode()
            return npy_bytes(rows.matrix), headers
        data = {"records": rows.records()} if records else {"instances": rows.instances()}
        return json_bytes({**fields, **({under: data} if under else data)}), {"Content-Type": JSON}

    # -- the registry ---------------------------------------------------------------------------
    def algorithms(self) -> Flow[list[Algorithm]]:
        documents = yield from self._json("GET", "/v1/algorithms")
        return [Algorithm.from_document(d) for d in documents]

    def models(self) -> Flow[list[Model]]:
        documents = yield from self._pages("/v1/models", {})
        return [Model.from_document(d) for d in documents]

    def model(self, name: str) -> Flow[Model]:
        document = yield from self._json("GET", f"/v1/models/{_segment(name)}")
        return Model.from_document(document)

    def versions(self, name: str) -> Flow[list[ModelVersion]]:
        documents = yield from self._pages(f"/v1/models/{_segment(name)}/versions", {})
        return [ModelVersion.from_document(d) for d in documents]

    @staticmethod
    def _version_path(name: str, version: Version) -> str:
        number_or_alias = "latest" if version is None else version
        return f"/v1/models/{_segment(name)}/versions/{_segment(number_or_alias)}"

    def model_version(self, name: str, version: Version) -> Flow[ModelVersion]:
        document = yield from self._json("GET", self._version_path(name, version))
        return ModelVersion.from_document(document)

    def parameters(self, name: str, version: Version) -> Flow[dict[str, Any]]:
        document = yield from self._json("GET", self._version_path(name, version) + "/parameters")
        return dict(document["parameters"])

    def set_alias(self, name: str, alias: str, version: int) -> Flow[ModelVersion]:
        path = f"/v1/models/{_segment(name)}/aliases/{_segment(alias)}"
        document = yield from self._json("PUT", path, body={"version": version})
        return ModelVersion.from_document(document)

    def delete_alias(self, name: str, alias: str) -> Flow[None]:
        yield from self._json("DELETE", f"/v1/models/{_segment(name)}/aliases/{_segment(alias)}")

    def delete(self, name: str, version: Version) -> Flow[Deleted]:
        path = f"/v1/models/{_segment(name)}"
        if version is not None:
            path = self._version_path(name, version)
        document = yield from self._json("DELETE", path)
        return Deleted.from_document(document)

    # -- jobs -----------------------------------------------------------------------------------
    def job(self, job_id: str) -> Flow[JobInfo]:
        document = yield from self._json("GET", f"/v1/jobs/{_segment(job_id)}")
        return JobInfo.from_document(document)

    def jobs(self, filters: Mapping[str, str | None]) -> Flow[list[JobInfo]]:
        given = {key: value for key, value in filters.items() if value is not None}
        documents = yield from self._pages("/v1/jobs", given)
        return [JobInfo.from_document(d) for d in documents]

    def cancel(self, job_id: str) -> Flow[JobInfo]:
        document = yield from self._json("DELETE", f"/v1/jobs/{_segment(job_id)}")
        return JobInfo.from_document(document)

    def wait(
        self,
        job_id: str,
        outcome: Callable[[JobInfo], Flow[T]],
        *,
        timeout: float | None,
        seen: Callable[[JobInfo], None],
        clock: Callable[[], float],
    ) -> Flow[T]:
        """Poll the job (every 50 ms at first, then less often, up to every second) until it
        ends: its ``outcome`` when it succeeded, else its error raised as the exception of its
        code (``JobCancelled`` for a cancelled one); ``Timeout`` past ``timeout`` seconds."""
        deadline = None if timeout is None else clock() + timeout
        delay = 0.05
        while True:
            info = yield from self.job(job_id)
            seen(info)
            if info.status == "succeeded":
                return (yield from outcome(info))
            if info.finished:
                error = info.error or {"code": "job_failed", "status": 500, "detail": "failed"}
                raise error_from_problem(error)
            if deadline is not None:
                left = deadline - clock()
                if left <= 0:
                    raise Timeout(f"job {job_id} still {info.status} after {timeout} s")
                delay = min(delay, left)
            yield Sleep(delay)
            delay = min(delay * 2, 1.0)

    def trained_version(self, info: JobInfo) -> Flow[ModelVersion]:
        assert info.result is not None
        return self.model_version(info.result["model"], int(info.result["version"]))

    @staticmethod
    def selection_report(info: JobInfo) -> Flow[SelectionReport]:
        assert info.result is not None
        return finished(SelectionReport.from_document(info.result))

    def job_outcome(self, info: JobInfo) -> Flow[ModelVersion | SelectionReport]:
        if info.kind == "training":
            return (yield from self.trained_version(info))
        return (yield from self.selection_report(info))

    # -- training -------------------------------------------------------------------------------
    def train(
        self, name: str, algorithm: str, X: RowsLike, *, wait: bool, options: TrainOptions
    ) -> Flow[ModelVersion | JobInfo]:
        """The version (201), or the job (202: ``wait=False``, or a fit longer than the
        server's sync limit). Never sent twice: a training is not idempotent."""
        rows = read_rows(X)
        fields = {"name": name, "algorithm": algorithm, **_fitting_fields(options, rows)}
        if "description" in options:
            fields["description"] = options["description"]
        if "tags" in options:
            fields["tags"] = dict(options["tags"])
        content, headers = self._body(
            rows, fields | {"wait": wait}, npy=self.as_npy(rows), under="data"
        )
        call = Call("POST", "/v1/models", content, headers, idempotent=False)
        response = yield from send(call, self.policy)
        if response.status_code == 202:
            return JobInfo.from_document(response.json())
        return ModelVersion.from_document(response.json())

    def select(
        self, algorithm: str, X: RowsLike, grid: Grid, *, wait: bool, options: SelectOptions
    ) -> Flow[SelectionReport | JobInfo]:
        rows = read_rows(X)
        fields = {"algorithm": algorithm, "grid": _grid(grid), **_fitting_fields(options, rows)}
        if "silhouette_diagrams" in options:
            fields["silhouette_diagrams"] = options["silhouette_diagrams"]
        fields |= _register(options) | {"wait": wait}
        content, headers = self._body(rows, fields, npy=self.as_npy(rows), under="data")
        call = Call("POST", "/v1/model-selection", content, headers, idempotent=False)
        response = yield from send(call, self.policy)
        if response.status_code == 202:
            return JobInfo.from_document(response.json())
        return SelectionReport.from_document(response.json())

    # -- inference ------------------------------------------------------------------------------
    def _infer(
        self,
        name: str,
        operation: str,
        X: RowsLike | None,
        version: Version,
        fields: Mapping[str, Any] | None = None,
        *,
        npy_answer: bool | None = None,
    ) -> Flow[dict[str, Any]]:
        """POST ``operation`` with rows ``X`` (and ``fields``), to ``version`` (the latest when
        None). The answer comes as ``.npy`` when the rows went as ``.npy`` (or as
        ``npy_answer`` says)."""
        rows = None if X is None else read_rows(X)
        npy = rows is not None and self.as_npy(rows)
        records = rows is not None and rows.feature_names is not None
        if rows is not None and npy and records:
            # A .npy body has no column names: the frame's columns are put in the model's
            # order here, and posted to the version number read (an alias moved meanwhile
            # cannot pair them with another version's features). Columns that are not the
            # model's go as records, for the server to say which.
            model = yield from self.model_version(name, version)
            names = model.feature_names
            ordered = rows.in_order(names) if names is not None else rows
            if ordered is None:
                npy = False
            else:
                rows, version, records = ordered, model.version, False
        content, headers = self._body(rows, fields or {}, npy=npy, records=records)
        answer_npy = npy if npy_answer is None else npy_answer
        headers["Accept"] = NPY if answer_npy else JSON
        if version is None:
            path = f"/v1/models/{_segment(name)}/{operation}"
        else:
            path = f"{self._version_path(name, version)}/{operation}"
        response = yield from send(Call("POST", path, content, headers), self.policy)
        return _answer(response, ROW_FIELDS[operation])

    def predict(self, name: str, X: RowsLike, version: Version) -> Flow[Prediction]:
        answer = yield from self._infer(name, "predict", X, version)
        return Prediction.from_document(answer)

    def predict_proba(self, name: str, X: RowsLike, version: Version) -> Flow[Probabilities]:
        answer = yield from self._infer(name, "predict_proba", X, version)
        return Probabilities.from_document(answer)

    def transform(self, name: str, X: RowsLike, version: Version) -> Flow[Distances]:
        answer = yield from self._infer(name, "transform", X, version)
        return Distances.from_document(answer)

    def score_samples(self, name: str, X: RowsLike, version: Version) -> Flow[Scores]:
        answer = yield from self._infer(name, "score_samples", X, version)
        return Scores.from_document(answer)

    def score(self, name: str, X: RowsLike, version: Version) -> Flow[Score]:
        answer = yield from self._infer(name, "score", X, version, npy_answer=False)
        return Score.from_document(answer)

    def anomalies(
        self,
        name: str,
        X: RowsLike,
        version: Version,
        *,
        contamination: float | None,
        threshold: float | None,
        explain: bool,
        top_features: int | None,
    ) -> Flow[Anomalies]:
        fields: dict[str, Any] = {}
        if contamination is not None:
            fields["contamination"] = contamination
        if threshold is not None:
            fields["threshold"] = threshold
        if explain:
            fields["explain"] = True
        if top_features is not None:
            fields["top_features"] = top_features
        # Explanations are JSON only (the server answers .npy requests for them with 406).
        npy_answer = False if explain else None
        answer = yield from self._infer(
            name, "anomalies", X, version, fields, npy_answer=npy_answer
        )
        return Anomalies.from_document(answer)

    def sample(
        self, name: str, n_samples: int, random_state: int | None, version: Version
    ) -> Flow[Sample]:
        fields: dict[str, Any] = {"n_samples": n_samples}
        if random_state is not None:
            fields["random_state"] = random_state
        answer = yield from self._infer(
            name, "sample", None, version, fields, npy_answer=n_samples > self.npy_threshold
        )
        return Sample.from_document(answer)

    def criterion(
        self, which: Literal["bic", "aic"], name: str, X: RowsLike | None, version: Version
    ) -> Flow[Criterion]:
        answer = yield from self._infer(name, which, X, version, npy_answer=False)
        return Criterion.from_document(which, answer)
