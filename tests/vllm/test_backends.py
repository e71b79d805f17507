"""The vLLM path's pieces that need no server: backend selection, the optional in-process vLLM
backend, server start-up helpers, errors for a server that is not there, and ask_many's
bookkeeping (on the embedded model)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from ingest import IngestReport
from rag import RAG, Answer
from rag.config import Settings
from rag.errors import ConfigError, LLMUnavailable, ModelUnavailable, PromptTooLong
from rag.llm.embedded import EmbeddedBackend
from rag.llm.factory import make_backend
from rag.llm.serve import VLLMServer, free_port, port_in_use, resolve_vllm_python
from rag.retrieval.embeddings import Embedder
from tests.conftest import REPO

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_selection_auto_server_embedded() -> None:
    from rag.llm.openai_server import OpenAIServerBackend

    assert isinstance(make_backend(Settings.model_validate({})), EmbeddedBackend)
    served = make_backend(Settings.model_validate({"llm_url": "http://127.0.0.1:1/v1"}))
    assert isinstance(served, OpenAIServerBackend)
    assert served.base_url == "http://127.0.0.1:1/v1"
    forced = Settings.model_validate({"llm_url": "http://h:1", "llm_backend": "embedded"})
    assert isinstance(make_backend(forced), EmbeddedBackend)
    with pytest.raises(ConfigError, match="llm_url"):
        make_backend(Settings.model_validate({"llm_backend": "server"}))


def test_in_process_vllm_is_imported_only_when_chosen() -> None:
    code = (
        "import sys\n"
        "from rag.config import Settings\n"
        "from rag.llm.factory import make_backend\n"
        "b = make_backend(Settings.model_validate({'llm_backend': 'vllm', 'llm_model': 'm'}))\n"
        "assert type(b).__name__ == 'VLLMBackend', b\n"
        "assert 'vllm' not in sys.modules, 'vllm imported before first use'\n"
        "import rag\n"
        "assert 'torch' not in sys.modules and 'langchain_openai' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_import_rag_stays_light() -> None:
    code = (
        "import sys, rag\n"
        "heavy = {'torch', 'langchain_core', 'langchain_openai', 'openai', 'vllm'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_in_process_vllm_without_vllm_says_how_to_get_it() -> None:
    from rag.llm.vllm_inprocess import VLLMBackend

    backend = VLLMBackend("some/model", "some/model")
    with pytest.raises(ModelUnavailable, match="pip install vllm"):
        _ = backend.context_window


def test_in_process_vllm_uses_llm_model_or_the_default(tmp_path: Path) -> None:
    from rag.llm.vllm_inprocess import VLLMBackend

    chosen = VLLMBackend.shared(
        Settings.model_validate(
            {"llm_backend": "vllm", "llm_model": "meta-llama/Llama-2-7b-chat-hf"}
        )
    )
    assert (chosen.model, chosen.model_name) == ("meta-llama/Llama-2-7b-chat-hf",) * 2
    default = VLLMBackend.shared(Settings.model_validate({"llm_backend": "vllm"}))
    assert default.model_name == "smollm2-135m-instruct"
    assert Path(default.model, "config.json").is_file()


def test_resolve_vllm_python(tmp_path: Path) -> None:
    fake = tmp_path / "py"
    fake.touch()
    assert resolve_vllm_python(Settings.model_validate({"vllm_python": fake})) == fake
    with pytest.raises(ConfigError, match="make vllm-env"):
        resolve_vllm_python(Settings.model_validate({"vllm_python": tmp_path / "missing"}))
    venv = tmp_path / ".venv-vllm" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").touch()
    if not HAS_VLLM:
        assert resolve_vllm_python(Settings.model_validate({}), cwd=tmp_path) == venv / "python"


def test_server_command_and_start_errors(tmp_path: Path) -> None:
    server = VLLMServer(
        Path("/x/python"),
        "/models/m",
        "m",
        port=1234,
        enforce_eager=True,
        kv_cache_bytes=1 << 30,
        extra_args=["--dtype", "float32"],
    )
    cmd = server.command()
    assert cmd[:3] == ["/x/python", "-m", "vllm.entrypoints.openai.api_server"]
    for flag, value in [("--model", "/models/m"), ("--served-model-name", "m"),
                        ("--port", "1234"), ("--max-model-len", "4096"),
                        ("--kv-cache-memory-bytes", str(1 << 30)), ("--dtype", "float32")]:  # fmt: skip
        assert cmd[cmd.index(flag) + 1] == value
    assert "--enforce-eager" in cmd
    assert server.base_url == "http://127.0.0.1:1234/v1"
    # A server that exits at once is reported with its log, and nothing is left running.
    crash = VLLMServer(
        Path(sys.executable), "m", "m", port=free_port(), log_path=tmp_path / "log.txt"
    )
    crash.extra_args = []
    crash.command = lambda: [sys.executable, "-c", "print('boom: no model'); raise SystemExit(3)"]  # type: ignore[method-assign]
    crash.start()
    with pytest.raises(LLMUnavailable, match="boom: no model"):
        crash.wait_ready(timeout=600)  # returns as soon as the process exits
    assert not crash.running()


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    """A server whose children ignore SIGINT is still gone after stop()."""
    from rag.llm.serve import group_alive

    server = VLLMServer(Path(sys.executable), "m", "m", port=free_port())
    child = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "time.sleep(600)\n"
    )
    server.command = lambda: [sys.executable, "-c", parent]  # type: ignore[method-assign]
    server.start()
    pgid = server.pid
    assert pgid is not None
    server.stop(grace=2)
    assert not group_alive(pgid)


def _record_group_signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every os.killpg that rag.llm.serve makes, recorded and then really sent."""
    import os

    import rag.llm.serve

    sent: list[tuple[int, int]] = []
    real = os.killpg

    def killpg(pgid: int, sig: int) -> None:
        sent.append((pgid, sig))
        real(pgid, sig)

    monkeypatch.setattr(rag.llm.serve.os, "killpg", killpg)
    return sent


