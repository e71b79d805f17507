"""A real vLLM OpenAI-compatible server for the ``vllm`` tests: started once per session.

The server runs from ``.venv-vllm`` (``make vllm-env``) on a free port of 127.0.0.1 and serves the
exported embedded default model. Without that environment the ``vllm`` tests are skipped, unless
RAG_REQUIRE_VLLM=1 (as in CI), which makes them fail instead. The server's whole process group is
stopped at the end of the session, whatever happened.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import RagError
from rag.llm.default_model import DEFAULT_MODEL_NAME, default_model_dir
from rag.llm.serve import (
    CPU_KV_CACHE_BYTES,
    VLLMServer,
    free_port,
    is_cpu_build,
    resolve_vllm_python,
)
from tests.conftest import REPO

REQUIRE_VLLM = os.environ.get("RAG_REQUIRE_VLLM") == "1"
START_TIMEOUT = 600.0


def find_vllm_python() -> Path:
    """The vLLM interpreter, or skip (fail when RAG_REQUIRE_VLLM=1) saying how to get one."""
    try:
        return resolve_vllm_python(Settings.model_validate({}), cwd=REPO)
    except RagError as exc:
        message = f"no vLLM server environment: {exc}"
        if REQUIRE_VLLM:
            pytest.fail(f"{message} (RAG_REQUIRE_VLLM=1)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    return find_vllm_python()


@pytest.fixture(scope="session")
def served_model_dir(settings: Settings) -> Path:
    return default_model_dir(settings.cache_dir)


def start_server(python: Path, model_dir: Path, log_path: Path) -> VLLMServer:
    """Start a server the tests own; ``--enforce-eager`` starts it in about a third of the time."""
    server = VLLMServer(
        python,
        str(model_dir),
        DEFAULT_MODEL_NAME,
        port=free_port(),
        max_model_len=4096,
        enforce_eager=True,
        kv_cache_bytes=CPU_KV_CACHE_BYTES if is_cpu_build(python) else None,
        log_path=log_path,
    )
    atexit.register(server.stop)  # also when the session dies without finalizing fixtures
    t0 = time.monotonic()
    server.start()
    server.wait_ready(START_TIMEOUT)
    print(f"\nvLLM server on port {server.port} ready in {time.monotonic() - t0:.0f}s")
    return server


@pytest.fixture(scope="session")
def vllm_server(
    vllm_python: Path, served_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMServer]:
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    server = start_server(vllm_python, served_model_dir, log_path)
    try:
        yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)  # stopped; a second stop() would do nothing anyway


@pytest.fixture(scope="session")
def vllm_url(vllm_server: VLLMServer) -> str:
    return vllm_server.base_url


@pytest.fixture(scope="session")
def server_settings(vllm_url: str) -> Settings:
    """Settings for the session server; greedy decoding, short answers."""
    return Settings.model_validate({"llm_url": vllm_url, "llm_model": DEFAULT_MODEL_NAME})
