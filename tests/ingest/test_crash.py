"""A `rag ingest` killed with SIGKILL at any step leaves the previous index (or none) intact.

Each kill is a real `rag ingest` subprocess that freezes at a named point (``RAG_PAUSE_AT``, see
:mod:`rag.index.crashpoints`), announces it in a marker file and is then killed: the test waits on that
event, never on the clock, so it does not depend on the machine's speed. The points cover the
whole run: discovery, loading, embedding, the working copy, each file of the snapshot and its
fsyncs, the snapshot rename, the CURRENT temp file and its rename, and the deletion of old
snapshots. After every kill `rag index verify` passes (or, before the first commit, says there is
no index), the index answers queries, and a re-run ends with exactly the chunks of an
uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest import ingest
from rag.cli import main
from rag.config import Settings
from rag.errors import IndexNotFound
from rag.index.crashpoints import PAUSE_AT, PAUSE_FILE, POINTS
from rag.index.manifest import DOCSTORE
from rag.index.reader import Store
from rag.index.snapshots import snapshot_names
from rag.index.verify import verify, verify_snapshot
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import DOCUMENTS

# A first ingest into an empty directory: every step up to the first commit and just after it.
FIRST_INGEST = [
    "ingest-discovered",
    "lock-taken",
    "lock-cleaned",
    "writer-copy-created",
    "ingest-file-loaded#2",
    "ingest-file-embedded",
    "ingest-file-stored#2",
    "ingest-before-commit",
    "commit-sqlite-committed",
    "commit-vectors-written",
    "commit-manifest-written",
    "commit-files-synced",
    "commit-snapshot-synced",
    "commit-snapshot-renamed",
    "commit-snapshot-rename-synced",
    "pointer-temp-created",
    "pointer-temp-written",
    "pointer-temp-synced",
    "pointer-renamed",
    "pointer-synced",
]
# Adding a file to an index with two snapshots, so the oldest one is deleted after the commit.
ADD_TO_INDEX = [
    "lock-cleaned",
    "ingest-file-embedded",
    "commit-files-synced",
    "commit-snapshot-renamed",
    "pointer-temp-written",
    "pointer-temp-synced",
    "pointer-renamed",
    "pointer-synced",
    "cleanup-renamed-aside",
    "cleanup-deleting",  # after the first file of the old snapshot: midway through deleting it
    "cleanup-deleting#3",  # its last file; the emptied directory is still there
    "cleanup-done#2",  # #1 is the clean-up when the lock is taken
]
_DEADLINE_S = 600  # for one killed run to reach its point; generous, never reached when healthy


def _committed_by(point: str) -> bool:
    """Whether the write is published once the process reached ``point``."""
    name = point.partition("#")[0]
    return POINTS.index(name) >= POINTS.index("pointer-renamed")


def _env(point: str, marker: Path) -> dict[str, str]:
    # Defaults only, as in the session fixtures: no other RAG_* variable reaches the child.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return env | {PAUSE_AT: point, PAUSE_FILE: str(marker)}


def _kill_at(point: str, docs: Path, index: Path, work: Path) -> None:
    """Run `rag ingest` until it pauses at ``point``, then SIGKILL it."""
    marker = work / "paused"
    marker.unlink(missing_ok=True)
    with (work / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "ingest", str(docs), "--index", str(index)],
            cwd=work,
            env=_env(point, marker),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + _DEADLINE_S
            while not marker.exists():
                if proc.poll() is not None:
                    log = (work / "stderr.txt").read_text(errors="replace")[-2000:]
                    pytest.fail(f"ingest ended (exit {proc.returncode}) before {point}: {log}")
                assert time.monotonic() < deadline, f"ingest never reached {point}"
                time.sleep(0.05)
            assert marker.read_text(encoding="utf-8").split()[0] == point
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=_DEADLINE_S) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _chunks(index: Path) -> set[tuple[str, int | None, int, int, str]]:
    """Every stored chunk as (source, page, start, end, text)."""
    with Store.open(index) as store:
        db = sqlite3.connect(f"file:{store.snapshot / DOCSTORE}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT d.source, c.page, c.start, c.end, c.text "
            "FROM chunks c JOIN documents d ON d.id = c.doc_id"
        ).fetchall()
    finally:
        db.close()
    return set(rows)


def _answers_queries(index: Path, embedder: Embedder) -> None:
    with Store.open(index) as store:
        hits = store.search(embedder.embed_query("Llama 2 pretraining and fine-tuning"), 3)
        assert len(hits) == 3
        assert len(store.chunks([i for i, _ in hits])) == 3


def _every_snapshot_whole(index: Path) -> None:
    """No directory named like a snapshot is half-written or half-deleted."""
    for name in snapshot_names(index):
        assert verify_snapshot(index / name) == [], name


def _no_leftovers(index: Path) -> None:
    hidden = [p.name for p in index.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert hidden == []
    assert 1 <= len(snapshot_names(index)) <= 2


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """Two small real text files and the 4-page Llama 2 PDF; ``extra`` is added later."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DOCUMENTS / "text" / "LICENSE.chat-your-data.txt", docs / "license.txt")
    readme = (DOCUMENTS / "text" / "llama2c_README.md").read_text(encoding="utf-8")
    (docs / "readme.md").write_text(readme[:3000], encoding="utf-8")
    extra = tmp_path / "llama2.pdf"
    shutil.copy(DOCUMENTS / "pdf" / "llama2_paper_first4pages.pdf", extra)
    return docs, extra


