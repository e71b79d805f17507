"""Schemathesis against the real service's own /openapi.json, with and without the key: every
check (``--checks all``: no server error, statuses and bodies as documented, schema-valid
requests accepted, invalid ones refused, Allow on 405, the key required where the schema says).

Each run has its own server over its own copy of the index, since Schemathesis uploads and
deletes documents. The statuses a schema-valid request may still get for the server's own
reasons (a limit of its flags, a conflict, a busy writer; an upload whose bytes are no
supported document) are listed in schemathesis.toml beside this file. A fixed seed makes a run
repeatable; ``RAG_SCHEMATHESIS_SEED=random`` explores new cases.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import IngestReport
from tests.serve.conftest import API_KEY, Server, copy_index

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = os.environ.get("RAG_SCHEMATHESIS_SEED", "20261208")


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        message = "schemathesis is not installed: pip install -e '.[dev]'"
        if os.environ.get("RAG_REQUIRE_SERVE") == "1":
            pytest.fail(f"{message} (RAG_REQUIRE_SERVE=1)", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture(params=["keyless", "key"])
def fuzzed(
    request: pytest.FixtureRequest,
    serve_extra: None,
    built_index: tuple[Path, IngestReport],
    tmp_path: Path,
) -> Iterator[Server]:
    key = API_KEY if request.param == "key" else None
    srv = Server(copy_index(built_index[0], tmp_path / "index"), tmp_path, api_key=key)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
def test_schemathesis_finds_nothing(fuzzed: Server) -> None:
    headers = [f"{k}: {v}" for k, v in fuzzed.headers.items()]
    command = [
        _schemathesis(), "--config-file", str(CONFIG), "run", f"{fuzzed.url}/openapi.json",
        "--checks", "all", "--max-examples", "30", "--workers", "1",
        *(["--seed", SEED] if SEED != "random" else []),
        *[arg for h in headers for arg in ("--header", h)],
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=1800, cwd=fuzzed.index.parent
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:] + fuzzed.log()
    assert " passed" in done.stdout
