"""What a client learns from an error: a clear message in OpenAI's shape with a request id, and
nothing of the server's internals (paths, process ids, library dumps, exception texts)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.index.snapshots import lock
from tests.serve.conftest import Server

QUESTION = "What does the Transformer use instead of recurrence?"


def _internals(server: Server) -> list[str]:
    return [str(server.index.resolve()), str(server.upload_dir.resolve()), str(Path.home())]


def _check_public(server: Server, r: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = r.json()["error"]
    assert set(error) >= {"message", "type", "code", "request_id"}
    assert r.headers["x-request-id"] == error["request_id"]
    for secret in _internals(server):
        assert secret not in error["message"], error["message"]
    return error


def test_a_write_while_another_process_writes_is_409_without_its_pid(server: Server) -> None:
    with lock(server.index):
        r = httpx.post(
            f"{server.url}/v1/documents",
            files=[("files", ("locked.txt", b"The lock test has three keys."))],
            headers=server.headers,
            timeout=300.0,
        )
    assert r.status_code == 409, r.text
    error = _check_public(server, r)
    assert "pid" not in error["message"] and "try again" in error["message"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"top_k": -1}, "top_k"), ({"mmr_lambda": "lots"}, "mmr_lambda")],
)
def test_an_invalid_override_says_which_and_why_without_a_library_dump(
    server: Server, overrides: dict[str, Any], field: str
) -> None:
    r = httpx.post(
        f"{server.url}/v1/ask",
        json={"question": QUESTION, "overrides": overrides},
        headers=server.headers,
        timeout=120.0,
    )
    assert r.status_code in (400, 422), r.text
    message = _check_public(server, r)["message"]
    assert field in message
    assert "validation error for" not in message and "pydantic.dev" not in message


def test_every_response_has_a_request_id(server: Server) -> None:
    ids = {
        httpx.get(f"{server.url}/healthz").headers["x-request-id"],
        httpx.get(f"{server.url}/v1/models").headers["x-request-id"],  # a 401
        httpx.get(f"{server.url}/v1/models", headers=server.headers).headers["x-request-id"],
    }
    assert len(ids) == 3


class _Broken:
    """An index whose every read fails with a message full of internals.

    A stand-in, not the real WarmIndex: a real server has no way to make its own code raise an
    unexpected exception on demand, and that is the case under test."""

    index_dir = Path("/srv/private/index")

    def lease(self) -> Any:
        raise RuntimeError("segment /srv/private/index/snap-7/seg-000001 exploded (pid 4242)")

    def acquire(self) -> Any:
        return self.lease()


@pytest.fixture
def broken_client(serve_extra: None, tmp_path: Path) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from rag.config import Settings
    from rag.serve.app import create_app
    from rag.serve.config import ServeConfig

    config = ServeConfig(
        Path("/srv/private/index"), Settings.model_validate({}), upload_dir=tmp_path
    )
    app = create_app(config, _Broken())  # type: ignore[arg-type]
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client


def test_an_unexpected_failure_is_a_json_500_that_reveals_nothing(broken_client: Any) -> None:
    r = broken_client.post("/v1/retrieve", json={"question": QUESTION})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["type"] == "server_error" and error["request_id"] in error["message"]
    assert "/srv" not in error["message"] and "4242" not in error["message"]


def test_a_failure_inside_a_stream_reveals_nothing(broken_client: Any) -> None:
    r = broken_client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "stream": True},
    )
    events = [
        json.loads(line[len("data: ") :])
        for line in r.text.splitlines()
        if line.startswith("data: {")
    ]
    assert r.status_code in (200, 500), r.text
    errors = [e["error"] for e in events if "error" in e] or [r.json()["error"]]
    assert errors and all("/srv" not in e["message"] and "4242" not in e["message"] for e in errors)
