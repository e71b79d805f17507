"""Real ``rag serve`` processes for the service tests: uvicorn on a free loopback port.

Each server is a child process started the way a user starts it (``python -m rag.cli serve``), in
a directory of its own and without the caller's RAG_* variables or rag.toml, over a copy of the
session's index (tests write to it). A test waits for ``/healthz`` to answer, with a generous
limit, and every server's process group is killed at the end, whatever happened. Without the
serve extra these tests skip, unless RAG_REQUIRE_SERVE=1 (as in CI), which makes them fail.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import IngestReport
from rag.llm.serve import free_port
from tests.conftest import REPO

REQUIRE_SERVE = os.environ.get("RAG_REQUIRE_SERVE") == "1"
START_TIMEOUT = 300.0  # the embedder loads before the port opens; slow on a busy 2-core machine
API_KEY = "test-key-0123456789abcdef"
ALLOWED_ORIGIN = "http://allowed.example"


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        message = f"the serve extra is not installed ({exc}): pip install -e '.[serve]'"
        if REQUIRE_SERVE:
            pytest.fail(f"{message} (RAG_REQUIRE_SERVE=1)", pytrace=False)
        pytest.skip(message)


class Server:
    """One ``rag serve`` child process."""

    def __init__(
        self,
        index: Path,
        work: Path,
        *,
        api_key: str | None = API_KEY,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.upload_dir = work / "uploads"
        self.log_path = work / f"server-{self.port}.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        if api_key:
            clean["RAG_API_KEY"] = api_key
        clean.update(env or {})
        command = [
            sys.executable, "-m", "rag.cli", "serve", "--index", str(index),
            "--port", str(self.port), "--upload-dir", str(self.upload_dir), *args,
        ]  # fmt: skip
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command,
            cwd=work,
            env=clean,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole in stop()
        )
        atexit.register(self.stop)

    @property
    def headers(self) -> dict[str, str]:
        """What a script sends: the key, or on a server without one the header that uploads and
        deletions need (rag.serve.origins)."""
        if self.api_key:
            return {"Authorization": f"Bearer {self.api_key}"}
        return {"X-Requested-With": "rag-tests"}

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"rag serve exited ({self.process.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling the port; the limit is the deadline above
        raise AssertionError(f"rag serve not ready in {timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
        self._log.close()
        atexit.unregister(self.stop)


def copy_index(built: Path, target: Path) -> Path:
    shutil.copytree(built, target)
    return target


@pytest.fixture(scope="session")
def serve_extra() -> None:
    _require_extra()


@pytest.fixture(scope="session")
def keyless_server(
    serve_extra: None,
    built_index: tuple[Path, IngestReport],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A server on loopback without a key, as a user starts one on their own machine."""
    work = tmp_path_factory.mktemp("serve-keyless")
    srv = Server(copy_index(built_index[0], work / "index"), work, api_key=None)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def server(
    serve_extra: None,
    built_index: tuple[Path, IngestReport],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """The session's server: with an API key, a 1 MB upload limit for the 413 tests, and one
    origin allowed by CORS."""
    work = tmp_path_factory.mktemp("serve")
    index = copy_index(built_index[0], work / "index")
    srv = Server(
        index,
        work,
        args=(
            "--max-upload-mb", "1", "--max-question-chars", "500",
            "--cors-origin", ALLOWED_ORIGIN,
        ),
    )  # fmt: skip
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
