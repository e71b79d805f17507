"""LLM backends behind one interface: the embedded in-process default and an OpenAI-compatible server.

Each backend hands out a LangChain chat model for the chain and counts the tokens of a list of
messages exactly as the model will see them, so that the packer can respect the context window.
Both apply the model's own chat template to the messages (the embedded model through its
tokenizer, the server through /v1/chat/completions), so a request is templated exactly once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import Any, ClassVar, Protocol, Self

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from rag.config import Settings
from rag.errors import LLMUnavailable, ModelUnavailable
from rag.prompt_safety import neutralise
from rag.repetition import guard_stream

log = logging.getLogger(__name__)


class GenerationParams(Protocol):
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    repetition_penalty: float | None


# Small models run on into an invented next turn; these end the answer where a turn would start.
DEFAULT_STOP = ("\nQuestion:", "\nPassage [")


class LLMBackend(Protocol):
    """What the chain needs from a model."""

    @property
    def model_name(self) -> str: ...

    @property
    def context_window(self) -> int: ...

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int: ...

    def chat_model(self, settings: Settings) -> BaseChatModel: ...


def to_role_dicts(
    messages: Sequence[BaseMessage], special_tokens: Iterable[str] = ()
) -> list[dict[str, str]]:
    """``messages`` as role dicts for a chat template, each content neutralised so that text
    from documents, questions or history cannot add turns (:func:`rag.prompt_safety.neutralise`;
    ``special_tokens``: the model's own, when known)."""
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    special = list(special_tokens)
    out = []
    for m in messages:
        role = roles.get(m.type)
        if role is None:
            raise ValueError(f"unsupported message type {m.type!r}")
        out.append({"role": role, "content": neutralise(str(m.content), special)})
    return out


def make_backend(settings: Settings) -> LLMBackend:
    """The backend ``llm_backend`` selects; ``auto``: a server when ``llm_url`` is set, else the
    embedded model. The in-process vLLM backend (and vllm itself) is imported only when chosen."""
    choice = settings.llm_backend
    if choice == "vllm":
        from rag.vllm_inprocess import VLLMBackend

        return VLLMBackend.shared(settings)
    if choice == "server" and not settings.llm_url:
        from rag.errors import ConfigError

        raise ConfigError(
            "llm_backend='server' needs llm_url (--llm-url http://HOST:PORT/v1); start a server "
            "with: rag llm serve"
        )
    if choice in ("server", "auto") and settings.llm_url:
        from rag.openai_server import OpenAIServerBackend

        return OpenAIServerBackend(settings)
    return EmbeddedBackend.shared(settings)


# --------------------------------------------------------------------------- embedded default


class ChatTemplateTokens:
    """Exact prompt counts for in-process backends: the model's own chat template, tokenized."""

    tokenizer: Any

    def encode_messages(self, messages: Sequence[BaseMessage]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            to_role_dicts(messages, self.special_tokens), add_generation_prompt=True, tokenize=True
        )
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        return len(self.encode_messages(messages))

    @cached_property
    def special_tokens(self) -> list[str]:
        """The tokenizer's special-token strings, which message text must not be able to write."""
        tok = self.tokenizer
        names = set(getattr(tok, "all_special_tokens", ()))
        for added in getattr(tok, "added_tokens_decoder", {}).values():
            if getattr(added, "special", False):
                names.add(str(added.content))
        return sorted(names)


class EmbeddedBackend(ChatTemplateTokens):
    """A transformers causal LM run in-process on the CPU (default: the packaged SmolLM2-135M)."""

    _instances: ClassVar[dict[tuple[str, str], EmbeddedBackend]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model_dir: str, name: str, device: str = "cpu", window: int | None = None):
        self.model_dir = model_dir
        self._name = name
        self.device = device
        self._window = window
        self._generate_lock = threading.Lock()

    @classmethod
    def shared(cls, settings: Settings) -> EmbeddedBackend:
        """One loaded copy per model directory and process."""
        from rag.default_model import DEFAULT_MODEL_NAME, default_model_dir

        model_dir = str(default_model_dir(settings.cache_dir))
        key = (model_dir, settings.device or "cpu")
        with cls._instances_lock:
            inst = cls._instances.get(key)
            if inst is None:
                inst = cls(model_dir, DEFAULT_MODEL_NAME, settings.device or "cpu")
                cls._instances[key] = inst
        inst._window = settings.context_window
        return inst

    @property
    def model_name(self) -> str:
        return self._name

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_dir)

    @cached_property
    def model(self) -> Any:
        try:
            from transformers import AutoModelForCausalLM

            model: Any = AutoModelForCausalLM.from_pretrained(self.model_dir)
        except Exception as exc:
            raise ModelUnavailable(
                f"Cannot load the embedded model from {self.model_dir}: {exc}. Delete that "
                "directory to have it unpacked again."
            ) from exc
        model.to(self.device)
        model.eval()
        return model

    @property
    def context_window(self) -> int:
        if self._window:
            return self._window
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.model_dir).max_position_embeddings)

    def chat_model(self, settings: Settings) -> BaseChatModel:
        return EmbeddedChatModel.for_settings(self, settings)

    def generate(
        self,
        messages: Sequence[BaseMessage],
        params: GenerationParams,
        stop: Sequence[str] = DEFAULT_STOP,
    ) -> Iterator[str | tuple[int, int]]:
        """Stream text pieces, then one ``(prompt_tokens, completion_tokens)`` tuple."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        prompt_ids = self.encode_messages(messages)
        input_ids = torch.tensor([prompt_ids], device=self.device)
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": params.max_tokens,
            "do_sample": sample,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if params.repetition_penalty is not None:
            kwargs["repetition_penalty"] = params.repetition_penalty
        halt = threading.Event()
        kwargs["stopping_criteria"] = StoppingCriteriaList([_Halt(halt)])
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs["streamer"] = streamer
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                with self._generate_lock, torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    result["out"] = self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the caller's thread
                result["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            # Small models loop on one sentence or run on into an invented next turn: both are
            # cut, and ``halt`` stops the generator spending time on them.
            yield from guard_stream(streamer, stop, halt)
        finally:
            halt.set()  # also when the caller stops reading early
            worker.join()
        if "error" in result:
            raise result["error"]
        completion = int(result["out"].shape[1]) - len(prompt_ids)
        yield (len(prompt_ids), completion)


class _Halt:
    """A transformers stopping criterion that ends generation once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class InProcessChatModel(BaseChatModel):
    """The sampling fields shared by the chat models that run a model in this process."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any = Field(exclude=True)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    repetition_penalty: float | None = None

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.backend.model_name, "temperature": self.temperature}

    @classmethod
    def for_settings(cls, backend: Any, settings: Settings) -> Self:
        return cls(
            backend=backend,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            seed=settings.seed,
            repetition_penalty=settings.repetition_penalty,
        )


class EmbeddedChatModel(InProcessChatModel):
    """LangChain chat model over :class:`EmbeddedBackend`."""

    @property
    def _llm_type(self) -> str:
        return "rag-embedded"

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in self.backend.generate(messages, self, stop or DEFAULT_STOP):
            if isinstance(piece, tuple):
                prompt, completion = piece
                usage = {
                    "input_tokens": prompt,
                    "output_tokens": completion,
                    "total_tokens": prompt + completion,
                }
                yield ChatGenerationChunk(
                    message=AIMessageChunk(
                        content="",
                        usage_metadata=usage,
                        response_metadata={"model_name": self.backend.model_name},
                    )
                )
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text: list[str] = []
        usage = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            msg = chunk.message
            if isinstance(msg, AIMessageChunk) and msg.usage_metadata:
                usage = msg.usage_metadata
            text.append(str(msg.content))
        message = AIMessage(
            content="".join(text),
            usage_metadata=usage,
            response_metadata={"model_name": self.backend.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


__all__ = [
    "EmbeddedBackend",
    "EmbeddedChatModel",
    "LLMBackend",
    "LLMUnavailable",
    "make_backend",
    "to_role_dicts",
]
