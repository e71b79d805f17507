"""discover -> hash -> load -> chunk -> embed (batched) -> commit, incrementally and atomically.

Loading and chunking run in a background thread while the main thread embeds, so parsing PDFs
overlaps with the embedder's forward passes. Identical chunk texts are embedded once. Everything
is published in one atomic commit at the end; an interrupted run leaves the previous index as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.chunking import Chunk, Chunker, ChunkLimits
from ingest.loaders import LoadedFile, LoadError, discover, load, load_text_document, timeout_reason
from ingest.plan import Limits, by_sha, find_vanished, plan_sync, read_candidate, source_of
from ingest.report import (
    FileProgress,
    IngestReport,
    ProgressCallback,
    SkippedFile,
    TextDocument,
    nothing_message,
)
from rag.config import Settings
from rag.errors import NothingIngested
from rag.index.crashpoints import reach
from rag.index.docstore import DocumentRecord, NewChunk
from rag.index.manifest import Manifest
from rag.index.writer import StoreWriter, open_writer
from rag.llm.tokens import Tokenizer, load_tokenizer
from rag.retrieval.embeddings import Embedder

log = logging.getLogger(__name__)


# Chunks collected from several files before one embedding call.
_FLUSH_CHUNKS = 256


_MIN_FLUSH = 32


@dataclass
class _Work:
    source: str
    sha256: str
    size: int
    loaded: LoadedFile | None
    chunks: list[Chunk]
    status: str
    reason: str | None = None
    old: DocumentRecord | None = None  # the vanished document a renamed file was
    pages_without_text: int = 0  # of a PDF skipped as a scan


class _Done:
    pass


def ingest(
    paths: Iterable[str | Path],
    index_dir: str | Path,
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    tokenizer: Tokenizer | None = None,
    progress: ProgressCallback | None = None,
    sync: bool = False,
    dry_run: bool = False,
) -> IngestReport:
    """Ingest files and folders into ``index_dir``, creating it if needed.

    Files already in the index with the same content are left alone; changed files have their
    chunks replaced. Unreadable files are reported in ``files_skipped`` and the rest goes on.
    Raises :class:`~rag.errors.NothingIngested` when files were given but none could be read.

    With ``sync``, documents whose source is one of ``paths`` or lies under one of them but no
    longer exists are deleted, and a new file with the content of such a document is taken to be
    that document moved: its source is updated and nothing is re-embedded. With ``dry_run``
    nothing is changed and no model is loaded; the report's ``plan`` lists what would change.
    """
    paths = list(paths)
    candidates: list[Path | TextDocument] = []
    skipped: list[SkippedFile] = []
    for path, reason in discover(paths):
        if reason is None:
            candidates.append(path)
        else:
            skipped.append(SkippedFile(path=str(path), reason=reason))
    scope = [Path(p).expanduser().resolve() for p in paths] if sync else None
    reach("ingest-discovered")
    if dry_run:
        return plan_sync(candidates, skipped, Path(index_dir), settings or Settings.load(), scope)
    return _ingest(candidates, skipped, index_dir, settings, embedder, tokenizer, progress, scope)


def ingest_documents(
    documents: Iterable[TextDocument],
    index_dir: str | Path,
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    tokenizer: Tokenizer | None = None,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest texts that are not files (records of a dataset, rows of a database).

    Each document's ``source`` identifies it in the index and in citations, as a path does for
    files; the same rules for unchanged and changed content apply.
    """
    return _ingest(list(documents), [], index_dir, settings, embedder, tokenizer, progress)


