"""Fit passages, history and question into the model's context window, counted exactly.

system + history + question + passages + max_tokens <= context window, measured with the
backend's own token counter on the final messages, before anything is sent. Older history turns
go first (oldest first), then the lowest-ranked passages, then the latest turn (see ``pack``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from rag.errors import PromptTooLong
from rag.prompts import PromptTemplates

TokenCounter = Callable[[Sequence[BaseMessage]], int]


@dataclass(frozen=True)
class PackedPrompt:
    messages: list[BaseMessage]
    passages: list[Document]  # numbered 1..n in this order
    history_turns: int  # (question, answer) pairs kept
    prompt_tokens: int
    budget: int


def passage_title(doc: Document) -> str:
    name = Path(doc.metadata["source"]).name
    page = doc.metadata.get("page")
    return f"{name}, page {page}" if page is not None else name


def build_messages(
    templates: PromptTemplates,
    question: str,
    passages: Sequence[Document],
    history: Sequence[tuple[str, str]],
    instructions: Sequence[str] = (),
) -> list[BaseMessage]:
    rendered = [
        templates.render_passage(i, passage_title(d), d.page_content)
        for i, d in enumerate(passages, start=1)
    ]
    system = templates.system
    if instructions:
        # Standing instructions live in the system prompt, which is never trimmed, so they stay in
        # force however long the conversation grows.
        system += "\n\nFollow these instructions from the user in every answer:\n" + "\n".join(
            f"- {i}" for i in instructions
        )
    messages: list[BaseMessage] = [SystemMessage(system)]
    for q, a in history:
        messages += [HumanMessage(q), AIMessage(a)]
    messages.append(HumanMessage(templates.render_question(rendered, question)))
    return messages


def pack(
    *,
    templates: PromptTemplates,
    question: str,
    passages: Sequence[Document],
    history: Sequence[tuple[str, str]] = (),
    instructions: Sequence[str] = (),
    count_tokens: TokenCounter,
    context_window: int,
    max_tokens: int,
) -> PackedPrompt:
    """The largest prompt that fits: all of ``history`` and ``passages`` if possible.

    When they do not all fit, parts are dropped in this order, each step only as far as needed:

    1. history turns, oldest first, one at a time, with every passage in place, down to the
       latest turn;
    2. the lowest-ranked passages, down to one, keeping the latest turn;
    3. the latest turn, after which the largest ranked prefix of passages that fits without
       history is kept (it may be longer than in step 2, and may be empty);
    4. if even the system prompt, instructions and question alone do not fit: PromptTooLong.

    So the latest turn is kept whenever it fits beside at least one passage: a follow-up such
    as "and in French?" means nothing without it. The system prompt (with the standing
    instructions) and the question are never dropped.
    """
    budget = context_window - max_tokens
    if budget <= 0:
        raise PromptTooLong(
            f"max_tokens={max_tokens} leaves no room in a {context_window}-token window; "
            "lower max_tokens."
        )
    history = list(history)

    def attempt(n_hist: int, n_pass: int) -> tuple[list[BaseMessage], int]:
        kept = history[len(history) - n_hist :] if n_hist else []
        msgs = build_messages(templates, question, passages[:n_pass], kept, instructions)
        return msgs, count_tokens(msgs)

    def largest_prefix(n_hist: int, lo: int) -> tuple[int, list[BaseMessage], int] | None:
        """The most passages (at least ``lo``) that fit beside the latest ``n_hist`` turns."""
        hi, best = len(passages), None
        while lo <= hi:  # binary search: the token count grows with every passage
            mid = (lo + hi) // 2
            msgs, used = attempt(n_hist, mid)
            if used <= budget:
                best, lo = (mid, msgs, used), mid + 1
            else:
                hi = mid - 1
        return best

    # 1. Drop history turns, oldest first, one at a time, with every passage in place.
    n_hist = len(history)
    msgs, used = attempt(n_hist, len(passages))
    while used > budget and n_hist > 1:
        n_hist -= 1
        msgs, used = attempt(n_hist, len(passages))
    if used <= budget:
        return PackedPrompt(msgs, list(passages), n_hist, used, budget)
    # 2. Keep the latest turn; drop the lowest-ranked passages down to one.
    if n_hist == 1 and passages:
        kept = largest_prefix(1, lo=1)
        if kept is not None:
            n, msgs, used = kept
            return PackedPrompt(msgs, list(passages[:n]), 1, used, budget)
    # 3. No history: the largest ranked prefix of passages that fits.
    best = largest_prefix(0, lo=0)
    if best is None:
        _, used = attempt(0, 0)
        raise PromptTooLong(
            f"The question and instructions alone take {used} tokens, more than the "
            f"{budget} left in the {context_window}-token window after max_tokens={max_tokens}. "
            "Shorten the question or lower max_tokens."
        )
    n, msgs, used = best
    return PackedPrompt(msgs, list(passages[:n]), 0, used, budget)
