"""Answer and Citation as data: the names of the two retrieval numbers, old and new."""

from __future__ import annotations

from rag.answer import Answer, Citation


def _citation() -> Citation:
    return Citation(
        n=1, source="a.txt", page=None, start=0, end=4, text="text", score=7.25,
        similarity=0.42, chunk_id=3,
    )  # fmt: skip


def test_dump_repeats_similarity_as_deprecated_dense_score() -> None:
    passages = [_citation()]
    answer = Answer(question="q", answer="a", citations=passages, passages=passages, model="m")
    reloaded = Answer.model_validate_json(answer.model_dump_json())
    for dumped in (answer.model_dump(), reloaded.model_dump()):
        for c in dumped["citations"] + dumped["passages"]:
            assert c["score"] == 7.25
            assert c["similarity"] == c["dense_score"] == 0.42
    schema = Citation.model_json_schema(mode="serialization")["properties"]
    assert schema["dense_score"]["deprecated"] is True
    assert "abstain_below" in schema["similarity"]["description"]


def test_answers_saved_with_dense_score_still_load() -> None:
    """JSON written by the previous release has ``dense_score`` and no ``similarity``."""
    old = _citation().model_dump()
    del old["similarity"]
    loaded = Citation.model_validate(old)
    assert loaded.similarity == 0.42
    assert loaded.dense_score == 0.42
    assert loaded == _citation()
