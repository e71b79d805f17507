"""``rag llm serve`` as a user runs it, and a server that freezes or stops in the middle of an answer.

This module starts its own short-lived server (the session server stays up for the other tests).
Every wait is for an event (a line printed, a token arriving, a process exiting) with a limit of
minutes: a slow, shared machine only makes a test slower, while a test that would hang still fails
on the limit. Timeouts are short only where a timeout is what a test is about.
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
from rag.errors import LLMUnavailable
from rag.llm.default_model import DEFAULT_MODEL_NAME
from rag.llm.serve import group_alive
from rag.retrieval.embeddings import Embedder
from tests.conftest import REPO

pytestmark = pytest.mark.vllm

QUESTION = "What does the Transformer use instead of recurrence?"
# How long any one event may take before a test fails (starting vLLM on 2 busy cores, the first
# token of a long prompt, a server shutting down): far beyond what a healthy run needs.
EVENT_LIMIT = 600.0


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
        line = _read_line(proc.stdout, timeout=EVENT_LIMIT)
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
        proc.wait(timeout=EVENT_LIMIT)


def test_serve_prints_a_url_that_answers(served: Served) -> None:
    from rag.llm.openai_server import check_server

    report = check_server(Settings.model_validate({"llm_url": served.url}))
    assert [(m.id, m.max_model_len) for m in report.models] == [(DEFAULT_MODEL_NAME, 4096)]
    assert served.process.poll() is None


def test_a_frozen_server_times_out_with_a_clear_error(
    served: Served, built_index: tuple[Path, IngestReport], embedder: Embedder
) -> None:
    """A server that stops answering ends the request at ``llm_timeout`` (short here: the timeout
    is what is tested, and a frozen server cannot answer however fast the machine)."""
    import openai

    settings = Settings.model_validate(
        {"llm_url": served.url, "llm_timeout": 2.0, "llm_max_retries": 1}
    )
    with RAG.open(built_index[0], settings, embedder=embedder) as rag:
        os.killpg(served.server_pid, signal.SIGSTOP)
        try:
            with pytest.raises(LLMUnavailable, match=served.url) as err:
                rag.ask(QUESTION, max_tokens=16)
        finally:
            os.killpg(served.server_pid, signal.SIGCONT)
    assert isinstance(err.value.__cause__, openai.APITimeoutError), repr(err.value.__cause__)


def test_ctrl_c_mid_answer_stops_the_server_cleanly(
    served: Served, built_index: tuple[Path, IngestReport], embedder: Embedder
) -> None:
    """The answer breaks off with an error naming the URL, the server exits cleanly and leaves
    nothing behind, and later requests fail without waiting for a timeout."""
    import openai

    # The first token of a long prompt may take minutes on a busy CPU: wait for it, not a clock.
    settings = Settings.model_validate(
        {"llm_url": served.url, "llm_timeout": EVENT_LIMIT, "llm_max_retries": 1}
    )
    with RAG.open(built_index[0], settings, embedder=embedder) as rag:
        stream = iter(rag.stream("Explain in great detail how attention works.", max_tokens=1000))
        assert next(stream)  # the answer has started
        served.process.send_signal(signal.SIGINT)  # Ctrl-C
        with pytest.raises(LLMUnavailable, match=served.url) as broken:
            for _ in stream:
                pass
        # The answer ended because the server went away, not because a read timed out.
        assert not isinstance(broken.value.__cause__, openai.APITimeoutError)
        assert served.process.wait(timeout=EVENT_LIMIT) == 0
        assert not group_alive(served.server_pid), "vLLM processes outlived rag llm serve"
        # Later requests are refused at once (no timeout to wait for) and name the URL.
        t0 = time.monotonic()
        with pytest.raises(LLMUnavailable, match=served.url) as refused:
            rag.ask(QUESTION, max_tokens=16)
        assert not isinstance(refused.value.__cause__, openai.APITimeoutError)
        assert time.monotonic() - t0 < settings.llm_timeout
