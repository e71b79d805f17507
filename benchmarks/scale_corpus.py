"""The data of benchmarks/scale.py: SciFact sentence chunks, seeded vectors and queries, and the
exact search that recall is measured against. Both sides get exactly the same chunks and vectors.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

DIM = 384
NOISE = 0.5  # query = stored vector + 0.5 * random unit vector: cosine 1/sqrt(1.25) = 0.89
COPY_NOISE = 0.4  # embedded vectors: as benchmarks/ann_data.py grows real embeddings (cosine 0.93)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s*(?=[A-Z(\[])")  # abstracts often lack the space: "x.A"


def load_sentences(data: Path) -> list[str]:
    """Distinct sentence-sized chunks of the SciFact corpus, in corpus order."""
    seen: dict[str, None] = {}
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            for part in [doc.get("title") or "", *_SENTENCE_END.split(doc.get("text") or "")]:
                # Whitespace normalised: the retriever collapses texts equal up to whitespace, and
                # recall compares texts, so every chunk text must be distinct in that sense.
                text = " ".join(part.split())
                if len(text) >= 20:
                    seen.setdefault(text)
    return list(seen)


def chunk_text(pool: Sequence[str], row: int) -> str:
    """The text of chunk ``row``: the corpus in order, then again with a copy suffix."""
    copy, i = divmod(row, len(pool))
    return pool[i] if copy == 0 else f"{pool[i]} [copy {copy + 1}]"


def documents(n: int, seed: int) -> Iterator[tuple[str, int, int]]:
    """(source, first row, number of chunks) of documents of 5-20 consecutive chunks."""
    rng = np.random.default_rng(seed + 3)
    row, doc = 0, 0
    while row < n:
        count = min(int(rng.integers(5, 21)), n - row)
        yield f"scifact/doc-{doc:07d}.txt", row, count
        row, doc = row + count, doc + 1


def load_queries(data: Path, limit: int | None) -> list[str]:
    texts: dict[str, None] = {}
    with open(data / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            texts.setdefault(" ".join(json.loads(line)["text"].split()))
    return list(texts)[:limit]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def write_vectors(path: Path, n: int, seed: int) -> None:
    """``n`` seeded random unit vectors as a .npy file, written in blocks (1M take 1.5 GB)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, DIM))
    rng = np.random.default_rng(seed)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = unit(rng.standard_normal((hi - lo, DIM), dtype=np.float32))
    out.flush()
    del out


def added_documents(
    pool: Sequence[str], seed: int, count: int, base: np.ndarray | None = None
) -> list[tuple[list[str], np.ndarray]]:
    """The small documents both sides add to the built index, one commit each: 5 chunks and
    their vectors per document. Vectors are random unit vectors, or with ``base`` (one vector
    per sentence of ``pool``) noisy copies of the chosen sentences' vectors, like the rest."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for d in range(count):
        picked = rng.choice(len(pool), 5, replace=False)
        texts = [f"{pool[int(i)]} [added {d + 1}]" for i in picked]
        noise = unit(rng.standard_normal((5, DIM), dtype=np.float32))
        out.append((texts, noise if base is None else unit(base[picked] + COPY_NOISE * noise)))
    return out


def query_vectors(vectors: np.ndarray, n: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 2)
    rows = np.sort(rng.integers(0, n, count))
    noise = unit(rng.standard_normal((count, DIM), dtype=np.float32))
    return unit(np.asarray(vectors[rows]) + NOISE * noise)


def exact_top_k(
    vectors: np.ndarray, n: int, extra: np.ndarray, queries: np.ndarray, k: int
) -> np.ndarray:
    """Rows of the ``k`` best inner products over vectors[:n] then ``extra``, by brute force."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for lo in range(0, n + len(extra), 65_536):
        hi = min(n + len(extra), lo + 65_536)
        block = np.concatenate([vectors[lo : min(hi, n)], extra[max(lo - n, 0) : max(hi - n, 0)]])
        s = np.concatenate([best_s, queries @ block.T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, hi), (len(queries), hi - lo))], 1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if s.shape[1] > k else np.argsort(-s, 1)
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i
