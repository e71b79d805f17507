"""The embedded default: a transformers causal LM run in-process on the CPU, with no server and no
network (the packaged SmolLM2-135M-Instruct unless ``llm_model`` names another packaged model)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from rag.config import Settings
from rag.errors import ModelUnavailable
from rag.llm.backend import DEFAULT_STOP, GenerationParams
from rag.llm.inprocess import ChatTemplateTokens, InProcessChatModel
from rag.llm.repetition import guard_stream

log = logging.getLogger(__name__)


class EmbeddedBackend(ChatTemplateTokens):
    """A transformers causal LM run in-process on the CPU (default: the packaged SmolLM2-135M).

    One backend per settings (its context window, its text tokenizer), light to make; the weights
    are loaded once per model directory and device and shared by all of them.
    """

    _models: ClassVar[dict[tuple[str, str], Any]] = {}
    _locks: ClassVar[dict[tuple[str, str], threading.Lock]] = {}
    _models_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, model_dir: str, name: str, settings: Settings, *, unpack: bool = False
    ) -> None:
        """``unpack``: ``model_dir`` is where the packaged default model is unpacked, on the first
        use of its files (an answer that abstains never unpacks or loads it)."""
        self.model_dir = model_dir
        self._unpack = unpack
        self._name = name
        self.settings = settings
        self.device = settings.device or "cpu"
        self._key = (model_dir, self.device)
        with self._models_lock:
            # One generation at a time per loaded model, whichever backend asks.
            self._generate_lock = self._locks.setdefault(self._key, threading.Lock())

    @classmethod
    def shared(cls, settings: Settings) -> EmbeddedBackend:
        """The backend for ``settings``; the model is loaded once per directory and process.

        ``llm_model = "embedded:NAME"`` picks another packaged model than the default."""
        from rag.llm.default_model import embedded_model, unpacked_dir

        name = embedded_model(settings).name
        return cls(str(unpacked_dir(settings.cache_dir, name)), name, settings, unpack=True)

    @property
    def model_name(self) -> str:
        return self._name

    def _files(self) -> str:
        """The model directory, unpacked first when it is a packaged model's and not yet there."""
        if self._unpack:
            from rag.llm.default_model import MODELS, export_default_model

            export_default_model(Path(self.model_dir), MODELS[self._name])
        return self.model_dir

    @cached_property
    def tokenizer(self) -> Any:
        from rag.llm.tokens import model_tokenizer

        return model_tokenizer(self._files(), self._name, offline=True).hf

    @property
    def model(self) -> Any:
        with self._models_lock:
            model = self._models.get(self._key)
            if model is None:
                model = self._models[self._key] = self._load_model()
        return model

    def _load_model(self) -> Any:
        try:
            from transformers import AutoModelForCausalLM

            model: Any = AutoModelForCausalLM.from_pretrained(self._files())
        except ModelUnavailable:
            raise
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
        if self.settings.context_window:
            return self.settings.context_window
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self._files()).max_position_embeddings)

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
