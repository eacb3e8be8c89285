"""S3 fixtures: a moto S3 server on 127.0.0.1 for the session, reached over real HTTP through
s3fs like any S3 endpoint, and a fresh ``s3://bucket/prefix`` store URL for each test."""

from __future__ import annotations

import gc
import os
import threading
import uuid
from collections.abc import Iterator

import pytest
import s3fs
from moto.server import ThreadedMotoServer

BUCKET = "lloyd-test"
# moto accepts any credentials; a developer's real ones, if set, are only used to sign.
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def s3_client(endpoint: str) -> s3fs.S3FileSystem:
    """A client of its own (not the store's), to look at or tamper with objects directly."""
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)


def _connection_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The server's threads, one per kept-alive connection, that appeared during the session."""
    return [t for t in threading.enumerate() if t not in before and "process_request" in t.name]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL of a moto S3 server holding the bucket ``BUCKET``. The environment gets
    what botocore needs (credentials unless set, the region) until the session ends."""
    with pytest.MonkeyPatch.context() as environment:
        for name in CREDENTIALS:
            environment.setenv(name, os.environ.get(name, "testing"))
        environment.setenv("AWS_DEFAULT_REGION", "us-east-1")
        before = set(threading.enumerate())
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            s3_client(endpoint).mkdir(BUCKET)
            yield endpoint
        finally:
            server.stop()  # stops accepting and joins the serving thread
            # Connection threads end when their client hangs up: collecting the stores the
            # tests dropped closes their clients' connection pools.
            gc.collect()
            for thread in _connection_threads(before):
                thread.join(timeout=5)


@pytest.fixture
def s3_store_url(s3_endpoint: str) -> str:
    """A store URL under a prefix no other test uses, in the session's bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"
