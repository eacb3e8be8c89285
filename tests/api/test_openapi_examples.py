"""Every example of the OpenAPI document runs as it is: each operation is called with each of its
examples (request bodies: the media types' ``example``/``examples`` and their schemas'; and
the parameters'), unchanged, on an app where the training examples themselves have trained the
models the other examples name, and answers a 2xx it documents. An example documented as an
error (a named example with ``x-expected-status``) answers that status instead."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings

TRAIN = ("POST", "/v1/models")
# Deletions last, each after the training examples have run again (so that what the examples
# name exists): an alias before the version it points at, a version before its model.
DELETE_ORDER = (
    "/v1/models/{name}/aliases/{alias}",
    "/v1/models/{name}/versions/{version}",
    "/v1/models/{name}",
)
JSON = "application/json"


@dataclass(frozen=True)
class Value:
    """One example value, and the status it is documented to answer (None: a 2xx)."""

    value: Any
    status: int | None = None


@dataclass(frozen=True)
class Body:
    """One example body: of a media type (None: no body), and the status it is documented to
    answer (None: a 2xx)."""

    media_type: str | None
    value: Any = None
    status: int | None = None


@dataclass(frozen=True)
class Call:
    """One operation called with one combination of its examples."""

    method: str
    template: str
    url: str
    query: dict[str, Any]
    headers: dict[str, str]
    body: Body
    status: int | None
    documented: frozenset[str]  # the operation's documented statuses

    def __str__(self) -> str:
        body = self.body
        sent = f"{body.media_type} {body.value!r:.160}" if body.media_type else "no body"
        return f"{self.method} {self.url} ({self.template}) with {sent}"


def resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def named_examples(holder: dict[str, Any]) -> list[Value]:
    """The ``examples`` map (OpenAPI Example Objects) and the ``example`` of a parameter or a
    media type."""
    values = [
        Value(example["value"], example.get("x-expected-status"))
        for example in holder.get("examples", {}).values()
    ]
    if "example" in holder:
        values.append(Value(holder["example"]))
    return values


def schema_examples(schema: dict[str, Any]) -> list[Value]:
    """A (resolved) schema's JSON Schema ``examples``, and its ``example``."""
    values = [Value(example) for example in schema.get("examples", [])]
    if "example" in schema:
        values.append(Value(schema["example"]))
    return values


def parameter_examples(document: dict[str, Any], parameter: dict[str, Any]) -> list[Value]:
    schema = resolved(document, parameter.get("schema", {}))
    return named_examples(parameter) + schema_examples(schema)


def body_examples(document: dict[str, Any], operation: dict[str, Any]) -> list[Body]:
    """Every body example of the operation, in each media type: the media type's ``example``
    and ``examples`` and, for JSON, its schema's, and a body of the schema's ``records`` example
    (rows are ``instances`` or ``records``, and the bodies' examples show ``instances``); and
    no body when the body is optional."""
    body = operation.get("requestBody")
    if body is None:
        return [Body(None)]
    bodies = []
    for media_type, media in body["content"].items():
        values = named_examples(media)
        if media_type == JSON:
            schema = resolved(document, media.get("schema", {}))
            records = schema.get("properties", {}).get("records", {})
            values += schema_examples(schema)
            values += [Value({"records": example}) for example in records.get("examples", [])]
        bodies += [Body(media_type, value.value, value.status) for value in values]
    if not body.get("required", False):
        bodies.append(Body(None))
    return bodies


def variants(options: dict[str, list[Value]]) -> Iterator[dict[str, Value]]:
    """Each parameter at its first example, then each further example of each parameter with
    the others at their first."""
    first = {name: values[0] for name, values in options.items()}
    yield first
    for name, values in options.items():
        for value in values[1:]:
            yield first | {name: value}


def calls_of(document: dict[str, Any], method: str, template: str, operation: dict) -> list[Call]:
    parameters = {
        (p["in"], p["name"]): parameter_examples(document, p)
        for p in operation.get("parameters", [])
    }
    missing = [key for key, values in parameters.items() if not values and key[0] == "path"]
    assert missing == [], f"{method} {template}: path parameters without an example: {missing}"
    documented = frozenset(operation["responses"])
    calls = []
    for chosen in variants({key: values for key, values in parameters.items() if values}):
        url, query, headers = template, {}, {}
        for (where, name), value in chosen.items():
            if where == "path":
                url = url.replace("{" + name + "}", str(value.value))
            elif where == "query":
                query[name] = value.value
            elif where == "header":
                headers[name] = str(value.value)
        statuses = [value.status for value in chosen.values() if value.status is not None]
        for body in body_examples(document, operation):
            status = statuses[0] if statuses else body.status
            calls.append(Call(method, template, url, query, headers, body, status, documented))
    return calls


def every_call(document: dict[str, Any]) -> list[Call]:
    """Every call the document's examples make: trainings first, deletions last."""
    calls = [
        call
        for template, item in document["paths"].items()
        for method, operation in item.items()
        for call in calls_of(document, method.upper(), template, operation)
    ]

    def rank(call: Call) -> int:
        if (call.method, call.template) == TRAIN:
            return 0
        if call.method != "DELETE":
            return 1
        known = call.template in DELETE_ORDER
        return 2 + (DELETE_ORDER.index(call.template) if known else len(DELETE_ORDER))

    return sorted(calls, key=rank)  # (stable: the document's order within a rank)


def send(client: TestClient, call: Call) -> tuple[int, str]:
    body = call.body
    headers = dict(call.headers)
    content: dict[str, Any] = {}
    if body.media_type == JSON:
        content["json"] = body.value
    elif body.media_type is not None:
        content["content"] = body.value
        headers["Content-Type"] = body.media_type
    response = client.request(call.method, call.url, params=call.query, headers=headers, **content)
    return response.status_code, response.text


def unmet(call: Call, status: int) -> bool:
    if call.status is not None:
        return status != call.status
    return not 200 <= status < 300 or str(status) not in call.documented


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(Path(tmp_path_factory.mktemp("examples")))
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def document(served: TestClient) -> dict[str, Any]:
    return served.get("/openapi.json").json()


def test_every_example_runs_as_it_is(served: TestClient, document: dict[str, Any]) -> None:
    calls = every_call(document)
    trainings = [call for call in calls if (call.method, call.template) == TRAIN]
    assert trainings, "no training example to train the models the other examples name"
    failures = []
    for call in calls:
        if call.method == "DELETE":  # what the examples name exists again (their first run
            for training in trainings:  # is checked below, with every call)
                send(served, training)
        status, text = send(served, call)
        if unmet(call, status):
            expected = call.status or "a documented 2xx"
            failures.append(f"{call}: {status}, expected {expected}: {text[:300]}")
    assert not failures, "\n".join(failures)


def test_every_operation_is_called_and_error_examples_are_documented(
    document: dict[str, Any],
) -> None:
    calls = every_call(document)
    operations = {
        (method.upper(), template)
        for template, item in document["paths"].items()
        for method in item
    }
    assert {(call.method, call.template) for call in calls} == operations
    undocumented = [
        str(call)
        for call in calls
        if call.status is not None and str(call.status) not in call.documented
    ]
    assert undocumented == []
