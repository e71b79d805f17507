"""In-process ``vllm.LLM`` as the LLM backend: batch work (evaluations) on a GPU machine.

Chosen with ``llm_backend = "vllm"``; nothing here imports vllm until the model is first used, so
the rest of the toolkit never needs it. The prompt is templated once, here, with the model's own
chat template, and handed to vLLM as token ids: the count the packer sees is exactly what the model
reads. A LangChain ``batch`` over the chat model becomes one ``LLM.generate`` call, so vLLM
schedules the whole batch at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig

from rag.config import Settings
from rag.errors import ModelUnavailable
from rag.llm.inprocess import ChatTemplateTokens, InProcessChatModel

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "The in-process vLLM backend (llm_backend='vllm') needs the vllm package on a GPU machine: "
    "pip install vllm. Without one, serve the model (rag llm serve) and use --llm-url."
)


@dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int


def import_vllm() -> Any:
    """The vllm module, or :class:`ModelUnavailable` saying how to get it."""
    try:
        import vllm
    except ImportError as exc:
        raise ModelUnavailable(f"{INSTALL_HINT} ({exc})") from exc
    return vllm


class VLLMBackend(ChatTemplateTokens):
    """A backend per settings over one ``vllm.LLM`` per model and process, loaded on first use."""

    _engines: ClassVar[dict[tuple[str, int | None], tuple[Any, threading.Lock]]] = {}
    _engines_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        model: str,
        name: str,
        max_model_len: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.model = model
        self._name = name
        self.max_model_len = max_model_len
        self.settings = settings or Settings.model_validate(
            {"llm_backend": "vllm", "llm_model": model}
        )

    @classmethod
    def shared(cls, settings: Settings) -> VLLMBackend:
        """The backend for ``settings``; the engine is loaded once per model and window."""
        from rag.llm.default_model import EMBEDDED_PREFIX

        if settings.llm_model and not settings.llm_model.startswith(EMBEDDED_PREFIX):
            model, name = settings.llm_model, settings.llm_model
        else:  # a packaged model ("embedded:NAME", or the default), exported once
            from rag.llm.default_model import embedded_model, export_default_model, unpacked_dir

            packaged = embedded_model(settings)
            name = packaged.name
            model = str(export_default_model(unpacked_dir(settings.cache_dir, name), packaged))
        return cls(model, name, settings.context_window, settings)

    def _engine(self) -> tuple[Any, threading.Lock]:
        key = (self.model, self.max_model_len)
        with self._engines_lock:
            engine = self._engines.get(key)
            if engine is None:
                # vllm.LLM is not thread-safe; requests take turns on its lock (a batch is one).
                engine = self._engines[key] = (self._load(), threading.Lock())
        return engine

    @property
    def llm(self) -> Any:
        return self._engine()[0]

    def _load(self) -> Any:
        vllm = import_vllm()
        kwargs: dict[str, Any] = {"model": self.model, "served_model_name": self._name}
        if self.max_model_len:
            kwargs["max_model_len"] = self.max_model_len
        log.info("Loading %s into vllm.LLM", self.model)
        try:
            return vllm.LLM(**kwargs)
        except Exception as exc:
            raise ModelUnavailable(f"vllm.LLM could not load {self.model}: {exc}") from exc

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    @cached_property
    def tokenizer(self) -> Any:
        # The model's own tokenizer as text_tokens() loads it (offline, without the engine), so
        # that counting a prompt starts no engine; vLLM's copy of it for a model not on disk.
        from rag.llm.tokens import model_tokenizer

        try:
            return model_tokenizer(self.model, self._name, offline=True).hf
        except ModelUnavailable:
            return self.llm.get_tokenizer()

    def chat_model(self, settings: Settings) -> BaseChatModel:
        return VLLMChatModel.for_settings(self, settings)

    def sampling_params(self, model: VLLMChatModel, stop: list[str] | None) -> Any:
        vllm = import_vllm()
        kwargs: dict[str, Any] = {
            "temperature": model.temperature,
            "top_p": model.top_p,
            "max_tokens": model.max_tokens,
            "seed": model.seed,
            "stop": stop,
        }
        if model.repetition_penalty is not None:
            kwargs["repetition_penalty"] = model.repetition_penalty
        return vllm.SamplingParams(**kwargs)

    def generate(
        self, conversations: Sequence[Sequence[BaseMessage]], sampling_params: Any
    ) -> list[Generated]:
        """Answer every conversation in one vLLM batch, in order."""
        prompts = [{"prompt_token_ids": self.encode_messages(c)} for c in conversations]
        llm, lock = self._engine()
        with lock:
            outputs = llm.generate(prompts, sampling_params, use_tqdm=False)
        results = []
        for prompt, out in zip(prompts, outputs, strict=True):
            completion = out.outputs[0]
            results.append(
                Generated(
                    text=completion.text,
                    prompt_tokens=len(prompt["prompt_token_ids"]),
                    completion_tokens=len(completion.token_ids),
                )
            )
        return results


class VLLMChatModel(InProcessChatModel):
    """LangChain chat model over :class:`VLLMBackend`; ``batch`` is one vLLM batch."""

    @property
    def _llm_type(self) -> str:
        return "rag-vllm-inprocess"

    def _message(self, g: Generated) -> AIMessage:
        return AIMessage(
            content=g.text,
            usage_metadata={
                "input_tokens": g.prompt_tokens,
                "output_tokens": g.completion_tokens,
                "total_tokens": g.prompt_tokens + g.completion_tokens,
            },
            response_metadata={"model_name": self.backend.model_name},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        params = self.backend.sampling_params(self, stop)
        (g,) = self.backend.generate([messages], params)
        return ChatResult(generations=[ChatGeneration(message=self._message(g))])

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """All inputs (lists of messages) in one vLLM call; on failure, each on its own so that
        one bad input does not cost the others their answers."""
        conversations = [list(x) for x in inputs]
        try:
            params = self.backend.sampling_params(self, None)
            return [self._message(g) for g in self.backend.generate(conversations, params)]
        except Exception:
            if len(conversations) == 1 and not return_exceptions:
                raise
        results: list[Any] = []
        for c in conversations:
            try:
                results.append(self.invoke(c))
            except Exception as exc:
                if not return_exceptions:
                    raise
                results.append(exc)
        return results

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        import asyncio

        return await asyncio.to_thread(
            self.batch, inputs, config, return_exceptions=return_exceptions
        )
