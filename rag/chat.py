"""Multi-turn conversation: follow-ups made standalone for retrieval, standing instructions kept.

A follow-up such as "and how many layers does it have?" retrieves poorly on its own, so retrieval
searches for a standalone version of it: rewritten by the model (prompts/condense.txt) when it is
served, or joined with the previous question for the small embedded model, which rewrites
unreliably. Extract mode calls no model: it reads a follow-up with the earlier questions in
retrieval and in the choice of sentences (:mod:`rag.followup`). Instructions about how to answer
("answer in one sentence", "answer only in French") are kept apart from the history and placed in
the system prompt of every later turn, so trimming old turns to fit the window never drops them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rag.answer import Answer, AnswerStream
from rag.config import Settings
from rag.instructions import is_instruction

if TYPE_CHECKING:
    from rag.packing import PackedPrompt


class Engine(Protocol):
    """What a conversation needs from :class:`rag.RAG` (which hands out chats with ``RAG.chat()``)."""

    settings: Settings

    @property
    def backend(self) -> Any: ...

    def ask(self, question: str, **kwargs: Any) -> Answer: ...

    def stream(self, question: str, **kwargs: Any) -> AnswerStream: ...

    def prepare(self, question: str, **kwargs: Any) -> PackedPrompt: ...


class Chat:
    """A conversation with one index. ``send`` a message, get an :class:`Answer`."""

    def __init__(
        self, rag: Engine, instructions: Sequence[str] = (), overrides: dict[str, Any] | None = None
    ) -> None:
        self.rag = rag
        self.instructions: list[str] = list(instructions)
        self.history: list[tuple[str, str]] = []
        self.overrides = dict(overrides or {})

    def reset(self) -> None:
        """Forget the turns and the standing instructions."""
        self.history.clear()
        self.instructions.clear()

    def instruct(self, instruction: str) -> None:
        """Add a standing instruction, in force for every later answer."""
        self.instructions.append(instruction.strip())

    def send(self, message: str, **overrides: Any) -> Answer:
        """Answer ``message`` in the context of the conversation so far.

        A message that is only an instruction ("answer in one sentence from now on") is recorded
        and acknowledged without retrieval; the answer says so and cites nothing.
        """
        if is_instruction(message):
            self.instruct(message)
            return self._acknowledge(message, overrides)
        answer = self.rag.ask(message, **self._kwargs(message, overrides))
        self.history.append((message, answer.answer))
        return answer

    def stream(self, message: str, **overrides: Any) -> AnswerStream | Answer:
        """Like :meth:`send`, streaming; an instruction is acknowledged at once (an Answer)."""
        if is_instruction(message):
            self.instruct(message)
            return self._acknowledge(message, overrides)
        stream = self.rag.stream(message, **self._kwargs(message, overrides))
        original = stream._finish

        def finish() -> Answer:
            answer: Answer = original()
            self.history.append((message, answer.answer))
            return answer

        stream._finish = finish
        return stream

    def prepare(self, message: str, **overrides: Any) -> PackedPrompt:
        """The prompt the next :meth:`send` of ``message`` would use (nothing is sent)."""
        return self.rag.prepare(message, **self._kwargs(message, overrides))

    def standalone_question(self, message: str, *, use_model: bool = True) -> str:
        """What retrieval searches for: ``message`` made understandable without the history.

        A served model rewrites it unless ``use_model`` is false; otherwise it is joined with the
        previous question. (Extract mode retrieves as :func:`rag.followup.conversation` says.)
        """
        if not self.history:
            return message
        if use_model and self.rag.settings.uses_server:
            return self._condense_with_model(message)
        previous = self.history[-1][0]
        return f"{previous} {message}"

    def _kwargs(self, message: str, overrides: dict[str, Any]) -> dict[str, Any]:
        extract = self._answer_mode(overrides) == "extract"
        return {
            "history": list(self.history),
            "instructions": list(self.instructions),
            # Extract mode reads the follow-up with the history itself (rag.followup), in
            # retrieval and in scoring sentences alike.
            "query": None if extract else self.standalone_question(message),
            **self.overrides,
            **overrides,
        }

    def _answer_mode(self, overrides: dict[str, Any]) -> str:
        """The answer mode of the next turn: the chat's or this call's override, else the
        settings' (resolved as RAG.ask resolves it)."""
        mode = {**self.overrides, **overrides}.get("answer_mode")
        settings = self.rag.settings
        if mode is not None:
            settings = settings.model_copy(update={"answer_mode": mode})
        return settings.resolved_answer_mode

    def _acknowledge(self, message: str, overrides: dict[str, Any]) -> Answer:
        extract = self._answer_mode(overrides) == "extract"
        text = f"Understood; I will follow this from now on: {message.strip()}"
        if extract:
            text = (
                f"Noted: {message.strip()} Extractive answers quote the documents as they are, "
                "so this applies to generated answers (answer_mode 'generate')."
            )
        return Answer(
            question=message,
            answer=text,
            # No model is loaded in extract mode just to name it.
            model="extract" if extract else self.rag.backend.model_name,
            mode="extract" if extract else "generate",
        )

    def _condense_with_model(self, message: str) -> str:
        from langchain_core.messages import HumanMessage

        from rag.prompts import read_template

        template = read_template("condense.txt", self.rag.settings.prompt_dir)
        turns = "\n".join(f"User: {q}\nAssistant: {a}" for q, a in self.history[-4:])
        prompt = template.format(history=turns, question=message)
        settings = self.rag.settings.model_copy(update={"temperature": 0.0, "max_tokens": 96})
        reply = self.rag.backend.chat_model(settings).invoke([HumanMessage(prompt)])
        text = str(reply.content).strip().splitlines()
        return text[0].strip() if text and text[0].strip() else message
