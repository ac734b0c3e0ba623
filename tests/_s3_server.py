"""A real S3 API on 127.0.0.1 for tests: moto's server (``moto[server]``), reached by pyarrow and boto3 over HTTP.

Two ways to point code at it:

* :meth:`S3Server.env`: the ``AWS_*`` variables (endpoint ``AWS_ENDPOINT_URL_S3``, dummy keys, region) for the
  test process itself, e.g. through ``monkeypatch.setenv``. Plain ``s3://bkt/key`` URIs then reach the server.
* :meth:`S3Server.uri`: a self-contained ``s3://KEY:SECRET@bkt/key?endpoint_override=http://127.0.0.1:PORT``.
  The shared Ray of the integration tier was started before this server, so its worker processes (Ray Data
  tasks, the Ray Train controller and workers) never saw the variables above; a URI that carries the endpoint
  and the (dummy) keys reaches the server from every process. On a real cluster those come from each node's
  environment (instance profile, ``AWS_*``) instead.

Known limit of moto 5.x with pyarrow (seen with moto 5.2.1, pyarrow 26): moto answers CompleteMultipartUpload
with a ``<CompleteMultipartUploadResponse>`` root element, and pyarrow treats any root other than real S3's
``<CompleteMultipartUploadResult>`` as an error embedded in a 200 OK response (arrow/cpp/src/arrow/filesystem/
s3fs.cc, ``CompleteMultipartUploadWithErrorFixup``), retries and fails. Objects written in one PUT (everything
under pyarrow's part size with ``allow_delayed_open``, which ``bigsister_ray.storage`` sets) are unaffected, so
tests keep their objects small (well under 5 MiB).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["S3Server", "s3_server", "ACCESS_KEY", "SECRET_KEY", "REGION"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto S3 server with one bucket."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str

    def env(self) -> dict[str, str]:
        """Environment for a process that should reach this server through plain ``s3://`` URIs."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_ENDPOINT_URL_S3": self.endpoint,
                "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}

    def uri(self, key: str = "") -> str:
        """``s3://`` URI of ``key`` in the bucket that carries the endpoint and keys (reaches the server anywhere)."""
        path = f"/{key.strip('/')}" if key.strip("/") else ""
        return f"s3://{ACCESS_KEY}:{SECRET_KEY}@{self.bucket}{path}?endpoint_override={self.endpoint}"

    def client(self) -> Any:
        """A boto3 S3 client for this server: an independent view of what pyarrow wrote."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def keys(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix`` in the bucket: key -> size."""
        out: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out


@contextmanager
def s3_server(bucket: str = "bkt") -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1 (a free port) with only ``bucket``, empty; stop it on exit.

    Skips the calling test when moto or boto3 is not installed.
    """
    import pytest

    server_mod = pytest.importorskip("moto.server")
    pytest.importorskip("boto3")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(endpoint=f"http://{host}:{port}", bucket=bucket)
        # moto keeps its backends in the process, shared by every server it starts: begin empty
        urllib.request.urlopen(urllib.request.Request(f"{s3.endpoint}/moto-api/reset", method="POST"), timeout=10).close()
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
