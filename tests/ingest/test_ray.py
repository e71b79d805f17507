"""``rag ingest --ray`` on a real Ray cluster on this machine.

Each Ray run happens inside a network namespace of its own where only the loopback interface
exists (``unshare --net``, as root): Ray talks to the machine's own non-loopback address even when
told to use 127.0.0.1, and test traffic must stay on loopback. There Ray falls back to 127.0.0.1.
One run joins a cluster started with ``ray start --head`` (the ``--ray ADDRESS`` path); the other
lets the ingest start a local cluster (``--ray`` alone). In each, one Ray worker process is killed
with SIGKILL in the middle of the run, at a point where it holds work (a parse task's file, an
embedding actor's batch; see ``rag.index.crashpoints.CLUSTER_POINTS``): Ray runs the task again and
the ingest must end with the same index as a local ingest of the same files.

Where Ray or network namespaces are missing these tests skip; ``RAG_REQUIRE_RAY=1`` (set by
``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ingest import ingest
from ingest.ray_source import INSTALL_HINT, check_reachable, import_ray
from rag.config import Settings
from rag.errors import ConfigError
from rag.index.crashpoints import PAUSE_AT, PAUSE_FILE
from rag.index.reader import Store
from rag.index.verify import verify
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import DOCUMENTS

BIN = Path(sys.executable).parent
# Generous: a run on a busy 2-core machine, Ray's start included, takes about a minute.
RUN_LIMIT = 900


def _missing() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return f"Ray is not installed ({INSTALL_HINT})"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip (util-linux, iproute2) are needed for a loopback-only namespace"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "cannot create a network namespace here (unshare --net needs root)"
    return None


@pytest.fixture(scope="module")
def ray_ready() -> None:
    missing = _missing()
    if missing is not None:
        if os.environ.get("RAG_REQUIRE_RAY") == "1":
            pytest.fail(f"RAG_REQUIRE_RAY=1 but {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def local_index(
    tmp_path_factory: pytest.TempPathFactory,
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> Path:
    index = tmp_path_factory.mktemp("local") / "idx"
    ingest([DOCUMENTS], index, settings, embedder=embedder, tokenizer=tokenizer, workers=2)
    return index


def _contents(index: Path) -> dict[str, tuple[list[tuple[object, ...]], np.ndarray]]:
    """Per source: its chunks (text, page, label, section, span, tokens) in order, and vectors."""
    out: dict[str, tuple[list[tuple[object, ...]], np.ndarray]] = {}
    with Store.open(index) as store:
        for seg in store.segments:
            sql = (
                "SELECT d.source, c.id, c.text, c.page, c.page_label, c.section, c.start, c.end,"
                " c.tokens FROM chunks c JOIN documents d ON d.id = c.doc_id"
                " WHERE d.id NOT IN (SELECT value FROM json_each(?)) ORDER BY d.source, c.seq"
            )
            rows = seg.db.execute(sql, (json.dumps(sorted(seg.deleted)),)).fetchall()
            by_source: dict[str, list[tuple[object, ...]]] = {}
            for r in rows:
                by_source.setdefault(r[0], []).append(r[1:])
            for source, chunks in by_source.items():
                vectors = store.vectors([int(c[0]) for c in chunks])
                out[source] = ([c[1:] for c in chunks], vectors)
    return out


def _assert_same_index(ray_index: Path, local_index: Path) -> None:
    ours, theirs = _contents(ray_index), _contents(local_index)
    assert sorted(ours) == sorted(theirs)
    for source, (chunks, vectors) in theirs.items():
        assert ours[source][0] == chunks, source
        np.testing.assert_allclose(ours[source][1], vectors, atol=1e-5, err_msg=source)
    assert verify(ray_index) == []


def _in_namespace(script: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["unshare", "--net", "bash", "-c", f"set -e; ip link set lo up; {script}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _env(tmp_path: Path, point: str | None) -> dict[str, str]:
    # Defaults only, as in the session fixtures: no other RAG_* variable reaches the run. The pause
    # variables reach every Ray worker, which inherit the environment of the cluster's processes;
    # so does RAY_TMPDIR, by which the clean-up finds this cluster's processes and no other.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "RAY_"))}
    env |= {"PATH": f"{BIN}:{env.get('PATH', '')}", "RAY_TMPDIR": str(tmp_path / "ray")}
    # A token of the test's own: the cluster and its driver leave ~/.ray alone.
    env |= {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": uuid.uuid5(uuid.NAMESPACE_URL, str(tmp_path)).hex,
    }
    if point is not None:
        env |= {PAUSE_AT: point, PAUSE_FILE: str(tmp_path / "paused")}
    return env


def _stop_cluster(tmp_path: Path) -> None:
    """SIGKILL every process of the clusters these tests started (``ray stop`` would stop every
    Ray cluster on the machine)."""
    tag = f"RAY_TMPDIR={tmp_path / 'ray'}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if tag in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _run_and_kill(process: subprocess.Popen[str], marker: Path) -> tuple[str, str]:
    """Wait until a Ray worker pauses at its point, SIGKILL it, and wait for the run to end."""
    deadline = time.monotonic() + RUN_LIMIT
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            out, err = process.communicate()
            pytest.fail(f"no Ray worker reached the pause point (rc {process.returncode}):\n{err}")
        time.sleep(0.2)
    pid = int(marker.read_text(encoding="utf-8").split()[1])
    assert pid != process.pid
    os.kill(pid, signal.SIGKILL)
    try:
        out, err = process.communicate(timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the ingest did not finish after its worker was killed:\n{err[-4000:]}")
    assert process.returncode == 0, err[-4000:]
    return out, err


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    # Ray's socket paths must stay short (107 bytes): not under pytest's deep tmp_path.
    with tempfile.TemporaryDirectory(prefix="rag-ray-", dir="/tmp") as d:
        try:
            yield Path(d)
        finally:
            _stop_cluster(Path(d))


@pytest.mark.slow
def test_ingest_on_a_ray_head_survives_a_killed_parse_worker(
    ray_ready: None, ray_tmp: Path, local_index: Path
) -> None:
    index = ray_tmp / "idx"
    script = (
        "ray start --head --port=6379 --num-cpus=2 --include-dashboard=false "
        "--disable-usage-stats >/dev/null; "
        f"rag ingest {DOCUMENTS} --index {index} --ray 127.0.0.1:6379 --json"
    )
    env = _env(ray_tmp, "ray-file-parsed#2")
    out, _ = _run_and_kill(_in_namespace(script, env), ray_tmp / "paused")
    report = json.loads(out[out.index("{") :])
    assert report["files_ingested"] == 11
    assert [s["path"] for s in report["files_skipped"]] == [
        str(DOCUMENTS / "pdf" / "hybrid_search_article_print_no_text_layer.pdf")
    ]
    _assert_same_index(index, local_index)


@pytest.mark.slow
def test_ingest_on_a_local_ray_cluster_survives_a_killed_embedding_actor(
    ray_ready: None, ray_tmp: Path, local_index: Path
) -> None:
    index = ray_tmp / "idx"
    env = _env(ray_tmp, "ray-batch-embedded")
    script = f"rag ingest {DOCUMENTS} --index {index} --ray --workers 2 --json"
    out, _ = _run_and_kill(_in_namespace(script, env), ray_tmp / "paused")
    assert json.loads(out[out.index("{") :])["chunks_total"] > 0
    _assert_same_index(index, local_index)
    # A second run on the cluster finds every file unchanged, in the Ray tasks, and changes nothing.
    again = subprocess.run(
        ["unshare", "--net", "bash", "-c", f"ip link set lo up; {script}"],
        env=_env(ray_tmp, None),
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    second = json.loads(again.stdout[again.stdout.index("{") :])
    assert (second["unchanged"], second["files_ingested"], second["chunks_added"]) == (11, 0, 0)


def test_without_ray_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'rag-toolkit\[ray\]'"):
        import_ray()


def test_an_address_where_no_cluster_answers_fails_at_once() -> None:
    with socket.socket() as s:  # a loopback port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match="ray start --head"):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        check_reachable("head-node")
