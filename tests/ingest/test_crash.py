"""A write killed with SIGKILL at any step leaves the previous index (or none) intact.

Each kill is a real `rag ingest` or `rag index optimize` subprocess that freezes at a named point
(``RAG_PAUSE_AT``, see :mod:`rag.index.crashpoints`), announces it in a marker file and is then
killed: the test waits on that event, never on the clock, so it does not depend on the machine's
speed. The points cover the whole of a write: discovery, loading, embedding, the new segment
(``segments/.tmp-seg-*``: its rows, vectors, postings and fsyncs, then its rename to ``seg-N``),
the snapshot that lists it (its manifest, fsyncs and rename), the CURRENT temp file and its
rename, the deletion of old snapshots and of segments that no snapshot lists any more; and the
same steps again inside a merge, both in ``rag index optimize`` and in the tiered merge that ends
an ingest.

After every kill each snapshot on disk verifies, `rag index verify` passes (or, before the first
commit, says there is no index), the index answers queries and holds the chunks of the last
published commit (a merge never changes them), and a re-run ends with exactly the chunks of an
uninterrupted run, without leftovers: no hidden directory, and no segment that no snapshot lists.
"""

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
from rag.errors import IndexNotFound
from rag.index.commits import referenced_segments
from rag.index.crashpoints import PAUSE_AT, PAUSE_FILE, POINTS
from rag.index.manifest import read_manifest
from rag.index.merging import TIER_FACTOR, tier
from rag.index.reader import Store
from rag.index.segment import SEGMENTS, segment_names
from rag.index.snapshots import current_snapshot, snapshot_names
from rag.index.verify import verify, verify_snapshot
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import DOCUMENTS

# A first ingest into an empty directory: every step up to the first commit and just after it.
FIRST_INGEST = [
    "ingest-discovered",
    "lock-taken",
    "lock-cleaned",
    "writer-opened",
    "ingest-file-loaded#2",
    "ingest-file-embedded",
    "ingest-file-stored#2",
    "ingest-before-commit",
    "commit-sqlite-committed",
    "commit-vectors-written",
    "commit-lexical-written",
    "commit-segment-synced",
    "commit-segment-renamed",
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
    "commit-segment-renamed",  # a named segment that no snapshot lists
    "commit-files-synced",
    "commit-snapshot-renamed",
    "pointer-temp-written",
    "pointer-temp-synced",
    "pointer-renamed",
    "pointer-synced",
    "cleanup-renamed-aside",
    "cleanup-deleting",  # its only file (manifest.json); the emptied directory is still there
    "cleanup-done#2",  # #1 is the clean-up when the lock is taken
]
# `rag index optimize` of two segments with tombstones: one merge, one commit (first arrivals),
# then the older snapshot goes and with it the last mention of a third segment.
OPTIMIZE = [
    "merge-rows-copied",
    "commit-vectors-written",
    "commit-segment-renamed",
    "commit-files-synced",
    "pointer-renamed",
    "pointer-synced",
    "cleanup-segment-aside",
]
# An ingest that adds a tenth segment to a tier of nine: its own commit (#1 arrivals), then the
# policy's merge of the ten (#2 arrivals). With the point: whether the merge is published.
POLICY_MERGE = [
    ("merge-rows-copied", False),
    ("commit-segment-renamed#2", False),
    ("pointer-renamed#2", True),
]
_DEADLINE_S = 600  # for one killed run to reach its point; generous, never reached when healthy


def _committed_by(point: str) -> bool:
    """Whether a write of one commit is published once the process reached ``point``."""
    name = point.partition("#")[0]
    return POINTS.index(name) >= POINTS.index("pointer-renamed")


def _env(point: str, marker: Path) -> dict[str, str]:
    # Defaults only, as in the session fixtures: no other RAG_* variable reaches the child.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return env | {PAUSE_AT: point, PAUSE_FILE: str(marker)}


