"""The orjson floor of bench/throughput.py: bare apps that parse the body and answer a constant.

``fastapi_app`` (FastAPI) and ``starlette_app`` (Starlette) have one endpoint each,
``POST /predict``: it reads the whole body, parses it with ``orjson.loads`` and returns a
constant answer of the size of a 1-row ``predict`` answer, serialized with ``orjson.dumps``.
``POST /npy`` (FastAPI app) reads a ``.npy`` body into an array (``np.load``, no copy of the
data beyond the body) and answers the same constant: what moving the array over HTTP costs.
No registry, no validation, no auth, no metrics: what any JSON service on the same stack pays
at least. Run: ``uvicorn --app-dir bench throughput_floor:fastapi_app --no-access-log``.
"""

from __future__ import annotations

import io

import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

ANSWER = {"model": "floor", "version": 1, "labels": [0]}


async def _parse_and_answer(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(orjson.dumps(ANSWER), media_type="application/json")


fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi_app.post("/predict")
async def predict(request: Request) -> Response:
    return await _parse_and_answer(request)


@fastapi_app.post("/npy")
async def npy(request: Request) -> Response:
    np.load(io.BytesIO(await request.body()), allow_pickle=False)
    return Response(orjson.dumps(ANSWER), media_type="application/json")


starlette_app = Starlette(routes=[Route("/predict", _parse_and_answer, methods=["POST"])])
