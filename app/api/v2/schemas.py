"""The Open Inference Protocol's JSON objects as pydantic models: the OpenAPI document shows
them (with examples that run as they are), metadata answers are built from them, and the
request's parameters are validated by them (``app.api.v2.wire`` reads the rest of a request)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic.config import JsonDict, JsonValue

from app.api.schemas import Contamination, Number

Datatype = Literal[
    "FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"
]
ContentType = Annotated[
    str | None,
    Field(description="Accepted and not used (MLServer's codecs send it: `np`)."),
]

EXAMPLE_ROWS: list[JsonValue] = [0.1, 2.3, 0.2, 2.1, 5.1, 0.3]
JSON_EXAMPLE: JsonDict = {
    "id": "42",
    "inputs": [{"name": "input-0", "shape": [3, 2], "datatype": "FP64", "data": EXAMPLE_ROWS}],
    "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
}
NESTED_EXAMPLE: JsonDict = {
    "inputs": [
        {
            "name": "predict",
            "shape": [2, 2],
            "datatype": "FP32",
            "data": [[0.1, 2.3], [5.1, 0.3]],
        }
    ],
}
ANOMALIES_EXAMPLE: JsonDict = {
    "inputs": [{"name": "input-0", "shape": [3, 2], "datatype": "FP64", "data": EXAMPLE_ROWS}],
    "outputs": [{"name": "anomaly_scores"}, {"name": "is_anomaly", "parameters": {}}],
    "parameters": {"contamination": 0.05},
}


class _Parameters(BaseModel):
    """Parameters are validated: one not named here is refused (a typo would otherwise go
    unnoticed)."""

    model_config = ConfigDict(extra="forbid")


class _Protocol(BaseModel):
    """The protocol's objects: fields not named here are ignored (clients send some, such as
    a request's `model_name`)."""

    model_config = ConfigDict(extra="ignore")


class V2RequestParameters(_Parameters):
    """The request's parameters."""

    contamination: Contamination | None = Field(
        None,
        description="The anomalies outputs: flag the share of training rows this "
        "contamination would flag, instead of the stored threshold. Exclusive with `threshold`.",
    )
    threshold: Number | None = Field(
        None,
        description="The anomalies outputs: flag rows scoring above this. Exclusive with "
        "`contamination`.",
    )
    binary_data_output: Annotated[bool, Strict()] = Field(
        False,
        description="Binary tensor data extension: send every output as binary data, unless "
        "an output's own `binary_data` says otherwise.",
    )
    content_type: ContentType = None

    @model_validator(mode="after")
    def _one_override(self) -> V2RequestParameters:
        if self.contamination is not None and self.threshold is not None:
            raise ValueError("send at most one of 'contamination' or 'threshold'")
        return self


class V2InputParameters(_Parameters):
    binary_data_size: Annotated[int, Strict(), Field(ge=0)] | None = Field(
        None,
        description="Binary tensor data extension: the tensor's data are this many bytes after "
        "the JSON object (little-endian, row-major), not `data`.",
    )
    content_type: ContentType = None


class V2OutputParameters(_Parameters):
    binary_data: Annotated[bool, Strict()] | None = Field(
        None, description="Binary tensor data extension: send this output as binary data."
    )
    content_type: ContentType = None


class V2RequestInput(_Protocol):
    """The rows: one tensor of ``[rows, features]``."""

    name: str = Field(description="Any name (the model's is `input-0`).", examples=["input-0"])
    shape: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=2, max_length=2, description="`[rows, features]`.", examples=[[3, 2]]
    )
    datatype: Datatype
    parameters: V2InputParameters | None = None
    data: list[float] | list[list[float]] | None = Field(
        None,
        description="The values in row-major order: flat, or one array per row. Absent with "
        "`binary_data_size`.",
        examples=[EXAMPLE_ROWS],
    )


class V2RequestOutput(_Protocol):
    name: str = Field(
        description="An output of the model (its metadata lists them): `predict`, "
        "`predict_proba`, `classes`, `transform`, `score_samples`, `score`, `anomaly_scores`, "
        "`is_anomaly`, `percentiles`, `bic`, `aic`.",
        examples=["predict"],
    )
    parameters: V2OutputParameters | None = None


class V2InferenceRequest(_Protocol):
    """An inference request: one input tensor of rows, the outputs wanted (without any: the
    model's `predict`, or a detector's `is_anomaly`)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [JSON_EXAMPLE, NESTED_EXAMPLE, ANOMALIES_EXAMPLE]},
    )
    id: str | None = Field(None, description="Echoed in the answer.")
    parameters: V2RequestParameters | None = None
    inputs: list[V2RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["INT64", "FP64", "BOOL"]
    parameters: dict[str, str | int | bool] | None = Field(
        None,
        description="`binary_data_size` when the output is sent as binary data; "
        "`content_type` `np` (as MLServer's codec writes it).",
    )
    data: list[float] | list[int] | list[bool] | None = Field(
        None, description="Flat, row-major; absent when the output is sent as binary data."
    )


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str = Field(description="The version number that answered.")
    id: str = Field(description="The request's `id`, else its X-Request-ID.")
    parameters: dict[str, str | float | int | bool] | None = Field(
        None,
        description="The operations' other fields: for the anomalies outputs `threshold`, "
        "`threshold_source`, `contamination`, `score_direction`; `n_samples` for `score`.",
    )
    outputs: list[V2ResponseOutput]


class V2ErrorResponse(BaseModel):
    error: str = Field(examples=["model 'line-7' not found"])


class V2MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: as many as the request has rows.")


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="Its version numbers, then its aliases.")
    platform: str
    inputs: list[V2MetadataTensor]
    outputs: list[V2MetadataTensor]
    parameters: dict[str, str] = Field(
        description="`version`: the version described; `algorithm`; `default_output`."
    )


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool
