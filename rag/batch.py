"""Many questions at once: the steps behind :meth:`rag.RAG.ask_many` and ``aask_many``.

Questions are prepared (retrieved and packed) one after the other in the caller's process, which
is quick; then every prompt goes to the chat model's own ``batch``/``abatch`` with a concurrency
limit. For a vLLM server that means up to ``concurrency`` requests in flight, which its continuous
batching serves together; for the in-process ``vllm.LLM`` backend it is one batched call. Results
keep the questions' order, and a question that fails holds its exception in its place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from rag.answer import Answer

log = logging.getLogger(__name__)

Result = Answer | Exception


def check_concurrency(concurrency: int) -> None:
    if not isinstance(concurrency, int) or concurrency < 1:
        from rag.errors import ConfigError

        raise ConfigError(f"concurrency must be a whole number >= 1, not {concurrency!r}.")


def prepare_many(parts: Any, inputs: Sequence[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
    """Retrieve and pack each question; a failure (e.g. PromptTooLong) stays in its slot."""
    prepared: list[dict[str, Any] | Exception] = []
    for item in inputs:
        try:
            prepared.append(parts.prepare.invoke(item))
        except Exception as exc:
            log.info("question %r failed before generation: %s", item.get("question"), exc)
            prepared.append(exc)
    return prepared


def to_send(parts: Any, prepared: Sequence[dict[str, Any] | Exception]) -> list[int]:
    """Indices of the questions that need the model.

    A question abstains without the model by the same decision as ``ask`` and ``stream``
    (``parts.abstains``: no passage, or none reaching ``abstain_below``), so that one question
    gets the same ``abstained`` whichever way it is asked.
    """
    return [i for i, p in enumerate(prepared) if isinstance(p, dict) and not parts.abstains(p)]


def batch_config(concurrency: int) -> dict[str, Any]:
    return {"max_concurrency": concurrency, "run_name": "rag.ask_many"}


def generate(
    model: BaseChatModel, prepared: Sequence[Any], pending: list[int], concurrency: int
) -> list[BaseMessage | Exception]:
    if not pending:
        return []
    return list(
        model.batch(
            [prepared[i]["messages"] for i in pending],
            config=batch_config(concurrency),  # type: ignore[arg-type]
            return_exceptions=True,
        )
    )


async def agenerate(
    model: BaseChatModel, prepared: Sequence[Any], pending: list[int], concurrency: int
) -> list[BaseMessage | Exception]:
    if not pending:
        return []
    return list(
        await model.abatch(
            [prepared[i]["messages"] for i in pending],
            config=batch_config(concurrency),  # type: ignore[arg-type]
            return_exceptions=True,
        )
    )


def finish_many(
    parts: Any,
    prepared: Sequence[dict[str, Any] | Exception],
    pending: list[int],
    messages: Sequence[BaseMessage | Exception],
    abstain_phrase: str,
) -> list[Result]:
    """Parse each reply into an :class:`Answer`, in the questions' order."""
    by_index = dict(zip(pending, messages, strict=True))
    results: list[Result] = []
    for i, p in enumerate(prepared):
        if isinstance(p, Exception):
            results.append(p)
            continue
        message = by_index.get(i, AIMessage(content=abstain_phrase))
        if isinstance(message, Exception):
            results.append(message)
            continue
        try:
            results.append(parts.parse.invoke({**p, "message": message}))
        except Exception as exc:
            results.append(exc)
    return results
