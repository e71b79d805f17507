"""The answer a query returns, as data: text, citations, abstention, model and token usage."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field, model_validator


class SourceRef(BaseModel):
    """Another place that holds a passage's exact text (a copy of a file, say)."""

    source: str = Field(description="Path of the source file.")
    page: int | None = Field(None, description="1-based physical page (PDF), None for text files.")


class Citation(BaseModel):
    """A numbered passage given to the model; ``n`` is the number the answer cites it by."""

    n: int = Field(description="Passage number in the prompt, cited as [n].")
    source: str = Field(description="Path of the source file.")
    page: int | None = Field(description="1-based physical page (PDF), None for text files.")
    page_label: str | None = Field(None, description="The PDF's own label of that page, if any.")
    section: str | None = Field(None, description="Heading the passage falls under (markdown).")
    start: int = Field(description="Character offset of the passage in its page text.")
    end: int = Field(description="Character offset where the passage ends.")
    text: str = Field(description="The passage text.")
    score: float = Field(
        description="What ranked the passage, in the retrieval mode used: dense, the cosine "
        "similarity; lexical, BM25 (FTS5's bm25() negated, higher is better); hybrid, the convex "
        "fusion of the min-max normalised dense and BM25 scores (0 to 1); with a reranker, the "
        "cross-encoder's score. Comparable only among passages of one query and mode."
    )
    similarity: float | None = Field(
        None,
        description="Cosine similarity between the question's vector and the passage's, whatever "
        "the mode: what `abstain_below` compares. None when it was not computed.",
    )
    chunk_id: int = Field(description="Chunk id in the index.")
    also_in: list[SourceRef] = Field(
        default_factory=list,
        description="Other files (and pages) holding the same text, whitespace aside; the "
        "passage is retrieved and given to the model once, under its best-ranked copy.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_dense_score(cls, data: Any) -> Any:
        # Answers saved by the previous release carry the cosine as ``dense_score``.
        if isinstance(data, dict) and "dense_score" in data and "similarity" not in data:
            data = {**data, "similarity": data["dense_score"]}
        return data

    @computed_field(  # type: ignore[prop-decorator]  # pydantic documents this stacking
        repr=False,
        description="Deprecated, to be removed in the next release: the same value as "
        "`similarity`, under its previous name.",
        json_schema_extra={"deprecated": True},
    )
    @property
    def dense_score(self) -> float | None:
        """Deprecated: the previous release's name of :attr:`similarity`."""
        # Kept for one release so that readers of `rag ask --json` and of saved answers keep
        # working. Not pydantic's ``deprecated=``: that warns on every model_dump.
        return self.similarity

    @property
    def title(self) -> str:
        from pathlib import Path

        name = Path(self.source).name
        return f"{name}, page {self.page}" if self.page is not None else name


class Quote(BaseModel):
    """What an extractive answer quotes: a sentence, or the part of it that answers (its edges
    that only restate the question left out); ``text`` is exactly ``passage.text[start:end]``."""

    n: int = Field(description="Number of the passage it is quoted from (its citation's n).")
    text: str = Field(description="The quoted sentence or part of it, verbatim.")
    source: str = Field(description="Path of the source file.")
    page: int | None = Field(None, description="1-based physical page (PDF), None for text files.")
    start: int = Field(description="Character offset of the quote in the passage text.")
    end: int = Field(description="Character offset where the quote ends in the passage text.")
    doc_start: int = Field(
        description="Character offset of the quote in its page text (the file's text when it "
        "has no pages): the passage's start plus start."
    )
    doc_end: int = Field(description="Character offset where the quote ends in its page text.")
    score: float = Field(
        description="How well the sentence answers the question (extract mode's ranking score)."
    )


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Answer(BaseModel):
    """What :meth:`rag.RAG.ask` returns."""

    question: str
    answer: str
    citations: list[Citation] = Field(
        default_factory=list, description="Passages the answer cites, each at most once."
    )
    passages: list[Citation] = Field(
        default_factory=list, description="Every passage given to the model, best first."
    )
    abstained: bool = Field(
        False, description="True when the documents do not hold the answer (nothing is cited)."
    )
    citations_inferred: bool = Field(
        False,
        description="True when the model cited no passage number and the citations were "
        "attributed by word overlap between the answer and the passages.",
    )
    model: str
    usage: Usage = Field(default_factory=Usage)
    mode: Literal["generate", "extract"] = Field(
        "generate",
        description="What produced the answer: 'generate' (a language model wrote it from the "
        "passages) or 'extract' (sentences of the passages quoted verbatim, no model call).",
    )
    quotes: list[Quote] = Field(
        default_factory=list,
        description="In extract mode, the quoted sentences, best first, each with its passage "
        "and character spans; empty in generate mode and when abstaining.",
    )


class AnswerStream:
    """Iterate to receive the answer's text as it is generated; then read :attr:`answer`."""

    def __init__(self, pieces: Iterator[str], finish: Callable[[], Answer]) -> None:
        self._pieces = pieces
        self._finish = finish
        self.answer: Answer | None = None

    @classmethod
    def at_once(cls, make: Callable[[], Answer]) -> AnswerStream:
        """A stream of one piece, the whole answer, made when iteration starts."""
        made: list[Answer] = []

        def pieces() -> Iterator[str]:
            made.append(make())
            yield made[0].answer

        return cls(pieces(), lambda: made[0])

    def __iter__(self) -> Iterator[str]:
        yield from self._pieces
        self.answer = self._finish()
