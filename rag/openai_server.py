"""An OpenAI-compatible server (vLLM in production) as the LLM backend, through langchain-openai.

The server applies the model's chat template (/v1/chat/completions). The context window comes from
/v1/models (vLLM reports ``max_model_len``) and prompt tokens are counted by the server's own
/tokenize endpoint, so the budget is exact for whatever model is served.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from rag.config import Settings
from rag.errors import LLMUnavailable
from rag.llm import to_role_dicts

log = logging.getLogger(__name__)


def _down_message(url: str, exc: Exception) -> str:
    return (
        f"The LLM server at {url} is not answering ({type(exc).__name__}: {exc}). Start it "
        "(for example: rag llm serve) or check --llm-url; leave --llm-url unset to use the "
        "embedded model."
    )


class OpenAIServerBackend:
    def __init__(self, settings: Settings) -> None:
        assert settings.llm_url is not None
        self.base_url = settings.llm_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.settings = settings

    @cached_property
    def _client(self) -> Any:
        from openai import OpenAI

        return OpenAI(
            base_url=self.base_url,
            api_key=self.settings.llm_api_key,
            timeout=self.settings.llm_timeout,
            max_retries=self.settings.llm_max_retries,
        )

    @cached_property
    def _served(self) -> dict[str, Any]:
        """The served model entry (from /v1/models) this backend talks to."""
        import openai

        try:
            models = list(self._client.models.list())
        except openai.APIConnectionError as exc:
            raise LLMUnavailable(_down_message(self.base_url, exc)) from exc
        except openai.APIError as exc:
            raise LLMUnavailable(
                f"The LLM server at {self.base_url} refused /models: {exc}"
            ) from exc
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
    def context_window(self) -> int:
        served = self._served.get("max_model_len")
        if self.settings.context_window:
            if served and self.settings.context_window > int(served):
                raise LLMUnavailable(
                    f"context_window={self.settings.context_window} exceeds the server's "
                    f"max_model_len {served} for {self.model_name}; lower it or unset it."
                )
            return self.settings.context_window
        if served:
            return int(served)
        # Servers that do not report it: assume Llama 2's window.
        log.warning("%s does not report max_model_len; assuming 4096 tokens", self.base_url)
        return 4096

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        root = self.base_url[: -len("/v1")]
        payload = {
            "model": self.model_name,
            "messages": to_role_dicts(messages),
            "add_generation_prompt": True,
        }
        try:
            r = httpx.post(f"{root}/tokenize", json=payload, timeout=self.settings.llm_timeout)
        except httpx.HTTPError as exc:
            raise LLMUnavailable(_down_message(self.base_url, exc)) from exc
        if r.status_code == 200 and "count" in r.json():
            return int(r.json()["count"])
        raise LLMUnavailable(
            f"The server at {root} has no usable /tokenize endpoint (HTTP {r.status_code}), so "
            "prompt tokens cannot be counted exactly. Serve the model with vLLM."
        )

    def chat_model(self, settings: Settings) -> BaseChatModel:
        from langchain_openai import ChatOpenAI

        extra: dict[str, Any] = {}
        if settings.seed is not None:
            extra["seed"] = settings.seed
        if settings.repetition_penalty is not None:
            extra["extra_body"] = {"repetition_penalty": settings.repetition_penalty}
        return ChatOpenAI(
            base_url=self.base_url,
            api_key=settings.llm_api_key,
            model=self.model_name,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            stream_usage=True,
            model_kwargs=extra,
        )
