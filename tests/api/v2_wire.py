"""The Open Inference Protocol's wire, written by hand from its specification (KServe's REST
protocol and Triton's binary tensor data extension), for the tests to build requests and read
answers without the server's own code: what each output should hold, from scikit-learn."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np

from tests.api.reference import Reference

# Little-endian numpy types of the protocol's datatypes.
NUMPY = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "u1",
    "BOOL": "?",
}
# The outputs behind each Lloyd operation, in the order the server lists them.
OUTPUTS_OF = {
    "predict": ["predict"],
    "predict_proba": ["predict_proba", "classes"],
    "transform": ["transform"],
    "score_samples": ["score_samples"],
    "score": ["score"],
    "anomalies": ["anomaly_scores", "is_anomaly", "percentiles"],
    "sample": [],
    "bic": ["bic"],
    "aic": ["aic"],
}
OPERATION_OF = {output: op for op, outputs in OUTPUTS_OF.items() for output in outputs}
# The answer field of /v1 each output carries.
FIELD_OF = {
    "predict": "labels",
    "predict_proba": "probabilities",
    "classes": "classes",
    "transform": "distances",
    "score_samples": "scores",
    "score": "score",
    "anomaly_scores": "anomaly_scores",
    "is_anomaly": "is_anomaly",
    "percentiles": "percentiles",
    "bic": "bic",
    "aic": "aic",
}
DATATYPE_OF = {"predict": "INT64", "classes": "INT64", "is_anomaly": "BOOL"}  # the rest FP64
PER_ROW = {"predict", "score_samples", "anomaly_scores", "is_anomaly", "percentiles"}


def outputs_for(operations: list[str]) -> list[str]:
    return [output for op in operations for output in OUTPUTS_OF[op]]


def tensor(rows: np.ndarray, datatype: str = "FP64", *, nested: bool = False) -> dict[str, Any]:
    """One input tensor of ``rows`` as JSON data (flat, or one array per row)."""
    values = np.asarray(rows).astype(NUMPY[datatype])
    data = values.tolist() if nested else values.ravel().tolist()
    return {"name": "input-0", "shape": list(values.shape), "datatype": datatype, "data": data}


def request(
    rows: np.ndarray,
    outputs: list[str] | None = None,
    *,
    datatype: str = "FP64",
    nested: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [tensor(rows, datatype, nested=nested)]}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body | fields


def binary_request(
    rows: np.ndarray,
    outputs: list[str] | None = None,
    *,
    datatype: str = "FP64",
    binary_outputs: bool | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a request whose input is binary tensor data (outputs binary
    too when ``binary_outputs``: each with its own parameter)."""
    values = np.ascontiguousarray(np.asarray(rows).astype(NUMPY[datatype]))
    data = values.tobytes()
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(values.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(data)},
            }
        ]
    }
    if outputs is not None:
        header["outputs"] = [
            {"name": name}
            | ({} if binary_outputs is None else {"parameters": {"binary_data": binary_outputs}})
            for name in outputs
        ]
    if parameters:
        header["parameters"] = parameters
    text = json.dumps(header).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(text)),
        "Content-Type": "application/octet-stream",
    }
    return text + data, headers


def read_answer(response: httpx.Response) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """An inference answer: its JSON object and each output as an array of its shape (read from
    JSON data or from the binary data after the JSON, as the extension lays it out)."""
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    if length is None:
        assert response.headers["content-type"] == "application/json"
        document, binary = response.json(), b""
    else:
        assert response.headers["content-type"] == "application/octet-stream"
        document = json.loads(response.content[: int(length)])
        binary = response.content[int(length) :]
    arrays, offset = {}, 0
    for output in document["outputs"]:
        dtype = np.dtype(NUMPY[output["datatype"]])
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            values = np.asarray(output["data"], dtype=dtype)
        else:
            assert "data" not in output
            values = np.frombuffer(binary[offset : offset + size], dtype=dtype)
            offset += size
        arrays[output["name"]] = values.reshape(output["shape"])
    assert offset == len(binary), "bytes after the binary outputs"
    return document, arrays


def expected(
    reference: Reference,
    output: str,
    X: np.ndarray,
    *,
    stored_contamination: float = 0.02,
    **options: float,
) -> np.ndarray:
    """What scikit-learn says ``output`` holds for rows ``X``, in the output's shape."""
    answer = reference.answer(
        OPERATION_OF[output],
        {"instances": X.tolist(), **options},
        stored_contamination=stored_contamination,
    )
    value = np.asarray(answer[FIELD_OF[output]])
    if output in PER_ROW:
        return value.reshape(-1, 1)
    return value.reshape(1) if value.ndim == 0 else value
