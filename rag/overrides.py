"""Per-call overrides: settings that ``RAG.ask``, ``stream``, ``ask_many``, ``retrieve`` and a
chat accept for one call, applied to a copy of the open settings."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import ValidationError

from rag.config import Settings
from rag.errors import ConfigError

CALL_OVERRIDES = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "top_k",
        "repetition_penalty",
        "retrieval_mode",
        "hybrid_alpha",
        "fetch_k",
        "mmr",
        "mmr_lambda",
        "abstain_below",
        "reranker",
        "rerank_candidates",
        "answer_mode",
        "extract_min_score",
        "extract_top_k",
    }
)

# Overrides whose None is a value of its own (the setting switched off: "never" for abstain_below
# and extract_min_score, no reranker, the model's own seed and repetition penalty), not "not
# given".
NULLABLE_OVERRIDES = frozenset(
    name
    for name in CALL_OVERRIDES
    if type(None) in typing.get_args(Settings.model_fields[name].annotation)
)


def apply_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """``settings`` with ``overrides`` applied (``settings`` itself when there are none)."""
    unknown = set(overrides) - CALL_OVERRIDES
    if unknown:
        raise ConfigError(
            f"Unknown override(s) {sorted(unknown)}; per-call overrides are "
            f"{sorted(CALL_OVERRIDES)}."
        )
    values = {k: v for k, v in overrides.items() if v is not None or k in NULLABLE_OVERRIDES}
    if not values:
        return settings
    # Validated assignments on a copy: building a new Settings would resolve its sources (the
    # environment) again on every question, which the open settings already did.
    copy = settings.model_copy()
    try:
        for name, value in values.items():
            setattr(copy, name, value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']} (got {e['input']!r})"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"Invalid override: {problems}.") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid override: {exc}") from exc
    return copy
