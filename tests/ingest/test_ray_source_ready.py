"""RaySource.ready(): whether the next file is already on the driver, which the pipeline's flush
heuristic reads (flush the chunks waiting to be written when the next file would keep it
waiting). It was always True, so the pipeline never flushed while Ray worked.

The dataset here is a stand-in that yields prepared batches: the subject is the driver-side
bookkeeping between batches, and a real Ray cluster cannot be asked to deliver batches at
chosen boundaries. The Ray pipeline itself is tested in test_ray.py.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from ingest.chunking import Chunk
from ingest.parsing import Work
from ingest.ray_source import RaySource


def _work(name: str, chunks: int) -> Work:
    chunk = Chunk(text="", start=0, end=0, page=None, page_label=None, section=None, tokens=1)
    return Work(name, "sha", 1, None, [chunk] * chunks, "added")


def _rows(work: Work) -> list[tuple[int, str, bytes, np.ndarray]]:
    head = (-1, "", pickle.dumps(work), np.zeros(2, np.float32))
    parts = [
        (i, f"{work.source} {i}", b"", np.ones(2, np.float32)) for i in range(len(work.chunks))
    ]
    return [head, *parts]


class _Batches:
    def __init__(self, batches: list[list[tuple[int, str, bytes, np.ndarray]]]) -> None:
        self.batches = batches

    def iter_batches(self, **_: Any) -> Iterator[dict[str, Any]]:
        for rows in self.batches:
            part, text, meta, vector = zip(*rows, strict=True)
            yield {"part": part, "text": text, "meta": meta, "vector": vector}


def test_ready_says_whether_the_next_file_is_already_here() -> None:
    a, b, c = _work("a", 1), _work("b", 2), _work("c", 1)
    rows_b = _rows(b)
    # Batch 1 completes a and starts b; batch 2 completes b and c.
    batches = [_rows(a) + rows_b[:2], rows_b[2:] + _rows(c)]
    source = object.__new__(RaySource)
    source._ds = _Batches(batches)
    source._count = 3
    source._pending = deque()
    source._renames = {}
    seen = []
    for work in source:
        seen.append((work.source, source.ready(), [ch.text for ch in work.chunks]))
    assert seen == [
        ("a", False, ["a 0"]),  # b is not complete until the next batch arrives
        ("b", True, ["b 0", "b 1"]),  # c came in the same batch
        ("c", False, ["c 0"]),
    ]
