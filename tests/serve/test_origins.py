"""Web pages of other origins against a server without a key: no cross-site writes, no DNS
rebinding (rag.serve.origins). The policy's rules, then a real ``rag serve`` spoken to with the
headers a browser sends, then a real headless Chromium on a page served from another port."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.index.reader import Store
from rag.llm.serve import free_port
from rag.serve.origins import OriginPolicy, host_name
from tests.serve.conftest import Server

PLANTED = "The Transformer was invented by the okapi herders of Lake Geneva in 1893."


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("LocalHost", "localhost"),
        ("evil.example:80", "evil.example"),
        ("rag.internal.", "rag.internal"),
    ],
)
def test_host_name(host: str, name: str) -> None:
    assert host_name(host) == name


@pytest.mark.parametrize(
    ("host", "accepted"),
    [
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("localhost:8080", True),
        ("app.localhost", True),
        ("192.168.1.7:8080", True),  # an address cannot come from rebinding
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example", False),
        ("docs.team.example", True),  # --allowed-host .team.example
        ("team.example", True),
        ("myteam.example", False),
        ("rag-box:8080", True),  # --allowed-host rag-box
    ],
)
def test_a_keyless_server_answers_only_to_loopback_and_allowed_names(
    host: str, accepted: bool
) -> None:
    policy = OriginPolicy(keyless=True, allowed_hosts=(".team.example", "rag-box"))
    assert (policy.host_problem(host) is None) is accepted


def test_a_server_with_a_key_checks_host_names_only_when_given() -> None:
    assert OriginPolicy(keyless=False).host_problem("anything.example") is None
    problem = OriginPolicy(keyless=False, allowed_hosts=("rag-box",)).host_problem("x.example")
    assert problem is not None and "--allowed-host x.example" in problem
    assert OriginPolicy(keyless=True, allowed_hosts=("*",)).host_problem("x.example") is None


@pytest.mark.parametrize(
    ("method", "origin", "accepted"),
    [
        ("POST", None, True),  # not a browser, or a same-origin GET-like request
        ("POST", "http://127.0.0.1:8080", True),  # the server's own page
        ("DELETE", "http://127.0.0.1:8080", True),
        ("POST", "http://127.0.0.1:9999", False),  # another port is another origin
        ("POST", "http://localhost:8080", False),  # another name is another origin
        ("DELETE", "https://evil.example", False),
        ("POST", "null", False),  # a sandboxed frame or a file: page
        ("GET", "https://evil.example", True),  # it cannot read the response
        ("POST", "http://allowed.example", True),  # --cors-origin
    ],
)
def test_state_changing_requests_from_other_origins_are_refused(
    method: str, origin: str | None, accepted: bool
) -> None:
    policy = OriginPolicy(keyless=True, cors_origins=("http://allowed.example",))
    problem = policy.origin_problem(method, "127.0.0.1:8080", origin)
    assert (problem is None) is accepted
    if problem is not None:
        assert "--cors-origin" in problem


def test_keyless_uploads_and_deletions_need_a_non_simple_header() -> None:
    keyless, keyed = OriginPolicy(keyless=True), OriginPolicy(keyless=False)
    assert keyless.needs_csrf_header("POST", "/v1/documents")
    assert keyless.needs_csrf_header("DELETE", "/v1/documents/a.pdf")
    assert not keyless.needs_csrf_header("POST", "/v1/ask")
    assert not keyed.needs_csrf_header("POST", "/v1/documents")


def _documents(server: Server) -> frozenset[str]:
    with Store.open(server.index) as store:
        return frozenset(d.source for d in store.documents())


def _plant(server: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/documents",
        files=[("files", ("planted.txt", PLANTED.encode()))],
        headers=headers,
        timeout=300.0,
    )


@pytest.mark.parametrize(
    "headers",
    [
        # What a page on another port sends with a form or fetch(no-cors) upload.
        {"Origin": "http://127.0.0.1:1", "X-Requested-With": "x"},
        {"Origin": "null", "X-Requested-With": "x"},
        # A browser that sends no Origin still cannot add X-Requested-With without a preflight.
        {},
        # DNS rebinding: the page's own origin, under a hostile name that resolves to loopback.
        {"Host": "rebind.evil.example:8080", "Origin": "http://rebind.evil.example:8080"},
    ],
)
def test_a_keyless_server_refuses_uploads_a_web_page_could_send(
    keyless_server: Server, headers: dict[str, str]
) -> None:
    before = _documents(keyless_server)
    r = _plant(keyless_server, headers)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["type"] == "permission_error"
    assert _documents(keyless_server) == before


def test_a_rebound_host_name_reads_nothing(keyless_server: Server) -> None:
    for path in ("/", "/v1/index", "/v1/models"):
        r = httpx.get(f"{keyless_server.url}{path}", headers={"Host": "evil.example"})
        assert r.status_code == 403, (path, r.text)
        assert "--allowed-host evil.example" in r.json()["error"]["message"]
    ok = httpx.get(f"{keyless_server.url}/v1/index", headers={"Host": "localhost"}, timeout=60)
    assert ok.status_code == 200


def test_the_servers_own_page_and_scripts_still_upload_and_delete(keyless_server: Server) -> None:
    headers = {"Origin": keyless_server.url, "X-Requested-With": "rag-page"}
    r = _plant(keyless_server, headers)
    assert r.status_code == 200, r.text
    [doc] = r.json()["documents"]
    kept = str(keyless_server.upload_dir.resolve() / doc["source"])
    assert kept in _documents(keyless_server)
    gone = httpx.delete(
        f"{keyless_server.url}/v1/documents/planted.txt", headers=headers, timeout=300.0
    )
    assert gone.status_code == 200, gone.text
    assert kept not in _documents(keyless_server)


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[str]:
    """A page served from another loopback port: the origin of a site the user happens to visit."""
    (tmp_path / "index.html").write_text("<!doctype html><title>elsewhere</title>", "utf-8")
    handler = type(
        "Quiet",
        (http.server.SimpleHTTPRequestHandler,),
        {"log_message": lambda *a: None},
    )
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()),
        lambda *a: handler(*a, directory=str(tmp_path)),  # type: ignore[misc]
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()


@pytest.mark.browser
def test_a_page_of_another_port_cannot_upload_in_a_real_browser(
    keyless_server: Server, other_site: str
) -> None:
    from playwright.sync_api import sync_playwright

    from tests.serve.test_page import WAIT_MS, _chromium

    before = _documents(keyless_server)
    script = """async ([target, text]) => {
        const results = [];
        const form = new FormData();
        form.append("files", new Blob([text], {type: "text/plain"}), "planted.txt");
        // A simple request: the browser sends it without asking the server first.
        try {
            await fetch(target + "/v1/documents", {method: "POST", body: form, mode: "no-cors"});
            results.push("sent");
        } catch (e) { results.push("network error: " + e); }
        // With the header a keyless server asks for, the browser must ask first, and is refused.
        try {
            const r = await fetch(target + "/v1/documents", {
                method: "POST", body: form, headers: {"X-Requested-With": "x"}});
            results.push("cors status " + r.status);
        } catch (e) { results.push("blocked"); }
        return results;
    }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(other_site)
            results = page.evaluate(script, [keyless_server.url, PLANTED])
        finally:
            browser.close()
    assert results == ["sent", "blocked"], results
    assert _documents(keyless_server) == before
    assert not (keyless_server.upload_dir / "planted.txt").exists()


def test_a_connection_that_never_finishes_its_headers_is_closed(keyless_server: Server) -> None:
    """Slowloris: half-sent headers must not hold a connection for as long as the client likes."""
    import socket

    with socket.create_connection(("127.0.0.1", keyless_server.port), timeout=300.0) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: unfinished
        received = b""
        while chunk := conn.recv(4096):  # returns b"" when the server closes the connection
            received += chunk
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received[:200]
