"""The FAISS side of a snapshot: the library, loaded on first use, and id selectors for filters."""

from __future__ import annotations

from typing import Any

import numpy as np


def faiss_module() -> Any:
    import faiss

    return faiss


def bitmap_selector(ids: np.ndarray) -> Any:
    """A faiss selector of chunk ids: one bit per id up to the largest, so it stays small (an
    index of a million chunks takes 125 KB) and costs one bit test per scanned vector."""
    size = int(ids.max()) + 1 if len(ids) else 0
    mask = np.zeros(size, dtype=bool)
    mask[ids] = True
    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss_module().IDSelectorBitmap(bitmap)
    selector.bitmap_array = bitmap  # the selector points into this array: keep it alive
    return selector