def test_the_kill_points_cover_every_crash_point() -> None:
    named = {p.partition("#")[0] for p in FIRST_INGEST + ADD_TO_INDEX}
    assert named == set(POINTS)
    assert len(FIRST_INGEST) + len(ADD_TO_INDEX) >= 20


@pytest.mark.slow
def test_sigkill_at_every_step_of_a_first_ingest(
    tmp_path: Path,
    corpus: tuple[Path, Path],
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> None:
    docs, extra = corpus
    shutil.copy(extra, docs / extra.name)
    reference = tmp_path / "reference"
    ingest([docs], reference, settings, embedder=embedder, tokenizer=tokenizer)
    expected = _chunks(reference)
    index = tmp_path / "index"
    for point in FIRST_INGEST:
        shutil.rmtree(index, ignore_errors=True)
        _kill_at(point, docs, index, tmp_path)
        _every_snapshot_whole(index)
        if _committed_by(point):
            assert verify(index) == [], point
            assert main(["index", "verify", "--index", str(index)]) == 0, point
            _answers_queries(index, embedder)
            assert _chunks(index) == expected, point
        else:
            with pytest.raises(IndexNotFound):
                verify(index)
            assert main(["index", "verify", "--index", str(index)]) == IndexNotFound.exit_code
        ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
        assert verify(index) == [], point
        assert _chunks(index) == expected, point
        _answers_queries(index, embedder)
        _no_leftovers(index)


@pytest.mark.slow
def test_sigkill_at_every_step_of_adding_to_an_index(
    tmp_path: Path,
    corpus: tuple[Path, Path],
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> None:
    docs, extra = corpus
    # An index of two commits (two snapshots on disk): license.txt, then readme.md as well.
    base = tmp_path / "base"
    readme = docs / "readme.md"
    kept = readme.rename(tmp_path / readme.name)
    ingest([docs], base, settings, embedder=embedder, tokenizer=tokenizer)
    kept.rename(readme)
    ingest([docs], base, settings, embedder=embedder, tokenizer=tokenizer)
    assert snapshot_names(base) == ["snap-000001", "snap-000002"]
    before = _chunks(base)
    shutil.copy(extra, docs / extra.name)
    reference = tmp_path / "reference"
    ingest([docs], reference, settings, embedder=embedder, tokenizer=tokenizer)
    expected = _chunks(reference)
    assert before < expected

    index = tmp_path / "index"
    for point in ADD_TO_INDEX:
        shutil.rmtree(index, ignore_errors=True)
        shutil.copytree(base, index)
        _kill_at(point, docs, index, tmp_path)
        _every_snapshot_whole(index)
        assert verify(index) == [], point
        assert main(["index", "verify", "--index", str(index)]) == 0, point
        _answers_queries(index, embedder)
        assert _chunks(index) == (expected if _committed_by(point) else before), point
        ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
        assert verify(index) == [], point
        assert _chunks(index) == expected, point
        _answers_queries(index, embedder)
        _no_leftovers(index)