def _kill_at(point: str, command: list[str], work: Path) -> None:
    """Run `rag COMMAND...` until it pauses at ``point``, then SIGKILL it."""
    marker = work / "paused"
    marker.unlink(missing_ok=True)
    with (work / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", *command],
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
                    pytest.fail(
                        f"{command[0]} ended (exit {proc.returncode}) before {point}: {log}"
                    )
                assert time.monotonic() < deadline, f"{command[0]} never reached {point}"
                time.sleep(0.05)
            assert marker.read_text(encoding="utf-8").split()[0] == point
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=_DEADLINE_S) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _ingest_command(docs: Path, index: Path) -> list[str]:
    return ["ingest", str(docs), "--index", str(index)]


def _chunks(index: Path) -> set[tuple[str, int | None, int, int, str]]:
    """Every live chunk of the committed snapshot as (source, page, start, end, text), read from
    each segment it lists without the documents that its tombstones delete."""
    rows: list[tuple[str, int | None, int, int, str]] = []
    with Store.open(index) as store:
        for seg in store.segments:
            rows += [
                r[1:]
                for r in seg.db.execute(
                    "SELECT d.id, d.source, c.page, c.start, c.end, c.text "
                    "FROM chunks c JOIN documents d ON d.id = c.doc_id"
                )
                if r[0] not in seg.deleted
            ]
        assert len(rows) == store.counts()[1]
    assert len(set(rows)) == len(rows), "a chunk is live in two segments"
    return set(rows)


def _segments(index: Path) -> list[tuple[str, int]]:
    """The segments of the committed snapshot, with the number of documents each tombstones."""
    manifest = read_manifest(current_snapshot(index))
    return [(s.name, len(s.deleted_documents)) for s in manifest.segments]


def _answers_queries(index: Path, embedder: Embedder) -> None:
    with Store.open(index) as store:
        hits = store.search(embedder.embed_query("Llama 2 pretraining and fine-tuning"), 3)
        assert len(hits) == 3
        assert len(store.chunks([i for i, _ in hits])) == 3
        assert len(store.lexical_search("Llama model", 3)) == 3


def _every_snapshot_whole(index: Path) -> None:
    """No directory named like a snapshot is half-written or half-deleted, and every segment it
    lists is there and whole."""
    for name in snapshot_names(index):
        assert verify_snapshot(index / name) == [], name


