"""Which requests a browser page may make: the ``Host`` and ``Origin`` checks.

A server on loopback without a key is reachable by every web page its user opens. Two attacks
follow, both known from other local servers (Ollama's DNS-rebinding fix, Jupyter's host and origin
checks):

- **Cross-site writes.** A multipart POST is a CORS "simple request": the browser sends it without
  asking first, so any page could upload a document into the index (or delete one). Browsers send
  ``Origin`` with every cross-origin POST and DELETE, so a state-changing request whose ``Origin``
  is neither the server's own nor one of ``--cors-origin`` is refused. Uploads and deletions on a
  server without a key also need a header that no page can send without a preflight the server
  would refuse (``X-Requested-With``): a second lock for a browser that omits ``Origin``.
- **DNS rebinding.** A hostile name that resolves to 127.0.0.1 makes its page same-origin with the
  server, so it could read answers. Its requests carry the hostile name in ``Host``, so a server
  without a key answers only to loopback names, IP addresses and the names given with
  ``--allowed-host``. An IP address in ``Host`` cannot come from rebinding (the page's origin is
  then that address itself). A server with a key is protected by the key, which a rebound page does
  not have; it checks ``Host`` only when ``--allowed-host`` names are given.

Pure functions of the request's headers: no I/O, no FastAPI.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-requested-with"
ANY_HOST = "*"


@dataclass(frozen=True)
class OriginPolicy:
    """What ``rag serve`` accepts from browsers: the names it answers to and the origins that may
    change its index."""

    keyless: bool
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()

    def host_problem(self, host: str | None) -> str | None:
        """Why a request with this ``Host`` header is refused, or None when it is accepted."""
        if host is None or ANY_HOST in self.allowed_hosts:
            return None  # HTTP/1.0 without Host: not a browser, so not rebinding
        if not self.keyless and not self.allowed_hosts:
            return None
        name = host_name(host)
        if _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
            return None
        if any(_matches(name, allowed) for allowed in self.allowed_hosts):
            return None
        return (
            f"This server does not answer to the host name {name!r} (a page of another site "
            "could reach it that way). Use http://127.0.0.1 or http://localhost, or start rag "
            f"serve with --allowed-host {name}."
        )

    def origin_problem(self, method: str, host: str | None, origin: str | None) -> str | None:
        """Why a request from a page of ``origin`` is refused, or None when it is accepted.

        Only requests that change something are checked: a page of another origin cannot read a
        response without CORS headers anyway."""
        if method.upper() in SAFE_METHODS or origin is None:
            return None
        if origin in self.cors_origins or ANY_HOST in self.cors_origins:
            return None
        if origin != "null" and host is not None:
            parts = urlsplit(origin)
            if parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower():
                return None  # the server's own page
        return (
            f"A page of {origin} may not send {method.upper()} requests to this server. To allow "
            f"a page of another origin, start rag serve with --cors-origin {origin}."
        )

    def needs_csrf_header(self, method: str, path: str) -> bool:
        """True for uploads and deletions on a server without a key."""
        if not self.keyless:
            return False  # the Authorization header already makes the request non-simple
        method = method.upper()
        return (method == "POST" and path == "/v1/documents") or (
            method == "DELETE" and path.startswith("/v1/documents/")
        )


CSRF_MESSAGE = (
    "Uploads and deletions on a server without an API key need the header "
    "'X-Requested-With' (any value; a page of another site cannot send it), e.g. "
    "curl -H 'X-Requested-With: rag' -F file=@report.pdf http://127.0.0.1:8080/v1/documents"
)


def host_name(host: str) -> str:
    """The name or address of a ``Host`` header, without its port or brackets, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    name, _, _port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return name.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _matches(name: str, allowed: str) -> bool:
    allowed = allowed.strip().lower().rstrip(".")
    if allowed.startswith("."):  # ".example.com": the domain and every name under it
        return name == allowed[1:] or name.endswith(allowed)
    return name == host_name(allowed)
