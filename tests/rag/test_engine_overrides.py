"""Per-call overrides of ``RAG``: applied to a copy of the open settings, validated, cheap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest import IngestReport
from rag import RAG
from rag.config import Settings
from rag.errors import ConfigError
from rag.retrieval.embeddings import Embedder

QUESTION = "What does the Transformer use instead of recurrence?"


@pytest.fixture(scope="module")
def rag(built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder) -> RAG:
    return RAG.open(built_index[0], settings, embedder=embedder)


def test_overrides_do_not_resolve_the_settings_again(
    rag: RAG, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a new Settings per question re-read the environment through every settings
    source (about 1 ms a question here, 9 ms under a profiler); the open settings already hold
    those values, so an override is only validated and set on a copy."""
    resolved: list[int] = []
    original = Settings.settings_customise_sources.__func__  # type: ignore[attr-defined]

    def spy(cls: type[Settings], *args: Any, **kwargs: Any) -> Any:
        resolved.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Settings, "settings_customise_sources", classmethod(spy))
    dense = rag.retrieve(QUESTION, k=2, retrieval_mode="dense", fetch_k=10)
    assert resolved == []
    assert len(dense) == 2
    # The override took effect: a dense score is the cosine similarity itself.
    assert dense[0].score == pytest.approx(dense[0].similarity)
    assert rag.settings.retrieval_mode == "hybrid" and rag.settings.fetch_k == 50


def test_invalid_overrides_name_the_problem(rag: RAG) -> None:
    with pytest.raises(ConfigError, match=r"(?s)Invalid override.*fetch_k"):
        rag.retrieve(QUESTION, fetch_k=0)
    with pytest.raises(ConfigError, match=r"(?s)Invalid override.*retrieval_mode"):
        rag.retrieve(QUESTION, retrieval_mode="fuzzy")
    with pytest.raises(ConfigError, match="Unknown override"):
        rag.retrieve(QUESTION, chunk_tokens=10)
    assert rag.settings.fetch_k == 50 and rag.settings.retrieval_mode == "hybrid"


def test_none_switches_off_a_setting_whose_none_means_never(rag: RAG) -> None:
    """``extract_min_score=None`` and ``abstain_below=None`` mean "never abstain" in Settings,
    and so in a per-call override; for other settings (top_k) None still means "not given"."""
    unanswered = "How many US dollars did the electricity for training the Transformer cost?"
    extract: dict[str, Any] = {"answer_mode": "extract"}
    assert rag.ask(unanswered, **extract).abstained  # the sentence threshold abstains
    assert not rag.ask(unanswered, **extract, extract_min_score=None).abstained
    off_topic = "What is the capital of Australia?"
    assert rag.ask(off_topic, **extract, extract_min_score=None).abstained  # the passage rule
    answer = rag.ask(off_topic, **extract, extract_min_score=None, abstain_below=None)
    assert not answer.abstained and answer.quotes
    assert len(rag.ask(QUESTION, **extract, top_k=None).passages) == rag.settings.extract_top_k
    assert rag.settings.abstain_below is not None  # the open settings are left as they were
