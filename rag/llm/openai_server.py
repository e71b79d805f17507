"""An OpenAI-compatible server (vLLM in production) as the LLM backend, through langchain-openai.

One templating path per request, chosen by ``llm_api``:

- ``"chat"`` (default): the server applies the model's own chat template (/v1/chat/completions,
  langchain-openai's ``ChatOpenAI``);
- ``"completions"``: the prompt is rendered here in the Llama 2-chat format
  (:mod:`rag.llm.llama2_format`) and sent as plain text to /v1/completions (langchain-openai's
  ``OpenAI``) with ``add_special_tokens: false``, so that nothing is added to it.

The context window comes from /v1/models (vLLM reports ``max_model_len``) and prompt tokens are
counted by the server's own /tokenize endpoint for exactly the text that will be sent, so the budget
is exact for whatever model is served. Every request goes through the openai SDK (timeouts, retries
with exponential backoff on connection errors, 408/429 and 5xx); a server that is down or dies
mid-answer surfaces as :class:`~rag.errors.LLMUnavailable` naming the URL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from rag.config import Settings
from rag.errors import ConfigError, LLMUnavailable
from rag.llm import llama2_format
from rag.llm.backend import DEFAULT_STOP, to_role_dicts
from rag.llm.server_errors import server_errors
from rag.llm.tokens import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)


def api_base(url: str) -> str:
    """``url`` as an OpenAI API base ending in /v1 (``http://host:port`` is accepted too)."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class OpenAIServerBackend:
    def __init__(self, settings: Settings) -> None:
        assert settings.llm_url is not None
        self.base_url = api_base(settings.llm_url)
        # vLLM serves /tokenize beside /v1, not under it.
        self.root_url = self.base_url[: -len("/v1")]
        self.settings = settings
        self.api = settings.llm_api

    def _sdk_client(self, base_url: str) -> Any:
        from openai import OpenAI

        return OpenAI(
            base_url=base_url,
            api_key=self.settings.llm_api_key,
            timeout=self.settings.llm_timeout,
            max_retries=self.settings.llm_max_retries,
        )

    @cached_property
    def _client(self) -> Any:
        return self._sdk_client(self.base_url)

    @cached_property
    def _root_client(self) -> Any:
        return self._sdk_client(self.root_url)

    @cached_property
    def _served(self) -> dict[str, Any]:
        """The served model entry (from /v1/models) this backend talks to."""
        with server_errors(self.base_url):
            models = list(self._client.models.list())
        if not models:
            raise LLMUnavailable(f"The LLM server at {self.base_url} serves no model.")
        wanted = self.settings.llm_model
        for m in models:
            if wanted is None or m.id == wanted:
                return m.model_dump()
        names = ", ".join(m.id for m in models)
        raise LLMUnavailable(
            f"The LLM server at {self.base_url} does not serve {wanted!r}; it serves: {names}. "
            "Pass one of these with --llm-model."
        )

    @property
    def model_name(self) -> str:
        return str(self._served["id"])

    @property
    def served_context_window(self) -> int | None:
        """The context length the server reports for the model (vLLM: ``max_model_len``)."""
        served = self._served.get("max_model_len")
        return int(served) if served else None

    @property
    def context_window(self) -> int:
        served = self.served_context_window
        if self.settings.context_window:
            if served and self.settings.context_window > served:
                raise ConfigError(
                    f"context_window={self.settings.context_window} exceeds the context length "
                    f"{served} that {self.base_url} serves {self.model_name} with "
                    "(max_model_len); lower it or unset it to use the server's."
                )
            return self.settings.context_window
        if served:
            return int(served)
        # Servers that do not report it: assume Llama 2's window.
        log.warning("%s does not report max_model_len; assuming 4096 tokens", self.base_url)
        return 4096

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the server's /tokenize (vLLM), through the SDK's retries."""
        import openai

        try:
            with server_errors(self.base_url):
                result: dict[str, Any] = self._root_client.post(
                    "/tokenize", cast_to=dict, body={"model": self.model_name, **body}
                )
        except LLMUnavailable as exc:
            if isinstance(exc.__cause__, openai.APIStatusError) and exc.__cause__.status_code in (
                404,
                405,
            ):
                raise LLMUnavailable(
                    f"The server at {self.root_url} has no /tokenize endpoint, so prompt tokens "
                    "cannot be counted exactly. Serve the model with vLLM."
                ) from exc
            raise
        if "count" not in result:
            raise LLMUnavailable(f"{self.root_url}/tokenize answered without a token count.")
        return result

    def prompt_text(self, messages: Sequence[BaseMessage]) -> str:
        """The completions API path's prompt: the Llama 2-chat rendering of ``messages``."""
        return llama2_format.render(messages)

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """Prompt tokens of ``messages`` exactly as the request will present them to the model."""
        if self.api == "completions":
            body = {"prompt": self.prompt_text(messages), "add_special_tokens": False}
        else:
            body = {"messages": to_role_dicts(messages), "add_generation_prompt": True}
        return int(self.tokenize(body)["count"])

    def text_tokens(self) -> Tokenizer:
        """The tokenizer chunks are counted in: the settings' ``tokenizer``, else the served
        model's own loaded offline (never the server: ingesting needs no running server)."""
        return load_tokenizer(self.settings)

    def count_text(self, text: str) -> int:
        """Tokens of plain generated ``text`` as the server counts them (no special tokens added)."""
        return int(self.tokenize({"prompt": text, "add_special_tokens": False})["count"])

    def chat_model(self, settings: Settings) -> BaseChatModel:
        extra_body: dict[str, Any] = {}
        if settings.repetition_penalty is not None:
            extra_body["repetition_penalty"] = settings.repetition_penalty
        if self.api == "completions":
            return self._completions_model(settings, extra_body)
        from rag.llm.server_chat import ServerChatModel

        return ServerChatModel(
            **self._client_options(settings),
            streaming=True,
            stream_usage=True,
            stop_sequences=list(DEFAULT_STOP),
            extra_body=extra_body or None,
            backend=self,
        )

    def _client_options(self, settings: Settings) -> dict[str, Any]:
        """What the chat and the completions clients share: endpoint, model, sampling, retries."""
        return {
            "base_url": self.base_url,
            "api_key": settings.llm_api_key,
            "model": self.model_name,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
            "seed": settings.seed,
            "timeout": settings.llm_timeout,
            "max_retries": settings.llm_max_retries,
        }

    def _completions_model(self, settings: Settings, extra_body: dict[str, Any]) -> BaseChatModel:
        from langchain_openai import OpenAI

        from rag.llm.server_chat import Llama2CompletionsModel

        # The prompt carries its own <s>/</s>; the server must add no BOS of its own.
        extra_body["add_special_tokens"] = False
        llm = OpenAI(**self._client_options(settings), extra_body=extra_body)
        return Llama2CompletionsModel(llm=llm, backend=self)


@dataclass
class ServedModel:
    """One model as ``rag llm check`` reports it."""

    id: str
    max_model_len: int | None
    root: str | None = None


@dataclass
class ServerReport:
    """What an OpenAI-compatible server says about itself."""

    url: str
    models: list[ServedModel] = field(default_factory=list)
    tokenizer_ok: bool = False
    tokenizer_detail: str = ""


def check_server(settings: Settings) -> ServerReport:
    """Ask the server at ``settings.llm_url`` for its models, their context length and whether
    /tokenize answers. Raises :class:`LLMUnavailable` when the server does not answer."""
    backend = OpenAIServerBackend(settings)
    with server_errors(backend.base_url):
        listed = list(backend._client.models.list())
    report = ServerReport(url=backend.base_url)
    for m in listed:
        data = m.model_dump()
        length = data.get("max_model_len")
        report.models.append(
            ServedModel(
                id=m.id, max_model_len=int(length) if length else None, root=data.get("root")
            )
        )
    if not report.models:
        report.tokenizer_detail = "no model is served"
        return report
    try:
        probe = backend.tokenize({"prompt": "Hello, world!", "add_special_tokens": False})
        report.tokenizer_ok = True
        report.tokenizer_detail = f"/tokenize counted {probe['count']} tokens in 'Hello, world!'"
    except LLMUnavailable as exc:
        report.tokenizer_detail = str(exc)
    return report
