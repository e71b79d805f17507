"""The driver's side of ``rag ingest --ray``: a Ray Data pipeline whose results come back to the
ingesting process as the same :class:`~ingest.parsing.Work` items, in the same order, as a local
ingest's parse workers give, with their vectors attached; the pipeline writes and commits them as
it does locally (one segment, one commit, the same sync semantics and report).

The dataset: one row per file (its path, and the content hash the index holds for that source) ->
``flat_map`` in Ray tasks: read, hash, triage, parse and chunk (:func:`ingest.ray_stages.parse_row`)
-> ``map_batches`` over an actor pool: embed (:class:`ingest.ray_stages.EmbedChunks`, on a GPU
each where the cluster has GPUs) -> back here in order (``preserve_order``). Ray Data streams it:
blocks flow through the stages under its memory budget, so neither the driver nor a worker holds
the corpus.

On a cluster, every node must see the files at the paths given (a shared file system) and have the
same packages installed (the embedding model comes from a package).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import socket
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ingest.parsing import ParserSetup, Work
from ingest.plan import Limits, source_of
from ingest.ray_stages import EmbedChunks, parse_row
from ingest.report import TextDocument
from rag.config import Settings
from rag.errors import ConfigError
from rag.index.docstore import DocumentRecord

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "Ingesting on Ray needs Ray Data: pip install 'rag-toolkit[ray]' (or pip install 'ray[data]')"
)

# Files per block of the first stage (a parse task's files): at least 4 blocks per parse task to
# spread the work, at most this many files each (fewer, larger tasks cost Ray less per file: 4
# files per block took 1.07x the time of 16 or more on 800-1,500 small files, on 2 cores).
_MAX_FILES_PER_BLOCK = 32
# Rows (chunks, and a header per file) per embedding batch.
_EMBED_ROWS = 512


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # the extra, not just the core
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return ray


class RaySource:
    """The parsed and embedded candidates from a Ray cluster, in the order of ``candidates``.

    ``address``: "" joins the cluster that ``RAY_ADDRESS`` or a ``ray start`` on this machine
    names, or starts a local one; else a cluster address (``HOST:PORT``, ``ray://HOST:PORT``). A
    process where Ray is already initialised uses its cluster. ``workers`` bounds the parse tasks
    that run at once (default: the cluster's CPUs).
    """

    def __init__(
        self,
        candidates: Sequence[Path | TextDocument],
        known: dict[str, DocumentRecord],
        renames: dict[str, list[DocumentRecord]],
        settings: Settings,
        setup: ParserSetup,
        limits: Limits,
        embedder_name: str,
        *,
        address: str,
        workers: int | None,
    ) -> None:
        ray = import_ray()
        if not setup.portable:
            raise ConfigError(
                "Ingesting on Ray needs tokenizers that can be sent to other processes (a "
                "Hugging Face fast tokenizer); set tokenizer to one, or ingest without --ray"
            )
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            if address:
                check_reachable(address)
            ray.init(address=address or None, include_dashboard=False)
        self._renames = renames
        self._local_parser = setup
        self._count = len(candidates)
        self._pending: deque[tuple[Work, list[str], list[np.ndarray]]] = deque()
        self._saved: tuple[bool, bool] | None = None
        try:
            self._ds = self._dataset(
                candidates, known, settings, setup, limits, embedder_name, workers
            )
        except BaseException:
            self.close()  # a cluster started here ends here, not with the process
            raise

    def _dataset(
        self,
        candidates: Sequence[Path | TextDocument],
        known: dict[str, DocumentRecord],
        settings: Settings,
        setup: ParserSetup,
        limits: Limits,
        embedder_name: str,
        workers: int | None,
    ) -> Any:
        ray = self._ray
        # Ray Data's options for this process, put back by close() for the caller's own datasets.
        data = self._data = ray.data.DataContext.get_current()
        self._saved = (data.execution_options.preserve_order, data.enable_progress_bars)
        data.execution_options.preserve_order = True
        data.enable_progress_bars = False  # the ingest reports its own progress
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        plan = _resources(ray, workers)
        rows = [
            {
                "file": n,
                "candidate": pickle.dumps(c),
                "known": rec.sha256 if (rec := known.get(source_of(c))) else "",
            }
            for n, c in enumerate(candidates)
        ]
        moved = frozenset(self._renames)
        blocks = _blocks(len(rows), plan.parse_tasks)
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        # Ray Data retries a task whose worker died and restarts a dead actor (its defaults).
        ds = ds.flat_map(
            parse_row,
            fn_kwargs={"setup": pickle.dumps(setup), "limits": limits, "moved": moved},
            num_cpus=plan.parse_cpus,
            compute=ray.data.TaskPoolStrategy(size=plan.parse_tasks),
        )
        ds = ds.map_batches(
            EmbedChunks,
            fn_constructor_kwargs={
                "settings_json": settings.model_dump_json(),
                "embedder_name": embedder_name,
            },
            batch_size=max(_EMBED_ROWS, 4 * settings.embed_batch_size),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.actor_cpus,
            num_gpus=plan.actor_gpus,
        )
        log.info("Ingesting on Ray: %s", plan)
        return ds

    def __iter__(self) -> Iterator[Work]:
        work: Work | None = None
        texts: list[str] = []
        vectors: list[np.ndarray] = []
        emitted = 0
        for batch in self._ds.iter_batches(batch_size=None, batch_format="numpy"):
            # Every file this batch completes is taken from it before the first is yielded, so
            # that ready() can tell the caller whether the next one is here or on the cluster.
            for part, text, meta, vector in zip(
                batch["part"], batch["text"], batch["meta"], batch["vector"], strict=True
            ):
                if part < 0:
                    work = pickle.loads(meta)
                    texts, vectors = [], []
                else:
                    texts.append(str(text))
                    vectors.append(vector)
                assert work is not None
                if len(texts) == len(work.chunks):
                    self._pending.append((work, texts, vectors))
            while self._pending:
                emitted += 1
                yield self._finish(*self._pending.popleft())
        if emitted != self._count:
            raise RuntimeError(f"Ray returned {emitted} of {self._count} files")

    def _finish(self, work: Work, texts: list[str], vectors: list[np.ndarray]) -> Work:
        if work.chunks:
            work.chunks = [
                dataclasses.replace(c, text=t) for c, t in zip(work.chunks, texts, strict=True)
            ]
            work.vectors = np.stack(vectors).astype(np.float32, copy=False)
        if work.status == "renamed" and work.old is None:
            claimed = self._renames.get(work.sha256)
            if claimed:
                work.old = claimed.pop(0)
            else:  # another file took the vanished document first: this one is new
                candidate = Path(work.source)
                work = self._local_parser()(candidate)
        return work

    def ready(self) -> bool:
        """Whether the next file is already here (iterating would not wait for the cluster)."""
        return bool(self._pending)

    def close(self) -> None:
        if self._saved is not None:
            options = self._data
            options.execution_options.preserve_order, options.enable_progress_bars = self._saved
            self._saved = None
        if self._started:
            self._started = False
            self._ray.shutdown()

    def __enter__(self) -> RaySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_reachable(address: str) -> None:
    """Fail at once, with what to do, when nothing listens at a cluster's address (``ray.init``
    would wait minutes for it)."""
    if address == "auto":  # Ray's own word for "the cluster this machine knows of"
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--ray {address!r} is not a cluster address: give HOST:PORT (the head's GCS port, "
            "6379 by default) or ray://HOST:PORT, or no address to use a local cluster"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigError(
            f"No Ray cluster answers at {address} ({exc.strerror or exc}). Start one there with "
            "`ray start --head`, check the address, or leave it out to start a local cluster."
        ) from exc


@dataclasses.dataclass(frozen=True)
class _Plan:
    parse_tasks: int
    parse_cpus: float
    actors: int
    actor_cpus: float
    actor_gpus: float


def _resources(ray: Any, workers: int | None) -> _Plan:
    """Parse tasks and embedding actors for the cluster: one actor per GPU where there are GPUs,
    else one per node; the actors' CPUs reserved first, the parse tasks sharing the rest. Shares
    are fractional so that on a small machine the actors never take every CPU from the parse tasks
    (the pipeline would stall)."""
    total = ray.cluster_resources()
    cpus = float(total.get("CPU", os.cpu_count() or 1))
    gpus = int(total.get("GPU", 0))
    if gpus:
        actors, actor_cpus, actor_gpus = gpus, min(1.0, cpus / (2 * gpus)), 1.0
    else:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU"))
        actors = max(1, nodes)
        actor_cpus, actor_gpus = min(1.0, cpus / (4 * actors)), 0.0
    tasks = workers or max(1, int(cpus))
    parse_cpus = max(0.1, min(1.0, (cpus - actors * actor_cpus) / tasks))
    return _Plan(tasks, round(parse_cpus, 3), actors, round(actor_cpus, 3), actor_gpus)


def _blocks(files: int, tasks: int) -> int:
    per_block = max(1, min(_MAX_FILES_PER_BLOCK, files // (4 * tasks)))
    return max(1, -(-files // per_block))
