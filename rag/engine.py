"""``RAG``: the one entry object of the query side."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.answer import Answer, AnswerStream, Citation
from rag.config import Settings
from rag.index.manifest import Manifest, check_compatible
from rag.index.reader import Store
from rag.overrides import apply_overrides
from rag.retrieval.embeddings import Embedder

if TYPE_CHECKING:
    from rag.chat import Chat
    from rag.packing import PackedPrompt
    from rag.retrieval.retriever import Filters

log = logging.getLogger(__name__)


class RAG:
    """Grounded question answering over one index directory.

    >>> rag = RAG.open("my-index")                          # doctest: +SKIP
    >>> rag.ask("What does the Transformer use instead of recurrence?").citations  # doctest: +SKIP
    """

    def __init__(self, store: Store, settings: Settings, embedder: Embedder) -> None:
        self.store = store
        self.settings = settings
        self.embedder = embedder
        self._model = _ModelSlot()
        self._template_cache: Any = None

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
    ) -> RAG:
        """Open an index for querying. Raises IndexNotFound or IndexMismatch with what to do."""
        settings = settings or Settings.load()
        store = Store.open(index_dir)
        try:
            # Built from every embedding setting (quantization included, "auto" following the
            # index's manifest); loads no model yet.
            embedder = embedder or Embedder.from_settings(settings, store.manifest.embedder)
            check_compatible(store.manifest, embedder=embedder.name, index_dir=Path(index_dir))
        except Exception:
            store.close()
            raise
        return cls(store, settings, embedder)

    def over(self, store: Store) -> RAG:
        """A RAG over ``store`` (such as a newer snapshot of the same index) that shares this
        one's settings, embedder and language model, loaded or not."""
        rag = RAG(store, self.settings, self.embedder)
        rag._model = self._model  # shared: loaded by either, loaded for both
        return rag

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> RAG:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def manifest(self) -> Manifest:
        return self.store.manifest

    # -- retrieval --
    def retrieve(
        self,
        question: str,
        k: int | None = None,
        *,
        filters: Filters | None = None,
        **overrides: Any,
    ) -> list[Citation]:
        """The ``k`` best passages for ``question``, best first, numbered from 1.

        ``overrides`` may change retrieval settings for this call: retrieval_mode, hybrid_alpha,
        fetch_k, mmr, mmr_lambda.
        """
        from rag.retrieval.retriever import to_citation

        settings = self._settings_for({**overrides, "top_k": k})
        docs = self._retriever(settings, filters).invoke(question)
        return [to_citation(d, i) for i, d in enumerate(docs, start=1)]

    # -- answering --
    def ask(
        self,
        question: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        filters: Filters | None = None,
        instructions: Sequence[str] = (),
        query: str | None = None,
        **overrides: Any,
    ) -> Answer:
        """Answer ``question`` from the index, citing passages.

        ``overrides`` change settings for this call only: temperature, top_p, max_tokens, seed,
        top_k, repetition_penalty, the retrieval settings, answer_mode ('extract' quotes the
        sentences that answer, with no model call), extract_min_score and extract_top_k.
        ``history`` holds earlier (question, answer) turns of a conversation; ``instructions`` are
        standing instructions added to the system prompt; ``query`` is what retrieval searches
        for when it should differ from the question; ``filters`` restricts the passages.
        """
        settings = self._settings_for(overrides)
        if settings.resolved_answer_mode == "extract":
            return self._extract(question, settings, filters, query, history)
        parts = self._chain(settings, filters)
        inputs = _inputs(question, history, instructions, query)
        answer: Answer = parts.full.invoke(inputs)
        return answer

    def stream(
        self,
        question: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        filters: Filters | None = None,
        instructions: Sequence[str] = (),
        query: str | None = None,
        **overrides: Any,
    ) -> AnswerStream:
        """Like :meth:`ask`, but yields the answer text as it is generated (in extract mode, the
        whole answer at once)."""
        settings = self._settings_for(overrides)
        if settings.resolved_answer_mode == "extract":
            return AnswerStream.at_once(
                lambda: self._extract(question, settings, filters, query, history)
            )
        from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage

        parts = self._chain(settings, filters)
        state: dict[str, Any] = {}

        def pieces() -> Iterator[str]:
            prepared = parts.prepare.invoke(_inputs(question, history, instructions, query))
            state["prepared"] = prepared
            if parts.abstains(prepared):
                state["message"] = AIMessage(content=parts.templates.abstain_phrase)
                yield state["message"].content
                return
            total: BaseMessage | None = None
            for chunk in parts.chat_model.stream(prepared["messages"]):
                total = chunk if total is None else total + chunk
                if chunk.content:
                    yield str(chunk.content)
            state["message"] = total or AIMessageChunk(content="")

        def finish() -> Answer:
            answer: Answer = parts.parse.invoke({**state["prepared"], "message": state["message"]})
            return answer

        return AnswerStream(pieces(), finish)

    def ask_many(
        self,
        questions: Sequence[str],
        *,
        concurrency: int = 8,
        filters: Filters | None = None,
        **overrides: Any,
    ) -> list[Answer | Exception]:
        """Answer independent questions with up to ``concurrency`` model requests in flight.

        A vLLM server batches concurrent requests (continuous batching), so this is much faster
        than asking one after the other. Results come back in the order of ``questions``; a
        question that fails holds its exception (e.g. :class:`rag.LLMUnavailable`,
        :class:`rag.PromptTooLong`) in its place and the others are still answered::

            for q, r in zip(questions, rag.ask_many(questions, concurrency=16)):
                print(q, r.answer if isinstance(r, Answer) else f"failed: {r}")
        """
        from rag import batch

        batch.check_concurrency(concurrency)
        settings = self._settings_for(overrides)
        if settings.resolved_answer_mode == "extract":
            return [self._extract_or_error(q, settings, filters) for q in questions]
        parts = self._chain(settings, filters)
        prepared = batch.prepare_many(parts, [_inputs(q, (), (), None) for q in questions])
        pending = batch.to_send(parts, prepared)
        messages = batch.generate(parts.chat_model, prepared, pending, concurrency)
        return batch.finish_many(parts, prepared, pending, messages, parts.templates.abstain_phrase)

    async def aask_many(
        self,
        questions: Sequence[str],
        *,
        concurrency: int = 8,
        filters: Filters | None = None,
        **overrides: Any,
    ) -> list[Answer | Exception]:
        """The async form of :meth:`ask_many`: requests go out on the model's async client."""
        import asyncio

        from rag import batch

        batch.check_concurrency(concurrency)
        settings = self._settings_for(overrides)
        if settings.resolved_answer_mode == "extract":
            return await asyncio.to_thread(
                lambda: [self._extract_or_error(q, settings, filters) for q in questions]
            )
        parts = self._chain(settings, filters)
        inputs = [_inputs(q, (), (), None) for q in questions]
        prepared = await asyncio.to_thread(batch.prepare_many, parts, inputs)
        pending = batch.to_send(parts, prepared)
        messages = await batch.agenerate(parts.chat_model, prepared, pending, concurrency)
        return batch.finish_many(parts, prepared, pending, messages, parts.templates.abstain_phrase)

    def prepare(
        self,
        question: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        filters: Filters | None = None,
        instructions: Sequence[str] = (),
        query: str | None = None,
        **overrides: Any,
    ) -> PackedPrompt:
        """The prompt :meth:`ask` would send, with its passages and exact token count.

        Nothing is sent to the model; use it to inspect or log prompts.
        """
        settings = self._settings_for(overrides)
        prepared = self._chain(settings, filters).prompt.invoke(
            _inputs(question, history, instructions, query)
        )
        packed: PackedPrompt = prepared["packed"]
        return packed

    def chat(self, instructions: Sequence[str] = (), **overrides: Any) -> Chat:
        """A multi-turn conversation over this index (see :class:`rag.chat.Chat`)."""
        from rag.chat import Chat

        return Chat(self, instructions=instructions, overrides=overrides)

    # -- internals --
    def _extract(
        self,
        question: str,
        settings: Settings,
        filters: Any,
        query: str | None,
        history: Sequence[tuple[str, str]] = (),
    ) -> Answer:
        """An extractive answer: sentences of the retrieved passages, no language model. A
        follow-up is read with the earlier questions of ``history`` (:mod:`rag.followup`)."""
        from rag import followup
        from rag.extract import DEFAULT_WEIGHTS, extract_answer
        from rag.retrieval.retriever import to_citation

        # No prompt bounds what extraction reads, so it may read more passages than top_k.
        reads = max(settings.top_k, settings.extract_top_k)
        if reads != settings.top_k:
            settings = settings.model_copy(update={"top_k": reads})
        joined = followup.conversation(question, history)
        docs = self._retriever(settings, filters).invoke(query or joined or question)
        passages = [to_citation(d, i) for i, d in enumerate(docs, start=1)]
        found = None
        if joined is not None:
            found = followup.candidates_for(question, joined, passages, self.embedder)
        return extract_answer(
            question,
            passages,
            self.embedder,
            abstain_phrase=self._templates().abstain_phrase,
            abstain_below=settings.abstain_below,
            min_score=settings.extract_min_score,
            model=f"extract:{self.embedder.name}",
            query=query,
            found=found,
            weights=DEFAULT_WEIGHTS if found is None else followup.WEIGHTS,
        )

    def _extract_or_error(
        self, question: str, settings: Settings, filters: Any
    ) -> Answer | Exception:
        try:
            return self._extract(question, settings, filters, None)
        except Exception as exc:  # a failed question holds its error, as in generate mode
            log.info("question %r failed: %s", question, exc)
            return exc

    @property
    def backend(self) -> Any:
        """The language model's backend, made on first use, once, whichever thread asks first."""
        return self._model.get(self.settings)

    @property
    def _backend(self) -> Any:
        """The backend if it has been made, else None (nothing is loaded to find out)."""
        return self._model.value

    def _settings_for(self, overrides: dict[str, Any]) -> Settings:
        return apply_overrides(self.settings, overrides)

    def _templates(self) -> Any:
        # Read once per RAG: prompt_dir is fixed when it is opened (not a per-call override).
        if self._template_cache is None:
            from rag.prompts import load_templates

            self._template_cache = load_templates(self.settings.prompt_dir)
        return self._template_cache

    def _retriever(self, settings: Settings, filters: Any = None) -> Any:
        from rag.retrieval.retriever import Retriever

        return Retriever(
            store=self.store,
            embedder=self.embedder,
            k=settings.top_k,
            mode=settings.retrieval_mode,
            fetch_k=settings.fetch_k,
            hybrid_alpha=settings.hybrid_alpha,
            mmr=settings.mmr,
            mmr_lambda=settings.mmr_lambda,
            filters=filters,
            reranker=_reranker(settings),
            rerank_candidates=settings.rerank_candidates,
        )

    def _chain(self, settings: Settings, filters: Any = None) -> Any:
        from rag.chain import build_chain

        return build_chain(
            retriever=self._retriever(settings, filters),
            backend=self.backend,
            chat_model=self.backend.chat_model(settings),
            templates=self._templates(),
            max_tokens=settings.max_tokens,
            abstain_below=settings.abstain_below,
        )


def _inputs(
    question: str,
    history: Sequence[tuple[str, str]],
    instructions: Sequence[str],
    query: str | None,
) -> dict[str, Any]:
    return {
        "question": question,
        "history": list(history),
        "instructions": list(instructions),
        "query": query or question,
    }


def _reranker(settings: Settings) -> Any:
    if not settings.reranker:
        return None
    from rag.retrieval.reranking import load_reranker

    return load_reranker(settings.reranker, settings.device)


class _ModelSlot:
    """One backend for a RAG and every RAG made from it by :meth:`RAG.over`: two threads that
    ask for it at once (two requests of a server) load the model once."""

    def __init__(self) -> None:
        self.value: Any = None
        self._lock = threading.Lock()

    def get(self, settings: Settings) -> Any:
        if self.value is None:
            with self._lock:
                if self.value is None:
                    from rag.llm.factory import make_backend

                    self.value = make_backend(settings)
        return self.value
