"""The LangChain (LCEL) chain: retrieve -> pack -> Llama 2-chat style prompt -> LLM -> parse.

``prepare`` (retrieve and pack) and ``parse`` are runnables of their own so that streaming can run
the same steps with the chat model's token stream in between.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from rag.answer import Answer, Usage
from rag.citations import attribute, cited_numbers, is_abstention, strip_invalid
from rag.llm.backend import LLMBackend
from rag.packing import PackedPrompt, pack
from rag.prompts import PromptTemplates
from rag.retrieval.retriever import to_citation


@dataclass(frozen=True)
class ChainParts:
    # Retrieve and pack; a question that will abstain is not packed (see build_chain).
    prepare: Runnable[dict[str, Any], dict[str, Any]]
    # Retrieve and pack always: the prompt that would be sent (RAG.prepare shows it).
    prompt: Runnable[dict[str, Any], dict[str, Any]]
    parse: Runnable[dict[str, Any], Answer]
    full: Runnable[dict[str, Any], Answer]
    # The one "abstain without asking the model" decision for a prepared input, bound to the
    # call's threshold, so that ask, stream and ask_many/aask_many abstain alike.
    abstains: Callable[[dict[str, Any]], bool]
    # What the chain was built with, for callers that drive the model themselves (stream, batch).
    chat_model: BaseChatModel
    templates: PromptTemplates


def build_chain(
    *,
    retriever: BaseRetriever,
    backend: LLMBackend,
    chat_model: BaseChatModel,
    templates: PromptTemplates,
    max_tokens: int,
    abstain_below: float | None = None,
) -> ChainParts:
    """Inputs: ``{"question": str, "history": [(question, answer), ...], "instructions": [...]}``.

    ``question`` is what the model answers; ``query`` (default: the question) is what retrieval
    searches for, such as a follow-up question made standalone.
    """

    def do_pack(inputs: dict[str, Any]) -> dict[str, Any]:
        packed = pack(
            templates=templates,
            question=inputs["question"],
            passages=inputs["passages"],
            history=inputs.get("history", ()),
            instructions=inputs.get("instructions", ()),
            count_tokens=backend.count_tokens,
            context_window=backend.context_window,
            max_tokens=max_tokens,
        )
        return {**inputs, "packed": packed, "messages": packed.messages}

    def do_parse(inputs: dict[str, Any]) -> Answer:
        return parse_answer(
            question=inputs["question"],
            message=inputs["message"],
            packed=inputs["packed"],
            templates=templates,
            model=backend.model_name,
        )

    def pack_unless_weak(inputs: dict[str, Any]) -> dict[str, Any]:
        # Weak evidence among the retrieved passages is weak evidence among any packed subset of
        # them, so the answer abstains whatever packing keeps. Not packing means that the model's
        # tokenizer, context window (and transformers with torch) are never loaded for it. A long
        # question is packed all the same, so that one longer than the window is reported as such
        # (PromptTooLong) rather than answered with an abstention.
        short = len(inputs["question"]) <= LONG_QUESTION_CHARS
        if short and weak_passages(inputs["passages"], abstain_below):
            passages = list(inputs["passages"])
            unsent = PackedPrompt([], passages, history_turns=0, prompt_tokens=0, budget=0)
            return {**inputs, "packed": unsent, "messages": []}
        return do_pack(inputs)

    retrieve = RunnablePassthrough.assign(
        passages=RunnableLambda(lambda x: x.get("query") or x["question"]) | retriever
    )
    prepare: Runnable[dict[str, Any], dict[str, Any]] = retrieve | RunnableLambda(pack_unless_weak)
    parse: Runnable[dict[str, Any], Answer] = RunnableLambda(do_parse)

    def abstains(prepared: dict[str, Any]) -> bool:
        return weak_evidence(prepared["packed"], abstain_below)

    generate = RunnablePassthrough.assign(
        message=RunnableLambda(lambda x: _answer_or_abstain(x, chat_model, templates, abstains))
    )
    return ChainParts(
        prepare=prepare,
        prompt=retrieve | RunnableLambda(do_pack),
        parse=parse,
        full=prepare | generate | parse,
        abstains=abstains,
        chat_model=chat_model,
        templates=templates,
    )


# Questions of more characters (some 500 tokens or more) are always packed (see pack_unless_weak).
LONG_QUESTION_CHARS = 2_000


def weak_evidence(packed: PackedPrompt, abstain_below: float | None) -> bool:
    """No passage, or none whose cosine similarity to the question reaches the threshold."""
    return weak_passages(packed.passages, abstain_below)


def weak_passages(passages: Sequence[Document], abstain_below: float | None) -> bool:
    """No passage, or none whose cosine similarity to the question reaches the threshold."""
    if not passages:
        return True
    if abstain_below is None:
        return False
    cosines = [d.metadata.get("similarity") for d in passages]
    known = [c for c in cosines if c is not None and c == c]  # NaN when not computed
    return bool(known) and max(known) < abstain_below


def _answer_or_abstain(
    inputs: dict[str, Any],
    chat_model: BaseChatModel,
    templates: PromptTemplates,
    abstains: Callable[[dict[str, Any]], bool],
) -> BaseMessage:
    """Weak evidence means nothing to ground an answer on: abstain without asking the model."""
    if abstains(inputs):
        return AIMessage(content=templates.abstain_phrase)
    packed: PackedPrompt = inputs["packed"]
    return chat_model.invoke(packed.messages)


def parse_answer(
    *,
    question: str,
    message: BaseMessage,
    packed: PackedPrompt,
    templates: PromptTemplates,
    model: str,
) -> Answer:
    raw = str(message.content).strip()
    passages = [to_citation(d, i) for i, d in enumerate(packed.passages, start=1)]
    valid = {p.n for p in passages}
    text = strip_invalid(raw, valid)
    usage = _usage(message)
    abstained = not passages or is_abstention(text, templates.abstain_phrase)
    inferred = False
    numbers: Sequence[int] = []
    if not abstained:
        numbers = [n for n in cited_numbers(text) if n in valid]
        if not numbers:
            numbers = attribute(text, [p.text for p in passages])
            inferred = bool(numbers)
    by_n = {p.n: p for p in passages}
    return Answer(
        question=question,
        answer=text,
        citations=[by_n[n] for n in numbers],
        passages=passages,
        abstained=abstained,
        citations_inferred=inferred,
        model=model,
        usage=usage,
    )


def _usage(message: BaseMessage) -> Usage:
    meta = getattr(message, "usage_metadata", None) or {}
    return Usage(
        prompt_tokens=int(meta.get("input_tokens", 0)),
        completion_tokens=int(meta.get("output_tokens", 0)),
    )
