"""Choosing the backend that the settings name; each is imported only when chosen."""

from __future__ import annotations

import logging

from rag.config import Settings
from rag.llm.backend import LLMBackend
from rag.llm.embedded import EmbeddedBackend

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> LLMBackend:
    """The backend ``llm_backend`` selects; ``auto``: a server when ``llm_url`` is set, else the
    embedded model. The in-process vLLM backend (and vllm itself) is imported only when chosen."""
    choice = settings.llm_backend
    if choice == "vllm":
        from rag.llm.vllm_inprocess import VLLMBackend

        return VLLMBackend.shared(settings)
    if choice == "server" and not settings.llm_url:
        from rag.errors import ConfigError

        raise ConfigError(
            "llm_backend='server' needs llm_url (--llm-url http://HOST:PORT/v1); start a server "
            "with: rag llm serve"
        )
    if choice in ("server", "auto") and settings.llm_url:
        from rag.llm.openai_server import OpenAIServerBackend

        return OpenAIServerBackend(settings)
    return EmbeddedBackend.shared(settings)