def _ingest(
    candidates: list[Path | TextDocument],
    skipped: list[SkippedFile],
    index_dir: str | Path,
    settings: Settings | None,
    embedder: Embedder | None,
    tokenizer: Tokenizer | None,
    progress: ProgressCallback | None,
    scope: list[Path] | None = None,
) -> IngestReport:
    settings = settings or Settings.load()
    started = time.perf_counter()
    index_dir = Path(index_dir)
    # The tokenizer first: a served model without one is a settings error, found before the
    # embedder takes seconds to load. It is the one every backend's text_tokens() gives for these
    # settings, loaded without the model's weights.
    tokenizer = tokenizer or load_tokenizer(settings)
    embedder = embedder or Embedder.from_settings(settings)
    report = IngestReport(index=str(index_dir), files_skipped=skipped)

    manifest = Manifest(
        embedder=embedder.name,
        dimension=embedder.dimension,
        tokenizer=tokenizer.name,  # the tokenizer that counted, also when one is passed in
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
    )
    chunker = Chunker(
        ChunkLimits(
            chunk_tokens=settings.chunk_tokens,
            overlap_tokens=settings.chunk_overlap,
            embed_tokens=embedder.max_tokens,
        ),
        count_llm=tokenizer.count_many,
        count_embed=embedder.count_tokens,
    )
    total = len(candidates)
    with open_writer(index_dir, manifest) as writer:
        known: dict[str, DocumentRecord] = {}
        for candidate in candidates:
            rec = writer.find_source(source_of(candidate))
            if rec is not None:
                known[rec.source] = rec
        vanished = find_vanished(writer.documents(), scope) if scope is not None else []
        renamed_ids: set[int] = set()
        work_q: queue.Queue[_Work | _Done | BaseException] = queue.Queue(maxsize=8)
        stop = threading.Event()
        producer = threading.Thread(
            target=_produce,
            args=(
                candidates,
                known,
                by_sha(vanished),
                chunker,
                Limits.of(settings),
                work_q,
                stop,
            ),
            daemon=True,
        )
        producer.start()
        cache: dict[str, np.ndarray] = {}
        pending: list[_Work] = []
        done = 0

        def notify(item: _Work, chunks: int) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                pages = len(item.loaded.pages) if item.loaded else 0
                progress(FileProgress(done, total, item.source, item.status, pages, chunks))

        def flush() -> None:
            # One embedding call for many files: full batches, sorted by length across files.
            _embed_missing(
                embedder,
                [c.text for w in pending for c in w.chunks],
                cache,
                settings.embed_batch_size,
            )
            reach("ingest-file-embedded")
            for w in pending:
                _commit_file(w, writer, known, cache, report)
                reach("ingest-file-stored")
                notify(w, len(w.chunks))
            pending.clear()

        try:
            while True:
                item = work_q.get()
                if isinstance(item, _Done):
                    break
                if isinstance(item, BaseException):
                    raise item
                if item.status == "skipped":
                    report.files_skipped.append(
                        SkippedFile(path=item.source, reason=item.reason or "")
                    )
                    report.pages_without_text += item.pages_without_text
                    notify(item, 0)
                elif item.status == "unchanged":
                    report.unchanged += 1
                    notify(item, 0)
                elif item.status == "renamed":
                    assert item.old is not None
                    writer.rename_document(item.old.id, item.source)
                    renamed_ids.add(item.old.id)
                    report.renamed += 1
                    notify(item, 0)
                else:
                    pending.append(item)
                    waiting = sum(len(w.chunks) for w in pending)
                    # Embed once enough is collected, or early when the loader is still busy
                    # with the next file, so that the embedder does not sit idle.
                    if waiting >= _FLUSH_CHUNKS or (work_q.empty() and waiting >= _MIN_FLUSH):
                        flush()
            flush()
            for doc in vanished:
                if doc.id not in renamed_ids:
                    report.chunks_removed += writer.delete_document(doc.id)
                    report.deleted += 1
        finally:
            # On any failure, release the loader thread: it may be blocked on the full queue.
            stop.set()
            while producer.is_alive():
                with contextlib.suppress(queue.Empty):
                    work_q.get(timeout=0.05)
        producer.join()
        if not (report.files_ingested or report.unchanged or report.renamed or report.deleted):
            raise NothingIngested(nothing_message(report))
        report.documents_total, report.chunks_total = writer.counts()
        if report.files_ingested or report.chunks_removed or report.renamed or report.deleted:
            reach("ingest-before-commit")
            writer.commit()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _produce(
    candidates: Sequence[Path | TextDocument],
    known: dict[str, DocumentRecord],
    renames: dict[str, list[DocumentRecord]],
    chunker: Chunker,
    limits: Limits,
    out: queue.Queue[_Work | _Done | BaseException],
    stop: threading.Event,
) -> None:
    try:
        for candidate in candidates:
            if stop.is_set():
                return
            item = _prepare(candidate, known, renames, chunker, limits)
            reach("ingest-file-loaded")
            out.put(item)
        out.put(_Done())
    except BaseException as exc:  # hand the failure to the consumer instead of dying silently
        out.put(exc)


