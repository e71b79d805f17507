"""discover -> hash -> load -> chunk -> embed (batched) -> commit, incrementally and atomically.

Files are hashed in this process, in order, and those that need parsing are loaded and chunked in
worker processes (:mod:`ingest.workers`) while the main thread embeds, so parsing PDFs uses every
core and overlaps with the embedder's forward passes; a file whose parse outlives ``file_timeout``
has its worker killed and is skipped with the reason. Results come back in the order of the files,
so the index and the report are those of a one-worker run. Identical chunk texts are embedded once
while they are among the recent ones (a bounded cache: memory does not grow with the corpus).
Everything is published in one atomic commit at the end; an interrupted run leaves the previous
index as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.chunking import Chunk, Chunker, ChunkLimits, Counter
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
from ingest.workers import Job, Lost, ParsePool, ThreadSource, portable_counter, warm_up
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

# Parsed files held for the embedder beyond the one it waits for (the queue between the two).
_WINDOW = 8

# Vectors kept for embedding identical chunk texts once: the most recent texts, this many bytes.
_DEDUP_BYTES = 64 * 1024 * 1024


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
    workers: int | None = None,
) -> IngestReport:
    """Ingest files and folders into ``index_dir``, creating it if needed.

    Files already in the index with the same content are left alone; changed files have their
    chunks replaced. Unreadable files are reported in ``files_skipped`` and the rest goes on.
    Raises :class:`~rag.errors.NothingIngested` when files were given but none could be read.

    With ``sync``, documents whose source is one of ``paths`` or lies under one of them but no
    longer exists are deleted, and a new file with the content of such a document is taken to be
    that document moved: its source is updated and nothing is re-embedded. With ``dry_run``
    nothing is changed and no model is loaded; the report's ``plan`` lists what would change.

    ``workers`` processes parse and chunk files (default: ``settings.ingest_workers``, or the
    number of cores); 0 parses in a thread of this process, where a hanging parse is not stopped.
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
    return _ingest(
        candidates, skipped, index_dir, settings, embedder, tokenizer, progress, scope, workers
    )


