"""Commits: the names new segments get, and what a commit reports once its data is published."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rag.errors import IndexCorrupt
from rag.index import commits as commits_module
from rag.index import writer as writer_module
from rag.index.docstore import NewChunk
from rag.index.manifest import Manifest, read_manifest
from rag.index.optimizing import optimize
from rag.index.reader import Store, open_segments
from rag.index.segment import SegmentReader
from rag.index.snapshots import current_snapshot
from rag.index.writer import StoreWriter, open_writer

DIM = 8


def _manifest() -> Manifest:
    return Manifest(embedder="e", dimension=DIM, tokenizer="t", chunk_tokens=64, chunk_overlap=8)


def _add(w: StoreWriter, source: str, n: int = 3, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    texts = [f"{source} part {i}" for i in range(n)]
    return w.add_document(
        source=source,
        sha256="0" * 64,
        kind="txt",
        size=1,
        pages=1,
        title=None,
        chunks=[NewChunk(t, None, None, None, 0, len(t), 3) for t in texts],
        vectors=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
    )


def _segments(index: Path) -> list[str]:
    return [s.name for s in read_manifest(current_snapshot(index)).segments]


# --- segment names ---


def test_segment_names_are_never_reused_once_the_index_is_empty(tmp_path: Path) -> None:
    index = tmp_path / "index"
    given: list[str] = []
    with open_writer(index, _manifest()) as w:
        doc_a = _add(w, "/a.txt", seed=1)
        w.commit()
    given += _segments(index)
    old_snapshot = current_snapshot(index)
    old_manifest = read_manifest(old_snapshot)  # what a reader read just before the deletes
    with open_writer(index, _manifest()) as w:
        w.delete_document(doc_a)
        w.commit()
    with open_writer(index, _manifest()) as w:
        doc_b = _add(w, "/b.txt", seed=2)
        w.commit()
    given += _segments(index)
    with open_writer(index, _manifest()) as w:
        w.delete_document(doc_b)
        w.commit()
    with open_writer(index, _manifest()) as w:
        w.commit()  # a commit that changes nothing: the snapshots listing a and b go
    assert _segments(index) == []
    with open_writer(index, _manifest()) as w:
        _add(w, "/c.txt", seed=3)
        w.commit()
    (name_c,) = _segments(index)
    assert name_c not in given, (name_c, given)
    # The older reader's manifest names a segment that is gone: opening it fails (and the
    # Store retries on the new CURRENT) instead of reading c's rows as a's.
    with pytest.raises(FileNotFoundError):
        open_segments(index, old_snapshot, old_manifest)
    with Store.open(index) as store:
        assert [d.source for d in store.documents()] == ["/c.txt"]


def test_an_old_manifest_without_the_counter_numbers_from_the_segments_on_disk(
    tmp_path: Path,
) -> None:
    index = tmp_path / "index"
    for n in range(2):
        with open_writer(index, _manifest()) as w:
            _add(w, f"/{n}.txt", seed=n)
            w.commit(merge=False)
    snap = current_snapshot(index)
    raw = (snap / "manifest.json").read_text(encoding="utf-8")
    data = Manifest.model_validate_json(raw).model_dump(mode="json")
    data.pop("next_segment")
    (snap / "manifest.json").write_text(Manifest(**data).model_dump_json(exclude={"next_segment"}))
    assert "next_segment" not in (snap / "manifest.json").read_text(encoding="utf-8")
    with open_writer(index, _manifest()) as w:
        _add(w, "/new.txt", seed=9)
        w.commit(merge=False)
    assert _segments(index) == ["seg-000001", "seg-000002", "seg-000003"]
    assert read_manifest(current_snapshot(index)).next_segment == 4


def test_positions_refuses_ids_that_are_not_in_the_segment(tmp_path: Path) -> None:
    index = tmp_path / "index"
    for n in range(2):
        with open_writer(index, _manifest()) as w:
            _add(w, f"/{n}.txt", seed=n)
            w.commit(merge=False)
    m = read_manifest(current_snapshot(index))
    first, second = (SegmentReader(index, info, DIM) for info in m.segments)
    try:
        assert first.positions(np.asarray(first.ids)).tolist() == [0, 1, 2]
        for foreign in (np.asarray(second.ids), np.asarray([0]), np.asarray([2, 99])):
            with pytest.raises(IndexCorrupt):
                first.positions(foreign)
    finally:
        first.close()
        second.close()


# --- what a commit reports once its data is published ---


def test_a_merge_failure_after_the_commit_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    index = tmp_path / "index"
    with open_writer(index, _manifest()) as w:
        _add(w, "/a.txt", seed=1)
        w.commit()

    def broken(index_dir: Path, snapshot: Path) -> Path:
        raise OSError("No space left on device")

    monkeypatch.setattr(writer_module, "merge_by_policy", broken)
    with caplog.at_level(logging.WARNING, logger="rag.index"), open_writer(index, _manifest()) as w:
        _add(w, "/b.txt", seed=2)
        snap = w.commit()  # returns: the data is in, only the merge after it failed
    assert snap == current_snapshot(index)
    (warning,) = w.warnings
    assert "No space left on device" in warning
    assert f"rag index optimize --index {index}" in warning
    assert any(warning in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    with Store.open(index) as store:
        assert [d.source for d in store.documents()] == ["/a.txt", "/b.txt"]
    # The next write merges and cleans up as usual, with nothing to report.
    monkeypatch.undo()
    with open_writer(index, _manifest()) as w:
        _add(w, "/c.txt", seed=3)
        w.commit()
    assert w.warnings == []


def test_a_clean_up_failure_after_the_commit_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    with open_writer(index, _manifest()) as w:
        _add(w, "/a.txt", seed=1)
        w.commit()

    def broken(index_dir: Path) -> None:
        raise PermissionError(13, "Permission denied", str(index_dir / "segments"))

    with open_writer(index, _manifest()) as w:
        _add(w, "/b.txt", seed=2)
        # Only the clean-up after the publish (rag.index.commits.clean_up_after) fails; the one at
        # lock time has run.
        monkeypatch.setattr(commits_module, "remove_unreferenced_segments", broken)
        snap = w.commit()
    assert snap == current_snapshot(index)
    (warning,) = w.warnings
    assert "Permission denied" in warning and f"rag index verify --index {index}" in warning
    with Store.open(index) as store:
        assert [d.source for d in store.documents()] == ["/a.txt", "/b.txt"]


def test_a_clean_up_failure_after_optimize_merged_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    index = tmp_path / "index"
    for i, source in enumerate(("/a.txt", "/b.txt")):
        with open_writer(index, _manifest()) as w:
            _add(w, source, seed=i + 1)
            w.commit(merge=False)

    def broken(index_dir: Path) -> None:
        raise PermissionError(13, "Permission denied", str(index_dir / "segments"))

    # The clean-up after the merge (rag.index.commits.clean_up_after) fails; the one at lock time
    # (rag.index.writer.clean_at_lock) runs.
    monkeypatch.setattr(commits_module, "remove_unreferenced_segments", broken)
    with caplog.at_level("WARNING"):
        before, after = optimize(index)  # type: ignore[misc]
    assert len(before.segments) == 2 and len(after.segments) == 1
    assert "Permission denied" in caplog.text and "rag index verify" in caplog.text
    with Store.open(index) as store:
        assert sorted(d.source for d in store.documents()) == ["/a.txt", "/b.txt"]
