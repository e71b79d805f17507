"""A streamed answer holds a lease on its snapshot; a client that disconnects mid-stream must give
it back at once, so that a snapshot retired by a write is closed then, not when the garbage
collector happens to find the abandoned generator.

The server is the real application under uvicorn, in a thread of this process, so that the test
can look at the served index; the model is a stand-in that streams a word every 20 ms (the
answer must still be streaming when the client leaves).
"""

from __future__ import annotations

import gc
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest import IngestReport, ingest
from rag.answer import AnswerStream
from rag.chat import Chat
from rag.config import Settings
from rag.llm.serve import free_port
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder


def _slow_stream(self: Chat, message: str, **overrides: Any) -> AnswerStream:
    def pieces() -> Iterator[str]:
        for _ in range(1500):  # 30 s: far longer than the test waits
            time.sleep(0.02)
            yield "word "

    return AnswerStream(pieces(), lambda: self.rag.ask(message))


def _closed(store: Any) -> bool:
    try:
        store.segments[0].db.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_a_disconnected_stream_releases_its_snapshot(
    serve_extra: None,
    built_index: tuple[Path, IngestReport],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> None:
    import httpx
    import uvicorn

    from rag.serve.app import create_app
    from rag.serve.config import ServeConfig
    from rag.serve.state import WarmIndex

    index = tmp_path / "index"
    shutil.copytree(built_index[0], index)
    settings = Settings.model_validate({"answer_mode": "extract"})
    warm = WarmIndex(index, settings)
    config = ServeConfig(index_dir=index, settings=settings, upload_dir=tmp_path / "uploads")
    app = create_app(config, warm)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    monkeypatch.setattr(Chat, "stream", _slow_stream)
    gc.disable()  # the lease must come back without the collector's help
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        old = warm.acquire()
        warm.release(old)
        question = {"role": "user", "content": "What did the president say about the economy?"}
        with httpx.stream(
            "POST", url, json={"messages": [question], "stream": True}, timeout=30
        ) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            while "word" not in next(lines):
                pass  # the answer is streaming, under a lease on the old snapshot
            assert old.users == 1
        # The client has gone. A write commits a new snapshot; the server moves to it.
        extra = tmp_path / "extra.txt"
        extra.write_text("Quokkas live on Rottnest Island off Western Australia.\n")
        ingest([extra], index, settings, embedder=embedder, tokenizer=tokenizer)
        warm.refresh()
        assert old.retired
        deadline = time.monotonic() + 5
        while (old.users or not _closed(old.rag.store)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old.users == 0, "the disconnected stream still holds its lease"
        assert _closed(old.rag.store), "the retired snapshot is still open"
    finally:
        gc.enable()
        server.should_exit = True
        thread.join(timeout=30)
        warm.close()
