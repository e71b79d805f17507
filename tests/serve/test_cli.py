"""``rag serve`` on the command line: refusals that come before anything loads, the install hint
without the extra, and ``import rag`` staying free of the web framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ingest import IngestReport
from rag.cli import main
from rag.errors import ConfigError
from rag.serve.config import ServeConfig, is_loopback
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_exposed_address_needs_a_key(
    built_index: tuple[Path, IngestReport],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("RAG_API_KEY", raising=False)
    index = str(built_index[0])
    assert main(["serve", "--index", index, "--host", "0.0.0.0"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "RAG_API_KEY" in err and "--host 127.0.0.1" in err
    monkeypatch.setenv("RAG_API_KEY", "short")
    assert main(["serve", "--index", index, "--host", "0.0.0.0"]) == ConfigError.exit_code
    assert "16 characters" in capsys.readouterr().err


def test_a_key_of_sixteen_characters_opens_any_address(tmp_path: Path) -> None:
    from rag.config import Settings

    config = ServeConfig(tmp_path, Settings.model_validate({}), host="0.0.0.0", api_key="k" * 16)
    config.check()


def test_without_the_extra_rag_serve_names_the_install(
    built_index: tuple[Path, IngestReport],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` fail
    assert main(["serve", "--index", str(built_index[0])]) != 0
    assert "pip install 'rag-toolkit[serve]'" in capsys.readouterr().err


def test_import_rag_and_the_cli_parser_load_no_web_framework() -> None:
    probe = (
        "import rag, rag.cli\nfrom rag.cli.app import _parser\n_parser()\n"
        "import json, sys\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not loaded & {"fastapi", "starlette", "uvicorn", "python_multipart"}


@pytest.mark.parametrize(
    ("host", "bound"), [("[::1]", "::1"), ("::1", "::1"), ("127.0.0.1", "127.0.0.1")]
)
def test_a_bracketed_ipv6_address_is_bound_without_its_brackets(
    tmp_path: Path, host: str, bound: str
) -> None:
    import socket

    from rag.config import Settings

    config = ServeConfig(tmp_path, Settings.model_validate({}), host=host)
    config.check()
    assert config.bind_host == bound
    family = socket.AF_INET6 if ":" in bound else socket.AF_INET
    with socket.create_server((config.bind_host, 0), family=family):
        pass  # what uvicorn does with it


def test_an_address_that_cannot_be_bound_is_refused_before_anything_loads(tmp_path: Path) -> None:
    from rag.config import Settings

    config = ServeConfig(
        tmp_path, Settings.model_validate({}), host="no such host!", api_key="k" * 16
    )
    with pytest.raises(ConfigError, match="--host no such host!"):
        config.check()