def _prepare(
    candidate: Path | TextDocument,
    known: dict[str, DocumentRecord],
    renames: dict[str, list[DocumentRecord]],
    chunker: Chunker,
    limits: Limits,
) -> _Work:
    """Hash, load and chunk one candidate (runs in the loader thread)."""
    source = source_of(candidate)
    data, reason = read_candidate(candidate, limits)
    if data is None:
        return _Work(source, "", 0, None, [], "skipped", reason)
    sha = hashlib.sha256(data).hexdigest()
    rec = known.get(source)
    if rec is not None and rec.sha256 == sha:
        return _Work(source, sha, len(data), None, [], "unchanged")
    if rec is None and renames.get(sha):
        return _Work(source, sha, len(data), None, [], "renamed", old=renames[sha].pop(0))
    started = time.monotonic()
    try:
        if isinstance(candidate, TextDocument):
            loaded = load_text_document(candidate.source, candidate.text, candidate.title)
        else:
            loaded = load(candidate, data, time_limit=limits.timeout)
    except LoadError as exc:
        work = _Work(source, sha, len(data), None, [], "skipped", str(exc))
        work.pages_without_text = exc.pages_without_text
        return work
    chunks: list[Chunk] = []
    for n, page in enumerate(loaded.pages):
        # Checked between pages: the limit bounds the run, it cannot stop a page mid-parse.
        if n and time.monotonic() - started > limits.timeout:
            reason = f"{timeout_reason(limits.timeout)} while chunking page {page.number or 1}"
            return _Work(source, sha, len(data), None, [], "skipped", reason)
        chunks.extend(chunker.split(page))
    if not chunks:
        return _Work(source, sha, len(data), None, [], "skipped", "no text to index")
    return _Work(source, sha, len(data), loaded, chunks, "added")


def _embed_missing(
    embedder: Embedder, texts: list[str], cache: dict[str, np.ndarray], batch_size: int
) -> None:
    """Embed the texts not in ``cache``, each distinct text once per run."""
    todo: dict[str, str] = {}
    for t in texts:
        k = _text_key(t)
        if k not in cache and k not in todo:
            todo[k] = t
    if todo:
        vectors = embedder.embed(list(todo.values()), batch_size=batch_size)
        for k, v in zip(todo, vectors, strict=True):
            cache[k] = v


def _text_key(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _commit_file(
    w: _Work,
    writer: StoreWriter,
    known: dict[str, DocumentRecord],
    cache: dict[str, np.ndarray],
    report: IngestReport,
) -> None:
    assert w.loaded is not None
    vectors = np.stack([cache[_text_key(c.text)] for c in w.chunks])
    old = known.get(w.source)
    if old is not None:
        report.chunks_removed += writer.delete_document(old.id)
        report.updated += 1
    else:
        report.added += 1
    writer.add_document(
        source=w.source,
        sha256=w.sha256,
        kind=w.loaded.kind,
        size=w.size,
        pages=len(w.loaded.pages) + w.loaded.pages_without_text,
        title=w.loaded.title,
        chunks=[_new_chunk(c) for c in w.chunks],
        vectors=vectors,
    )
    report.files_ingested += 1
    report.pages += len(w.loaded.pages)
    report.pages_without_text += w.loaded.pages_without_text
    report.chars += w.loaded.chars
    report.chunks_added += len(w.chunks)


def _new_chunk(c: Chunk) -> NewChunk:
    return NewChunk(
        text=c.text,
        page=c.page,
        page_label=c.page_label,
        section=c.section,
        start=c.start,
        end=c.end,
        tokens=c.tokens,
    )