def ingest_documents(
    documents: Iterable[TextDocument],
    index_dir: str | Path,
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    tokenizer: Tokenizer | None = None,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Ingest texts that are not files (records of a dataset, rows of a database).

    Each document's ``source`` identifies it in the index and in citations, as a path does for
    files; the same rules for unchanged and changed content apply. ``workers`` as for
    :func:`ingest`.
    """
    return _ingest(
        list(documents), [], index_dir, settings, embedder, tokenizer, progress, None, workers
    )


def _ingest(
    candidates: list[Path | TextDocument],
    skipped: list[SkippedFile],
    index_dir: str | Path,
    settings: Settings | None,
    embedder: Embedder | None,
    tokenizer: Tokenizer | None,
    progress: ProgressCallback | None,
    scope: list[Path] | None = None,
    workers: int | None = None,
) -> IngestReport:
    settings = settings or Settings.load()
    started = time.perf_counter()
    index_dir = Path(index_dir)
    if workers is None:
        workers = settings.ingest_workers
    if workers is None:
        workers = os.cpu_count() or 1
    workers = min(workers, len(candidates))
    if workers:
        warm_up()  # the fork server imports the parsers while the models load here
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
    chunk_limits = ChunkLimits(
        chunk_tokens=settings.chunk_tokens,
        overlap_tokens=settings.chunk_overlap,
        embed_tokens=embedder.max_tokens,
    )
    limits = Limits.of(settings)
    total = len(candidates)
    with open_writer(index_dir, manifest) as writer:
        known: dict[str, DocumentRecord] = {}
        for candidate in candidates:
            rec = writer.find_source(source_of(candidate))
            if rec is not None:
                known[rec.source] = rec
        vanished = find_vanished(writer.documents(), scope) if scope is not None else []
        renames = by_sha(vanished)
        renamed_ids: set[int] = set()
        cache = _VectorCache(_DEDUP_BYTES // (4 * embedder.dimension + 200))
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
            vectors = _embed_missing(
                embedder,
                [c.text for w in pending for c in w.chunks],
                cache,
                settings.embed_batch_size,
            )
            reach("ingest-file-embedded")
            for w in pending:
                _commit_file(w, writer, known, vectors, report)
                reach("ingest-file-stored")
                notify(w, len(w.chunks))
            pending.clear()

        def triage(candidate: Path | TextDocument) -> _Work | Job:
            return _triage(candidate, known, renames, limits)

        with _parse_source(
            candidates, triage, tokenizer, embedder, chunk_limits, limits, workers
        ) as parsed:
            for item in parsed:
                reach("ingest-file-loaded")
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
                    # Embed once enough is collected, or early when the parsers are still busy
                    # with the next file, so that the embedder does not sit idle.
                    if waiting >= _FLUSH_CHUNKS or (not parsed.ready() and waiting >= _MIN_FLUSH):
                        flush()
            flush()
        for doc in vanished:
            if doc.id not in renamed_ids:
                report.chunks_removed += writer.delete_document(doc.id)
                report.deleted += 1
        if not (report.files_ingested or report.unchanged or report.renamed or report.deleted):
            raise NothingIngested(nothing_message(report))
        report.documents_total, report.chunks_total = writer.counts()
        if report.files_ingested or report.chunks_removed or report.renamed or report.deleted:
            reach("ingest-before-commit")
            writer.commit()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _parse_source(
    candidates: Sequence[Path | TextDocument],
    triage: Callable[[Path | TextDocument], _Work | Job],
    tokenizer: Tokenizer,
    embedder: Embedder,
    chunk_limits: ChunkLimits,
    limits: Limits,
    workers: int,
) -> ThreadSource | _LostAsSkipped:
    """The parsed candidates, in order: from ``workers`` processes, or from a thread of this
    process when ``workers`` is 0 or a tokenizer cannot be sent to a process."""
    # Counters of their own, also for a thread: the embedder's Hugging Face tokenizer resets its
    # padding at each call, so counting with it while it encodes a batch (padded) on the main
    # thread could strip that batch's padding.
    count_llm = portable_counter(tokenizer)
    count_embed = portable_counter(embedder.model.tokenizer)
    portable = count_llm is not None and count_embed is not None
    if count_llm is None or count_embed is None:
        count_llm, count_embed = tokenizer.count_many, embedder.count_tokens
    setup = _ParserSetup(chunk_limits, count_llm, count_embed, limits)
    if workers and portable:
        pool = ParsePool(
            candidates,
            triage,
            setup,
            processes=workers,
            timeout=limits.timeout + _kill_grace(limits.timeout),
            window=_WINDOW,
        )
        return _LostAsSkipped(pool, limits)
    if workers:
        log.warning("The tokenizer cannot be sent to worker processes; parsing in a thread")
    return ThreadSource(candidates, triage, setup, window=_WINDOW)


def _kill_grace(timeout: float) -> float:
    """How long past ``file_timeout`` a worker may run before it is killed. A parser checks the
    limit itself between pages and stops with the page named; the kill is for a page that never
    ends, and must not catch a small file on a busy machine when the limit is tiny."""
    return max(1.0, 0.05 * timeout)


class _LostAsSkipped:
    """A pool's results, where a file whose worker was killed or died is skipped with why."""

    def __init__(self, pool: ParsePool, limits: Limits) -> None:
        self.pool = pool
        self.limits = limits

    def __iter__(self) -> Iterator[_Work]:
        for result in self.pool:
            if isinstance(result, Lost):
                yield _Work(source_of(result.task), "", 0, None, [], "skipped", self._why(result))
            else:
                yield result

    def _why(self, lost: Lost) -> str:
        if lost.timed_out:
            return f"{timeout_reason(self.limits.timeout)}; its parser process was killed"
        code = lost.exitcode
        if code is not None and code < 0:
            try:
                return f"the parser crashed ({signal.Signals(-code).name})"
            except ValueError:
                pass
        return f"the parser crashed (exit code {code})"

    def ready(self) -> bool:
        return self.pool.ready()

    def __enter__(self) -> _LostAsSkipped:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.close()


def _triage(
    candidate: Path | TextDocument,
    known: dict[str, DocumentRecord],
    renames: dict[str, list[DocumentRecord]],
    limits: Limits,
) -> _Work | Job:
    """Read and hash one candidate (in this process, in the order of the candidates): what needs
    no parsing is decided here, the rest is a job for a parser."""
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
    return Job(candidate)


@dataclass(frozen=True)
class _ParserSetup:
    """What a parser needs, sent to each worker process: it builds the chunker there."""

    chunk_limits: ChunkLimits
    count_llm: Counter
    count_embed: Counter
    limits: Limits

    def __call__(self) -> _Parser:
        return _Parser(Chunker(self.chunk_limits, self.count_llm, self.count_embed), self.limits)


@dataclass
class _Parser:
    chunker: Chunker
    limits: Limits

    def __call__(self, candidate: Path | TextDocument) -> _Work:
        """Load and chunk one candidate. The file is read again here, in the worker, rather than
        sent; its hash is that of the bytes parsed."""
        limits = self.limits
        source = source_of(candidate)
        started = time.monotonic()
        data, reason = read_candidate(candidate, limits)
        if data is None:
            return _Work(source, "", 0, None, [], "skipped", reason)
        sha = hashlib.sha256(data).hexdigest()
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
            # Checked between pages, for a parse in a thread; a worker is killed at the limit.
            if n and time.monotonic() - started > limits.timeout:
                reason = f"{timeout_reason(limits.timeout)} while chunking page {page.number or 1}"
                return _Work(source, sha, len(data), None, [], "skipped", reason)
            chunks.extend(self.chunker.split(page))
        if not chunks:
            return _Work(source, sha, len(data), None, [], "skipped", "no text to index")
        return _Work(source, sha, len(data), loaded, chunks, "added")


class _VectorCache:
    """Vectors of the most recently embedded chunk texts, by digest: a duplicated file, or a page
    repeated across files, is embedded once while its texts are among the last ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def get(self, key: bytes) -> np.ndarray | None:
        v = self._vectors.get(key)
        if v is not None:
            self._vectors.move_to_end(key)
        return v

    def put(self, key: bytes, vector: np.ndarray) -> None:
        self._vectors[key] = vector
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.capacity:
            self._vectors.popitem(last=False)

    def __len__(self) -> int:
        return len(self._vectors)


def _embed_missing(
    embedder: Embedder, texts: list[str], cache: _VectorCache, batch_size: int
) -> dict[bytes, np.ndarray]:
    """The vectors of ``texts`` by digest: from ``cache``, else embedded (each distinct text
    once); the embedded ones go into ``cache``."""
    found: dict[bytes, np.ndarray] = {}
    todo: dict[bytes, str] = {}
    for t in texts:
        k = _text_key(t)
        if k in found or k in todo:
            continue
        v = cache.get(k)
        if v is None:
            todo[k] = t
        else:
            found[k] = v
    if todo:
        vectors = embedder.embed(list(todo.values()), batch_size=batch_size)
        for k, v in zip(todo, vectors, strict=True):
            found[k] = v
            cache.put(k, v)
    return found


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _commit_file(
    w: _Work,
    writer: StoreWriter,
    known: dict[str, DocumentRecord],
    vectors_of: dict[bytes, np.ndarray],
    report: IngestReport,
) -> None:
    assert w.loaded is not None
    vectors = np.stack([vectors_of[_text_key(c.text)] for c in w.chunks])
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
