"""What runs on the Ray cluster for ``rag ingest --ray``: the parse stage (Ray tasks) and the
embedding stage (an actor pool under ``map_batches``). The driver's side is :mod:`ingest.ray_source`.

Rows between the stages: one header row per file (``part`` -1, ``meta`` the pickled
:class:`~ingest.parsing.Work` with its chunks' texts left out) followed by one row per chunk
(``part`` 0, 1, ...; ``text`` the chunk's text). The embedding stage adds ``vector`` (zeros on
header rows). A file is read, hashed and triaged by the task that parses it, so the driver reads no
file: an unchanged file is recognised on the cluster and never parsed.

A parse runs in a child process of the Ray worker (:class:`IsolatedParser`), as a local ingest runs
it in a worker process: a page that never ends is stopped by killing that child at
``file_timeout``, and a parser that crashes the process takes only the child with it; either way
the file is skipped with the reason, and the Ray worker lives on. A Ray worker that dies (a killed
process, a lost node) has its task retried by Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing.connection
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from ingest.parsing import Work, kill_grace, lost_reason
from ingest.plan import Limits, read_candidate, source_of
from ingest.report import TextDocument
from ingest.vector_cache import VectorCache, embed_missing, text_key
from ingest.worker_process import Worker
from ingest.workers import Lost, context
from rag.config import Settings
from rag.index.crashpoints import reach
from rag.retrieval.embeddings import Embedder

# Vectors an embedding actor keeps to embed identical chunk texts once (the most recent ones).
_DEDUP_BYTES = 64 * 1024 * 1024

# One parser process per Ray worker process and parser set-up, kept across tasks.
_parsers: dict[bytes, IsolatedParser] = {}


class IsolatedParser:
    """One parser process, kept across files: each call sends it a file and waits for the result
    until the time limit, killing (and later replacing) the process when the limit passes or
    when the process dies. Gives the parser's result, or :class:`~ingest.workers.Lost`."""

    def __init__(self, setup: bytes, timeout: float) -> None:
        self._setup = setup
        self._timeout = timeout
        self._worker: Worker | None = None

    def __call__(self, task: Any) -> Any:
        w = self._worker
        if w is None or w.closed or w.process.exitcode is not None or not w.send(0, task, 0.0):
            self.close()
            w = self._worker = Worker(context(), self._setup)
            if not w.send(0, task, 0.0):
                return self._lose(w, timed_out=False)
        # The clock starts when the process has its parser ready (set-up is not the file's time).
        w.deadline = time.monotonic() + self._timeout if w.ready else float("inf")
        while True:
            left = w.deadline - time.monotonic()
            ready = multiprocessing.connection.wait(
                [w.conn, w.process.sentinel], None if left == float("inf") else max(0.0, left)
            )
            if w.conn in ready or w.conn.poll():
                try:
                    message = w.conn.recv()
                except (EOFError, OSError):
                    return self._lose(w, timed_out=False)
                kind = message[0]
                if kind == "ready":
                    w.ready = True
                    w.deadline = time.monotonic() + self._timeout
                    continue
                if kind == "failed":  # its set-up raised: so would every other process's
                    self.close()
                    raise message[1]
                w.index = w.task = None
                if kind == "error":
                    raise message[2]
                return message[2]
            if ready:  # the process is gone
                return self._lose(w, timed_out=False)
            return self._lose(w, timed_out=True)

    def _lose(self, w: Worker, *, timed_out: bool) -> Lost:
        task = w.task
        exitcode = w.stop()
        self._worker = None
        return Lost(task, timed_out, exitcode)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def parse_row(
    row: dict[str, Any], *, setup: bytes, limits: Limits, moved: frozenset[str]
) -> list[dict[str, Any]]:
    """The parse stage: one file's row in, its header row and chunk rows out."""
    candidate: Path | TextDocument = pickle.loads(row["candidate"])
    known: str = row["known"]
    try:
        work = _triage(candidate, known or None, moved, limits)
        if work is None:
            work = _parse(candidate, setup, limits)
    except Exception as exc:  # a bug or an odd file must not fail the whole dataset
        work = Work(source_of(candidate), "", 0, None, [], "skipped", f"failed to parse: {exc!r}")
    header = dataclasses.replace(
        work, chunks=[dataclasses.replace(c, text="") for c in work.chunks]
    )
    file = row["file"]
    reach("ray-file-parsed")
    out = [{"file": file, "part": -1, "text": "", "meta": pickle.dumps(header)}]
    out += [
        {"file": file, "part": n, "text": c.text, "meta": b""} for n, c in enumerate(work.chunks)
    ]
    return out


def _triage(
    candidate: Path | TextDocument, known: str | None, moved: frozenset[str], limits: Limits
) -> Work | None:
    """What needs no parsing, as :func:`ingest.parsing.triage_file` decides it locally. A file
    whose content is that of a vanished document comes back as "renamed" without the document,
    which the driver picks (two files may claim the same one)."""
    source = source_of(candidate)
    data, reason = read_candidate(candidate, limits)
    if data is None:
        return Work(source, "", 0, None, [], "skipped", reason)
    sha = hashlib.sha256(data).hexdigest()
    if known == sha:
        return Work(source, sha, len(data), None, [], "unchanged")
    if known is None and sha in moved:
        return Work(source, sha, len(data), None, [], "renamed")
    return None


def _parse(candidate: Path | TextDocument, setup: bytes, limits: Limits) -> Work:
    key = hashlib.blake2b(setup, digest_size=16).digest()
    parser = _parsers.get(key)
    if parser is None:
        parser = _parsers[key] = IsolatedParser(setup, limits.timeout + kill_grace(limits.timeout))
    result = parser(candidate)
    if isinstance(result, Lost):
        return Work(source_of(candidate), "", 0, None, [], "skipped", lost_reason(result, limits))
    assert isinstance(result, Work)
    return result


class EmbedChunks:
    """The embedding stage: an actor that loads the embedder once and adds ``vector`` to each
    batch of rows, embedding each distinct chunk text once while it is among the recent ones."""

    def __init__(self, settings_json: str, embedder_name: str) -> None:
        settings = Settings.model_validate_json(settings_json)
        # embed_quantize "auto" follows the driver's decision, whatever device this node has.
        self._embedder = Embedder.from_settings(settings, embedder_name)
        if self._embedder.name != embedder_name:
            raise RuntimeError(
                f"the embedder on this Ray node is {self._embedder.name!r}, the index's is "
                f"{embedder_name!r}: install the same packages on every node"
            )
        self._batch_size = settings.embed_batch_size
        self._cache = VectorCache(_DEDUP_BYTES // (4 * self._embedder.dimension + 200))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        is_chunk = batch["part"] >= 0
        texts = [str(t) for t in batch["text"][is_chunk]]
        vectors = np.zeros((len(is_chunk), self._embedder.dimension), dtype=np.float32)
        if texts:
            found = embed_missing(self._embedder, texts, self._cache, self._batch_size)
            vectors[is_chunk] = np.stack([found[text_key(t)] for t in texts])
        batch["vector"] = vectors
        reach("ray-batch-embedded")
        return batch
