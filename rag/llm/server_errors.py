"""Failures of an OpenAI-compatible server, as :class:`~rag.errors.LLMUnavailable` naming the URL
and what to do. Shared by the backend (models, /tokenize) and its chat models (generation)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rag.errors import LLMUnavailable, RagError


def _down_message(url: str, exc: Exception) -> str:
    detail = f"{type(exc).__name__}: {exc}"
    if exc.__cause__ is not None and str(exc.__cause__) not in detail:
        detail += f" {exc.__cause__}"
    return (
        f"The LLM server at {url} is not answering ({detail}). Start it "
        "(for example: rag llm serve) or check --llm-url; leave --llm-url unset to use the "
        "embedded model."
    )


@contextmanager
def server_errors(url: str) -> Iterator[None]:
    """Turn the openai SDK's and the HTTP layer's failures into :class:`LLMUnavailable`.

    The SDK retries before giving up; what arrives here is final. A server that dies while it
    streams an answer breaks the connection, which the HTTP library reports in its own terms.
    """
    import openai

    try:
        yield
    except RagError:
        raise
    except (openai.APIConnectionError, openai.InternalServerError) as exc:
        raise LLMUnavailable(_down_message(url, exc)) from exc
    except openai.APIStatusError as exc:
        raise LLMUnavailable(
            f"The LLM server at {url} refused the request (HTTP {exc.status_code}): "
            f"{_error_detail(exc)}"
        ) from exc
    except openai.APIError as exc:
        raise LLMUnavailable(f"The LLM server at {url} failed: {exc}") from exc
    except Exception as exc:
        if _is_transport_error(exc):
            raise LLMUnavailable(_down_message(url, exc)) from exc
        raise


def _is_transport_error(exc: BaseException) -> bool:
    """A broken connection, from httpx or from the httpx fork that newer openai SDKs use."""
    for cls in type(exc).__mro__:
        if cls.__name__ in ("TransportError", "StreamError") and cls.__module__.startswith("httpx"):
            return True
    return isinstance(exc, ConnectionError)


def _error_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)
    return str(getattr(exc, "message", exc))
