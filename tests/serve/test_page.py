"""The page at ``/`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright
through its executable path; Playwright's own browser download is not used).

Skipped when no Chromium or Playwright is found, unless RAG_REQUIRE_BROWSER=1 (as in CI), which
makes it fail instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.conftest import API_KEY, Server

pytestmark = pytest.mark.browser

REQUIRE_BROWSER = os.environ.get("RAG_REQUIRE_BROWSER") == "1"
QUESTION = "What does the Transformer use instead of recurrence?"
WAIT_MS = 120_000  # a busy 2-core machine; each wait ends as soon as its condition holds


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        found, reason = None, f"Playwright is not installed ({exc}): pip install -e '.[browser]'"
    else:
        reason = "no chromium on PATH: apt-get install chromium"
    if found is None:
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason} (RAG_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def page(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],  # as root, in a container
        )
        try:
            pg = browser.new_page()
            pg.set_default_timeout(WAIT_MS)
            yield pg
        finally:
            browser.close()


def test_the_page_asks_for_the_key_then_streams_a_cited_answer(page: Any, server: Server) -> None:
    page.goto(server.url + "/")
    # The server has a key: the page's first API call gets a 401 and asks for it.
    page.wait_for_selector("#key-box:not([hidden])")
    page.fill("#api-key", API_KEY)
    page.click("#save-key")
    page.wait_for_selector("#key-box[hidden]", state="attached")
    assert "documents" in page.inner_text("#status")

    page.fill("#question", QUESTION)
    page.click("#ask")
    turn = page.wait_for_selector(".turn.done")
    assert turn is not None and "failed" not in (turn.get_attribute("class") or "")
    answer = page.inner_text(".turn .answer")
    assert answer.strip() and "[" in answer
    links = page.query_selector_all(".turn .answer a")
    assert links, answer
    where = page.inner_text(".turn .citations li .cite-where")
    assert "attention_is_all_you_need_neurips2017.pdf, page " in where
    assert page.inner_text(".turn .citations li .cite-text").strip()
    # Each [n] in the answer links to its citation.
    target = links[0].get_attribute("href") or ""
    assert page.query_selector(target) is not None


def test_files_added_on_the_page_are_found_by_the_next_question(
    page: Any, server: Server, tmp_path: Path
) -> None:
    note = tmp_path / "okapi-notes.md"
    note.write_text(
        "# Okapi field notes\n\nThe okapi sanctuary feeds its animals eleven crates of "
        "willow leaves every morning.\n",
        encoding="utf-8",
    )
    page.goto(server.url + "/")
    page.wait_for_selector("#key-box[hidden]", state="attached")  # the key is kept for the tab
    page.set_input_files("#file-input", str(note))
    page.wait_for_function(
        "document.getElementById('upload-status').textContent.startsWith('Added')"
    )
    assert "okapi-notes.md" in page.inner_text("#upload-status")
    try:
        page.fill("#question", "How many crates of willow leaves does the okapi sanctuary use?")
        page.click("#ask")
        page.wait_for_selector(".turn.done")
        assert "okapi-notes.md" in page.inner_text(".turn .citations")
    finally:
        httpx.delete(
            f"{server.url}/v1/documents/okapi-notes.md", headers=server.headers, timeout=120.0
        )


def test_a_long_unbroken_question_wraps_and_the_key_box_takes_enter(
    page: Any, server: Server
) -> None:
    context = page.context.browser.new_context()  # a new tab's storage: no key kept
    try:
        pg = context.new_page()
        pg.set_default_timeout(WAIT_MS)
        pg.goto(server.url + "/")
        pg.wait_for_selector("#key-box:not([hidden])")
        assert "key box" in pg.inner_text("#status")
        pg.fill("#api-key", API_KEY)
        pg.press("#api-key", "Enter")
        pg.wait_for_selector("#key-box[hidden]", state="attached")
        width = pg.evaluate("window.innerWidth")
        pg.fill("#question", "x" * 3000)
        pg.click("#ask")
        pg.wait_for_selector(".turn.done")
        assert pg.evaluate("document.documentElement.scrollWidth") <= width
        icon = pg.evaluate(
            "fetch('/favicon.ico').then(r => [r.status, r.headers.get('content-type')])"
        )
        assert icon == [200, "image/svg+xml"]
    finally:
        context.close()
