"""Combining dense and lexical rankings into one (hybrid retrieval)."""

from __future__ import annotations

from collections.abc import Sequence

Ranking = Sequence[tuple[int, float]]  # (id, score), best first

RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Ranking], k: int = RRF_K) -> list[tuple[int, float]]:
    """Plain RRF (Cormack et al. 2009): sum of 1 / (k + rank) over the rankings."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (i, _) in enumerate(ranking, start=1):
            fused[i] = fused.get(i, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda x: -x[1])


def convex_fusion(dense: Ranking, lexical: Ranking, alpha: float) -> list[tuple[int, float]]:
    """``alpha * dense + (1 - alpha) * lexical`` over min-max normalised scores.

    A candidate missing from one list gets that list's minimum (0 after normalisation). Unlike
    RRF this keeps how far apart the scores are, not only their order, which is what makes it
    better on benchmarks when alpha is tuned (Bruch et al., "An Analysis of Fusion Functions for
    Hybrid Retrieval", 2023).
    """
    d = _minmax(dense)
    lx = _minmax(lexical)
    ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in lexical]))
    fused = [(i, alpha * d.get(i, 0.0) + (1 - alpha) * lx.get(i, 0.0)) for i in ids]
    return sorted(fused, key=lambda x: -x[1])


def _minmax(ranking: Ranking) -> dict[int, float]:
    if not ranking:
        return {}
    scores = [s for _, s in ranking]
    lo, hi = min(scores), max(scores)
    span = hi - lo
    if span <= 0:
        return {i: 1.0 for i, _ in ranking}
    return {i: (s - lo) / span for i, s in ranking}
