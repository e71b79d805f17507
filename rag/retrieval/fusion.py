"""Combining dense and lexical rankings into one (hybrid retrieval)."""

from __future__ import annotations

from collections.abc import Sequence

Ranking = Sequence[tuple[int, float]]  # (id, score), best first


def convex_fusion(dense: Ranking, lexical: Ranking, alpha: float) -> list[tuple[int, float]]:
    """``alpha * dense + (1 - alpha) * lexical`` over min-max normalised scores.

    A candidate missing from one list gets that list's minimum (0 after normalisation). Unlike
    reciprocal rank fusion this keeps how far apart the scores are, not only their order, which
    is what makes it better on benchmarks when alpha is tuned (Bruch et al., "An Analysis of
    Fusion Functions for Hybrid Retrieval", 2023).
    """
    d = minmax(dense)
    lx = minmax(lexical)
    ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in lexical]))
    fused = [(i, alpha * d.get(i, 0.0) + (1 - alpha) * lx.get(i, 0.0)) for i in ids]
    return sorted(fused, key=lambda x: -x[1])


def minmax(ranking: Ranking) -> dict[int, float]:
    """Scores rescaled to [0, 1] over the ranking; all 1 when they are equal."""
    if not ranking:
        return {}
    scores = [s for _, s in ranking]
    lo, hi = min(scores), max(scores)
    span = hi - lo
    if span <= 0:
        return {i: 1.0 for i, _ in ranking}
    return {i: (s - lo) / span for i, s in ranking}
