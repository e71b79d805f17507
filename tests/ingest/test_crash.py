"""A `rag ingest` killed with SIGKILL mid-run leaves the previous index (or none) intact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest import ingest
from rag.cli import main
from rag.config import Settings
from rag.embeddings import Embedder
from rag.errors import IndexNotFound
from rag.store import Store, verify
from rag.tokens import Tokenizer
from tests.conftest import ATTENTION_PDF, DOCUMENTS


def _env() -> dict[str, str]:
    # Defaults only, as in the session fixtures: no RAG_* variable reaches the child.
    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}


def _ingest_cmd(docs: Path, index: Path) -> list[str]:
    return [sys.executable, "-m", "rag.cli", "ingest", str(docs), "--index", str(index), "--json"]


def _kill_mid_run(docs: Path, index: Path, cwd: Path) -> None:
    """Start `rag ingest`, wait until it writes its working copy, then SIGKILL it."""
    proc = subprocess.Popen(
        _ingest_cmd(docs, index),
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not list(index.glob(".tmp-snap-*")):
            assert proc.poll() is None, "ingest ended before it was killed"
            assert time.monotonic() < deadline, "ingest never started writing"
            time.sleep(0.05)
        time.sleep(1.0)  # into the embedding of the first files
        assert proc.poll() is None, "ingest finished before it was killed; give it more work"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _verify_cli(index: Path) -> int:
    return main(["index", "verify", "--index", str(index)])


@pytest.mark.slow
def test_sigkill_mid_ingest_leaves_the_previous_state(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(ATTENTION_PDF, docs / ATTENTION_PDF.name)
    shutil.copy(DOCUMENTS / "pdf" / "llama2_paper_first4pages.pdf", docs / "llama2.pdf")
    shutil.copy(DOCUMENTS / "text" / "state_of_the_union.txt", docs / "speech.txt")
    index = tmp_path / "index"

    # 1. No index before: after the kill there is still none, only a leftover working copy.
    _kill_mid_run(docs, index, tmp_path)
    with pytest.raises(IndexNotFound):
        verify(index)
    assert _verify_cli(index) == IndexNotFound.exit_code

    # 2. Run again to completion: the leftover is cleaned up, the index is whole and it holds
    # what an uninterrupted run makes.
    done = subprocess.run(
        _ingest_cmd(docs, index), cwd=tmp_path, env=_env(), capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()
    assert not list(index.glob(".tmp-snap-*"))
    assert verify(index) == []
    assert _verify_cli(index) == 0
    reference = ingest(
        [docs], tmp_path / "reference", settings, embedder=embedder, tokenizer=tokenizer
    )
    with Store.open(index) as store:
        counts = store.counts()
    assert counts == (3, reference.chunks_total)

    # 3. Killed while adding to an existing index: the committed index is as it was.
    shutil.copy(DOCUMENTS / "text" / "paul_graham_essay.txt", docs / "essay.txt")
    shutil.copy(DOCUMENTS / "text" / "llamacpp_README.md", docs / "llamacpp.md")
    _kill_mid_run(docs, index, tmp_path)
    assert verify(index) == []
    with Store.open(index) as store:
        assert store.counts() == counts