def test_stopping_twice_signals_nothing_the_second_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() forgets the process it stopped: a second stop (the CLI's finally, an atexit hook)
    must not signal a process-group id that may by then belong to someone else."""
    from rag.llm.serve import group_alive

    sent = _record_group_signals(monkeypatch)
    server = VLLMServer(Path(sys.executable), "m", "m", port=free_port())
    server.command = lambda: [sys.executable, "-c", "import time; time.sleep(600)"]  # type: ignore[method-assign]
    server.start()
    pgid = server.pid
    assert pgid is not None and server.running()
    server.stop(grace=60)
    assert not group_alive(pgid)
    assert sent and {p for p, _ in sent} == {pgid}
    assert (server.process, server.pid, server.running()) == (None, None, False)
    sent.clear()
    server.stop()
    server.stop(grace=0)
    assert sent == []


def test_stop_after_the_server_was_reaped_signals_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that exited (and was reaped by wait()) with nothing left in its group: its id is
    no longer ours, so stop() sends no signal at all."""
    sent = _record_group_signals(monkeypatch)
    server = VLLMServer(Path(sys.executable), "m", "m", port=free_port())
    server.command = lambda: [sys.executable, "-c", "raise SystemExit(0)"]  # type: ignore[method-assign]
    server.start()
    assert server.wait() == 0
    server.stop()
    assert sent == []
    assert server.process is None


def test_port_in_use() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        server = VLLMServer(Path(sys.executable), "m", "m", port=port)
        with pytest.raises(LLMUnavailable, match="already in use"):
            server.start()


def test_no_server_is_a_clear_error_naming_the_url(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    down = settings.model_copy(update={"llm_url": url, "llm_max_retries": 0})
    with RAG.open(built_index[0], down, embedder=embedder) as rag:
        with pytest.raises(LLMUnavailable, match=url) as err:
            rag.ask("What is attention?")
        assert "rag llm serve" in str(err.value)
        with pytest.raises(LLMUnavailable, match=url):
            list(rag.stream("What is attention?"))


def test_cli_check_on_a_dead_server(capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli import main

    url = f"http://127.0.0.1:{free_port()}/v1"
    assert main(["llm", "check", "--llm-url", url]) == LLMUnavailable.exit_code
    assert url in capsys.readouterr().err


def test_cli_export_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli import main
    from rag.llm.default_model import default_model_dir

    target = tmp_path / "model"
    # Copy the already exported default instead of converting the GGUF again (20 s).
    import shutil

    shutil.copytree(default_model_dir(Settings.model_validate({}).cache_dir), target)
    assert main(["llm", "export-default", str(target)]) == 0
    out = capsys.readouterr().out
    assert "Already there" in out and "rag llm serve --model" in out
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()


def test_ask_many_keeps_order_and_isolates_failures(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    """On the embedded model (no server): the bookkeeping that ask_many adds to ask."""
    questions = [
        "What does the Transformer use instead of recurrence?",
        "Explain. " + "word " * 9000,  # longer than the embedded model's window
        "How do I run llama2.c?",
    ]
    with RAG.open(built_index[0], settings, embedder=embedder) as rag:
        results = rag.ask_many(questions, concurrency=2, max_tokens=4, top_k=1)
        assert isinstance(results[1], PromptTooLong)
        assert [r.question for r in results if isinstance(r, Answer)] == [
            questions[0],
            questions[2],
        ]
        assert rag.ask_many([]) == []
        with pytest.raises(ConfigError, match="concurrency"):
            rag.ask_many(questions, concurrency=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_VLLM, reason="needs vllm (pip install vllm) and a CUDA GPU")
def test_in_process_vllm_answers_on_a_gpu(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    gpu = settings.model_copy(update={"llm_backend": "vllm", "context_window": 4096})
    with RAG.open(built_index[0], gpu, embedder=embedder) as rag:
        answer = rag.ask("What does the Transformer use instead of recurrence?", max_tokens=32)
        assert answer.answer and answer.usage.completion_tokens > 0
        many = rag.ask_many(["What is attention?", "How do I run llama2.c?"], max_tokens=16)
        assert all(isinstance(a, Answer) for a in many)