def _no_leftovers(index: Path) -> None:
    hidden = [p.name for p in index.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert hidden == []
    assert 1 <= len(snapshot_names(index)) <= 2
    _every_snapshot_whole(index)
    # Nothing but seg-N directories (no .tmp-seg-* or .del-seg-*), each listed by a snapshot.
    on_disk = sorted(p.name for p in (index / SEGMENTS).iterdir())
    assert on_disk == sorted(segment_names(index))
    listed = referenced_segments(index)
    assert listed is not None
    assert set(on_disk) <= listed, sorted(set(on_disk) - listed)


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """Two small real text files and the 4-page Llama 2 PDF; ``extra`` is added later."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DOCUMENTS / "text" / "LICENSE.chat-your-data.txt", docs / "license.txt")
    (docs / "readme.md").write_text(_readme()[:3000], encoding="utf-8")
    extra = tmp_path / "llama2.pdf"
    shutil.copy(DOCUMENTS / "pdf" / "llama2_paper_first4pages.pdf", extra)
    return docs, extra


def _readme() -> str:
    return (DOCUMENTS / "text" / "llama2c_README.md").read_text(encoding="utf-8")


def test_the_kill_points_cover_every_crash_point() -> None:
    lists = FIRST_INGEST + ADD_TO_INDEX + OPTIMIZE + [p for p, _ in POLICY_MERGE]
    named = {p.partition("#")[0] for p in lists}
    assert named == set(POINTS)
    assert len(lists) >= 40


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
        _kill_at(point, _ingest_command(docs, index), tmp_path)
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
    assert _segments(base) == [("seg-000001", 0), ("seg-000002", 0)]
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
        _kill_at(point, _ingest_command(docs, index), tmp_path)
        _every_snapshot_whole(index)
        assert verify(index) == [], point
        assert main(["index", "verify", "--index", str(index)]) == 0, point
        _answers_queries(index, embedder)
        assert _chunks(index) == (expected if _committed_by(point) else before), point
        ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
        assert verify(index) == [], point
        assert _chunks(index) == expected, point
        assert len(_segments(index)) == 3, point
        _answers_queries(index, embedder)
        _no_leftovers(index)


def test_sigkill_at_every_step_of_optimize(
    tmp_path: Path,
    corpus: tuple[Path, Path],
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> None:
    docs, _ = corpus
    base = tmp_path / "base"
    # 1: license.txt and readme.md (seg-1). 2: notes.md (seg-2). 3: license.txt and notes.md
    # changed (seg-3): seg-1 keeps a tombstone for the old license, seg-2 holds nothing live and
    # is left out, but the snapshot of commit 2, kept for readers, still lists it.
    ingest([docs], base, settings, embedder=embedder, tokenizer=tokenizer)
    notes = docs / "notes.md"
    notes.write_text(_readme()[3000:5000], encoding="utf-8")
    ingest([docs], base, settings, embedder=embedder, tokenizer=tokenizer)
    license_txt = docs / "license.txt"
    license_txt.write_text(license_txt.read_text(encoding="utf-8") + "\nAmended.\n", "utf-8")
    notes.write_text(_readme()[5000:7000], encoding="utf-8")
    ingest([docs], base, settings, embedder=embedder, tokenizer=tokenizer)
    assert snapshot_names(base) == ["snap-000002", "snap-000003"]
    assert _segments(base) == [("seg-000001", 1), ("seg-000003", 0)]
    assert segment_names(base) == ["seg-000001", "seg-000002", "seg-000003"]
    before = _chunks(base)

    index = tmp_path / "index"
    for point in OPTIMIZE:
        shutil.rmtree(index, ignore_errors=True)
        shutil.copytree(base, index)
        _kill_at(point, ["index", "optimize", "--index", str(index)], tmp_path)
        _every_snapshot_whole(index)
        assert verify(index) == [], point
        assert main(["index", "verify", "--index", str(index)]) == 0, point
        _answers_queries(index, embedder)
        assert _chunks(index) == before, point
        merged = [("seg-000004", 0)] if _committed_by(point) else _segments(base)
        assert _segments(index) == merged, point

        assert main(["index", "optimize", "--index", str(index)]) == 0, point
        _every_snapshot_whole(index)
        assert verify(index) == [], point
        assert _chunks(index) == before, point
        assert [d for _, d in _segments(index)] == [0], point
        _answers_queries(index, embedder)
        if not _committed_by(point):  # the re-run merged, and cleaned up after itself
            _no_leftovers(index)
        # An optimize that finds one segment changes nothing; the next write removes what a
        # killed run left behind.
        ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
        assert _chunks(index) == before, point
        _no_leftovers(index)


def test_sigkill_during_the_merge_that_ends_an_ingest(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    readme = _readme()
    parts = [readme[k * 1500 : (k + 1) * 1500] for k in range(TIER_FACTOR)]
    # One segment per ingest: the lowest tier one short of a merge.
    base = tmp_path / "base"
    for k, text in enumerate(parts[:-1]):
        (docs / f"part-{k}.md").write_text(text, encoding="utf-8")
        ingest([docs], base, settings, embedder=embedder, tokenizer=tokenizer)
    manifest = read_manifest(current_snapshot(base))
    assert [tier(s) for s in manifest.segments] == [0] * (TIER_FACTOR - 1)
    (docs / f"part-{TIER_FACTOR - 1}.md").write_text(parts[-1], encoding="utf-8")
    reference = tmp_path / "reference"
    ingest([docs], reference, settings, embedder=embedder, tokenizer=tokenizer)
    expected = _chunks(reference)
    assert len(_segments(reference)) == 1

    index = tmp_path / "index"
    for point, merged in POLICY_MERGE:
        shutil.rmtree(index, ignore_errors=True)
        shutil.copytree(base, index)
        _kill_at(point, _ingest_command(docs, index), tmp_path)
        _every_snapshot_whole(index)
        assert verify(index) == [], point
        assert main(["index", "verify", "--index", str(index)]) == 0, point
        _answers_queries(index, embedder)
        # The ingest's own commit is published before the merge starts.
        assert _chunks(index) == expected, point
        assert len(_segments(index)) == (1 if merged else TIER_FACTOR), point
        ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
        assert verify(index) == [], point
        assert _chunks(index) == expected, point
        _answers_queries(index, embedder)
        _no_leftovers(index)
