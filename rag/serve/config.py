"""What a server is started with, checked before anything loads.

Plain data: importing this module needs neither FastAPI nor the models, so ``rag serve`` can refuse
a bad address or a missing extra in milliseconds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path

from rag.config import Settings
from rag.errors import ConfigError
from rag.serve.permissions import DEFAULT_GROUPS

MB = 1024 * 1024

DEFAULT_QUEUED_WRITES = 16

INSTALL_HINT = "pip install 'rag-toolkit[serve]'"


@dataclass(frozen=True)
class Limits:
    """What one request may send; larger requests get a 4xx naming the limit and the flag."""

    max_body_bytes: int = 1 * MB  # any JSON request
    max_upload_bytes: int = 50 * MB  # one upload request, all its files together
    max_files: int = 20  # files in one upload request
    max_question_chars: int = 4000  # the question (last user message)
    max_messages: int = 200  # messages of one chat completion


@dataclass(frozen=True)
class ServeConfig:
    """How ``rag serve`` runs: the index, the address, the key and the limits."""

    index_dir: Path
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    model_name: str | None = None  # what /v1/models lists; default rag:<index directory name>
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # host names a keyless server answers to besides loopback
    limits: Limits = field(default_factory=Limits)
    # Which per-request settings clients may change (rag.serve.permissions), and the most tokens
    # a client may ask for (None: the configured max_tokens).
    allow_overrides: frozenset[str] = DEFAULT_GROUPS
    max_tokens_limit: int | None = None
    max_queued_writes: int = DEFAULT_QUEUED_WRITES  # uploads and deletions waiting their turn
    header_timeout_s: float = 10.0  # a connection's request headers must arrive within this
    upload_dir: Path | None = None  # where uploads are kept; default under settings.cache_dir

    @property
    def served_model(self) -> str:
        return self.model_name or f"rag:{self.index_dir.resolve().name}"

    @property
    def token_bound(self) -> int:
        return self.max_tokens_limit or self.settings.max_tokens

    @property
    def uploads(self) -> Path:
        """Where uploaded files are kept, one directory per index (so a file uploaded again
        replaces its document, also after a restart)."""
        if self.upload_dir is not None:
            return self.upload_dir
        key = hashlib.sha256(str(self.index_dir.resolve()).encode()).hexdigest()[:16]
        return self.settings.cache_dir / "uploads" / key

    @property
    def bind_host(self) -> str:
        """The address to bind: an IPv6 address without the brackets a URL puts around it."""
        return self.host.strip("[]") if self.host.startswith("[") else self.host

    def check(self) -> None:
        """Refuse an exposed address without a key, and limits that make no sense."""
        try:
            socket.getaddrinfo(self.bind_host, self.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise ConfigError(
                f"--host {self.host} is not an address this machine can bind ({exc}); use an IP "
                "address such as 127.0.0.1, ::1 or 0.0.0.0, or a name that resolves."
            ) from exc
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(
                f"Binding to {self.host} exposes the index and the model to the network, so it "
                "needs an API key: set RAG_API_KEY=<a long random string> (clients send it as "
                "'Authorization: Bearer <key>'), or bind to loopback with --host 127.0.0.1."
            )
        if self.api_key is not None and len(self.api_key) < 16:
            raise ConfigError(
                "RAG_API_KEY is shorter than 16 characters; use a long random string, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port takes 1 to 65535, not {self.port}")
        lim = self.limits
        for name in ("max_body_bytes", "max_upload_bytes", "max_files", "max_question_chars"):
            if getattr(lim, name) <= 0:
                raise ConfigError(f"the limit {name} must be positive, not {getattr(lim, name)}")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches: 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
