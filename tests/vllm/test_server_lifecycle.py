"""``rag llm serve`` as a user runs it, and a server that freezes or stops in the middle of an answer.

This module starts its own short-lived server (the session server stays up for the other tests).
Every wait is bounded: a test that would hang fails on a timeout instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest import IngestReport
from rag import RAG
from rag.config import Settings
from rag.default_model import DEFAULT_MODEL_NAME
from rag.embeddings import Embedder
from rag.errors import LLMUnavailable
from rag.serve import group_alive
from tests.conftest import REPO

pytestmark = pytest.mark.vllm

QUESTION = "What does the Transformer use instead of recurrence?"


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    server_pid: int


def _read_line(stream: object, timeout: float) -> str:
    """First line of ``stream`` (a pipe), or '' after ``timeout`` seconds."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)  # type: ignore[attr-defined]
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


@pytest.fixture(scope="module")
def served(
    vllm_python: Path, served_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """`rag llm serve --port 0 --enforce-eager --json` in a subprocess (as a user starts it)."""
    log = tmp_path_factory.mktemp("serve") / "vllm.log"
    env = {**os.environ, "RAG_VLLM_PYTHON": str(vllm_python)}
    cmd = [sys.executable, "-m", "rag.cli", "llm", "serve", "--port", "0", "--enforce-eager"]
    cmd += ["--json", "--log", str(log)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    server_pid = None
    try:
        line = _read_line(proc.stdout, timeout=600)
        assert line, (
            f"rag llm serve printed no URL; log:\n{log.read_text() if log.exists() else ''}"
        )
        info = json.loads(line)
        assert info["model"] == DEFAULT_MODEL_NAME
        server_pid = int(info["pid"])
        yield Served(proc, info["url"], server_pid)
    finally:
        # Whatever the tests did: nothing of either process group may survive the module.
        for pgid in (proc.pid, server_pid):
            if pgid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_serve_prints_a_url_that_answers(served: Served) -> None:
    from rag.openai_server import check_server

    report = check_server(Settings.model_validate({"llm_url": served.url}))
    assert [(m.id, m.max_model_len) for m in report.models] == [(DEFAULT_MODEL_NAME, 4096)]
    assert served.process.poll() is None


def test_a_frozen_server_times_out_with_a_clear_error(
    served: Served, built_index: tuple[Path, IngestReport], embedder: Embedder
) -> None:
    settings = Settings.model_validate(
        {"llm_url": served.url, "llm_timeout": 2.0, "llm_max_retries": 1}
    )
    os.killpg(served.server_pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with (
            RAG.open(built_index[0], settings, embedder=embedder) as rag,
            pytest.raises(LLMUnavailable, match=served.url),
        ):
            rag.ask(QUESTION, max_tokens=16)
        assert time.monotonic() - t0 < 30
    finally:
        os.killpg(served.server_pid, signal.SIGCONT)


def test_ctrl_c_mid_answer_stops_the_server_cleanly(
    served: Served, built_index: tuple[Path, IngestReport], embedder: Embedder
) -> None:
    settings = Settings.model_validate(
        {"llm_url": served.url, "llm_timeout": 5.0, "llm_max_retries": 1}
    )
    with RAG.open(built_index[0], settings, embedder=embedder) as rag:
        stream = iter(rag.stream("Explain in great detail how attention works.", max_tokens=1000))
        assert next(stream)  # the answer has started
        t0 = time.monotonic()
        served.process.send_signal(signal.SIGINT)  # Ctrl-C
        with pytest.raises(LLMUnavailable, match=served.url):
            for _ in stream:
                pass
        assert time.monotonic() - t0 < 60
        assert served.process.wait(timeout=60) == 0
        assert not group_alive(served.server_pid), "vLLM processes outlived rag llm serve"
        # Later requests fail at once and name the URL.
        t0 = time.monotonic()
        with pytest.raises(LLMUnavailable, match=served.url):
            rag.ask(QUESTION, max_tokens=16)
        assert time.monotonic() - t0 < 30
