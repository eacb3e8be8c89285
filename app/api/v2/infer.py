"""An inference request of the Open Inference Protocol served by the inference service: the
outputs it names, the Lloyd operations behind them (each run once, by
``InferenceService.perform``, the one path every transport takes), and the answer written as
the protocol's JSON, followed by binary tensor data where outputs ask for it."""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.api.bodies import THREAD_PARSE_MIN_BYTES
from app.api.locations import in_body
from app.api.responses import render_json
from app.api.v2.outputs import ANOMALY_OUTPUTS, BY_NAME, Output, default_output, requested
from app.api.v2.tensors import output_tensor
from app.api.v2.wire import InferCall
from app.errors import InvalidInput, LloydError, Location
from app.logging_config import request_id
from app.ml.catalog import Operation
from app.registry.records import ModelVersion
from app.services.inference import InferenceService, OperationInput

Headers = list[tuple[bytes, bytes]]
BINARY_TYPE = b"application/octet-stream"
# Every output is a numpy array, as MLServer's codec labels its outputs.
CONTENT_TYPE = {"content_type": "np"}
# The fields of each operation's answer that outputs carry (the rest go to `parameters`).
_CARRIED = {(o.operation, o.field) for o in BY_NAME.values()}


def _at_input(loc: Location) -> Location:
    """The service locates bad rows in its ``instances``: here they are the input tensor."""
    return ["body", "inputs", 0] if loc and loc[0] == "instances" else in_body(loc)


def _chosen(version: ModelVersion, call: InferCall) -> list[tuple[Output, bool]]:
    """The outputs to answer, and whether each goes as binary data."""
    if call.outputs is None:
        chosen = [(default_output(version), call.binary_output)]
    else:
        outputs = requested(version, [o.name for o in call.outputs])
        chosen = list(zip(outputs, (o.binary for o in call.outputs), strict=True))
    options = call.contamination is not None or call.threshold is not None
    if options and not any(o.operation == Operation.ANOMALIES for o, _ in chosen):
        raise InvalidInput(
            "'contamination' and 'threshold' apply to the outputs "
            f"{', '.join(ANOMALY_OUTPUTS)}; none is requested",
            at=["body", "parameters"],
        )
    return chosen


async def answers(
    inference: InferenceService, version: ModelVersion, call: InferCall, outputs: list[Output]
) -> dict[Operation, dict[str, Any]]:
    """Each operation the outputs need, run once on the request's rows."""
    results: dict[Operation, dict[str, Any]] = {}
    try:  # (a try costs nothing until it catches; a context manager, a few us)
        for output in outputs:
            operation = output.operation
            if operation not in results:
                results[operation] = await inference.perform(
                    version, operation, _given(call, operation)
                )
    except LloydError as exc:
        exc.relocate(_at_input)
        raise
    return results


def _given(call: InferCall, operation: Operation) -> OperationInput:
    if operation == Operation.ANOMALIES:
        return OperationInput(
            matrix=call.rows, contamination=call.contamination, threshold=call.threshold
        )
    return OperationInput(matrix=call.rows)


def _parameters(results: dict[Operation, dict[str, Any]]) -> dict[str, Any]:
    """The answers' single values that no output carries (an anomalies threshold, ...)."""
    found: dict[str, Any] = {}
    for operation, result in results.items():
        for field, value in result.items():
            if field in ("model", "version") or (operation, field) in _CARRIED or value is None:
                continue
            value = value.item() if isinstance(value, np.generic) else value
            if isinstance(value, str | int | float | bool):
                found[field] = value
    return found


def encode(
    version: ModelVersion,
    call: InferCall,
    chosen: list[tuple[Output, bool]],
    results: dict[Operation, dict[str, Any]],
) -> tuple[bytes, Headers]:
    """The answer's body and headers: JSON, or JSON then the binary outputs' bytes in order."""
    tensors, binaries = [], []
    for output, binary in chosen:
        shape, values = output_tensor(output, results[output.operation][output.field])
        tensor: dict[str, Any] = {"name": output.name, "datatype": output.datatype}
        tensor["shape"] = shape
        if binary:
            tensor["parameters"] = CONTENT_TYPE | {"binary_data_size": values.nbytes}
            binaries.append(values)
        else:
            tensor["parameters"] = CONTENT_TYPE
            tensor["data"] = values
        tensors.append(tensor)
    document: dict[str, Any] = {
        "model_name": version.name,
        "model_version": str(version.version),
        "id": call.id if call.id is not None else request_id.get(),
    }
    if parameters := _parameters(results):
        document["parameters"] = parameters
    document["outputs"] = tensors
    header = render_json(document)
    if not binaries:
        return header, [(b"content-type", b"application/json")]
    body = b"".join([header, *(values.view(np.uint8).data for values in binaries)])
    return body, [
        (b"content-type", BINARY_TYPE),
        (b"inference-header-content-length", str(len(header)).encode()),
    ]


async def infer(
    inference: InferenceService, version: ModelVersion, call: InferCall
) -> tuple[bytes, Headers]:
    """The answer to ``call`` on ``version``: its body and headers (a large one written in the
    thread pool)."""
    chosen = _chosen(version, call)
    results = await answers(inference, version, call, [output for output, _ in chosen])
    if call.rows.size * 8 * len(chosen) >= THREAD_PARSE_MIN_BYTES:
        return await run_in_threadpool(encode, version, call, chosen, results)
    return encode(version, call, chosen, results)
