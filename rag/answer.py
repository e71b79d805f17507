"""The answer a query returns, as data: text, citations, abstention, model and token usage."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydantic import BaseModel, Field


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
        description="Retrieval score of the mode used: cosine (dense), BM25 (lexical) or the "
        "fused score (hybrid)."
    )
    dense_score: float | None = Field(
        None, description="Cosine similarity of passage and question, whatever the mode."
    )
    chunk_id: int = Field(description="Chunk id in the index.")
    also_in: list[SourceRef] = Field(
        default_factory=list,
        description="Other files (and pages) holding the same text, whitespace aside; the "
        "passage is retrieved and given to the model once, under its best-ranked copy.",
    )

    @property
    def title(self) -> str:
        from pathlib import Path

        name = Path(self.source).name
        return f"{name}, page {self.page}" if self.page is not None else name


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


class AnswerStream:
    """Iterate to receive the answer's text as it is generated; then read :attr:`answer`."""

    def __init__(self, pieces: Iterator[str], finish: Callable[[], Answer]) -> None:
        self._pieces = pieces
        self._finish = finish
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        yield from self._pieces
        self.answer = self._finish()
