"""What a client may change for one request: the server's decision, not the client's.

Settings a request can override come in groups. ``retrieval`` (how many passages, which mode,
fusion, MMR, the abstention thresholds) and ``sampling`` (temperature, top_p, seed, repetition
penalty, max_tokens) are allowed by default: they load nothing, and OpenAI's clients send the
sampling fields with every request (LangChain's ``ChatOpenAI`` sends a temperature unasked), so
refusing them would break those clients. ``answer_mode`` is not: a client switching an
extract-mode server to generation would load a language model on demand and make every other
generated answer wait for it. ``rag serve --allow-overrides`` names the groups a server allows.

``max_tokens`` is bounded by the server (``--max-tokens-limit``, default the configured
``max_tokens``): a larger request is lowered to the bound, as the schema says, not refused.
"""

from __future__ import annotations

from typing import Any

from rag.serve.errors import ApiError

OVERRIDE_GROUPS: dict[str, frozenset[str]] = {
    "retrieval": frozenset(
        {
            "top_k",
            "retrieval_mode",
            "hybrid_alpha",
            "fetch_k",
            "mmr",
            "mmr_lambda",
            "abstain_below",
            "extract_min_score",
            "extract_top_k",
        }
    ),
    "sampling": frozenset({"temperature", "top_p", "seed", "repetition_penalty", "max_tokens"}),
    "answer_mode": frozenset({"answer_mode"}),
}
DEFAULT_GROUPS = frozenset({"retrieval", "sampling"})


def parse_groups(spec: str) -> frozenset[str]:
    """``--allow-overrides`` as given: group names separated by commas, ``all`` or ``none``."""
    names = {n.strip() for n in spec.split(",") if n.strip()}
    if names == {"none"}:
        return frozenset()
    if names == {"all"}:
        return frozenset(OVERRIDE_GROUPS)
    unknown = names - set(OVERRIDE_GROUPS)
    if unknown or not names:
        raise ValueError(
            f"unknown override group(s) {sorted(unknown)}; choose from "
            f"{', '.join(OVERRIDE_GROUPS)}, or all, or none"
        )
    return frozenset(names)


def permitted(overrides: dict[str, Any], groups: frozenset[str], max_tokens: int) -> dict[str, Any]:
    """``overrides`` when the server allows each of them, with max_tokens lowered to
    ``max_tokens``; a 403 naming the setting and the flag otherwise."""
    allowed = frozenset().union(*(OVERRIDE_GROUPS[g] for g in groups))
    refused = sorted(set(overrides) - allowed)
    if refused:
        group = next(g for g, names in OVERRIDE_GROUPS.items() if refused[0] in names)
        raise ApiError(
            403,
            f"This server does not let clients change {', '.join(refused)}; its operator can "
            f"allow it with rag serve --allow-overrides {','.join(sorted({*groups, group}))}.",
            "permission_error",
        )
    if overrides.get("max_tokens") is not None and overrides["max_tokens"] > max_tokens:
        return {**overrides, "max_tokens": max_tokens}
    return overrides
