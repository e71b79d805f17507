"""The worker side of :class:`ingest.workers.ParsePool`: one worker process, the loop it serves,
and what keeps it from outliving the ingesting process or re-running the caller's script."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Iterator
from typing import Any

# Starting a process swaps a multiprocessing function for the time of the start (without_main).
_start_lock = threading.Lock()


@contextlib.contextmanager
def without_main() -> Iterator[None]:
    """Start processes that do not import this program's ``__main__`` module.

    multiprocessing re-imports the main module in each spawned or fork-server child, so that
    objects defined there can be unpickled. A worker needs none of them, and a script that calls
    ingest() without an ``if __name__ == "__main__":`` guard would run again in every worker.
    """
    from multiprocessing import spawn

    with _start_lock:
        original = spawn.get_preparation_data

        def without_main(name: str) -> dict[str, Any]:
            data: dict[str, Any] = original(name)
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
            return data

        spawn.get_preparation_data = without_main
        try:
            yield
        finally:
            spawn.get_preparation_data = original


class Worker:
    """One worker process and this process's end of its pipe."""

    def __init__(self, ctx: Any, setup: bytes) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, setup), name="rag-ingest-worker", daemon=True
        )
        with without_main():
            self.process.start()
        child.close()
        self.ready = False
        self.closed = False  # its pipe broke: the process is gone or going
        self.index: int | None = None
        self.task: Any = None
        self.deadline = 0.0

    def send(self, index: int, task: Any, deadline: float) -> bool:
        try:
            self.conn.send((index, task))
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True
            return False
        self.index, self.task, self.deadline = index, task, deadline
        return True

    def stop(self) -> int | None:
        """Kill the process if it still runs, reap it; its exit code."""
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join()
        exitcode = self.process.exitcode
        self.conn.close()
        self.process.close()
        return exitcode


def _serve(conn: Any, setup: bytes) -> None:
    """A worker process: run the setup, then one job per message until the pipe closes."""
    # Ctrl-C reaches the whole process group; the ingesting process handles it and kills us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One worker per core already; a tokenizer's own thread pool would only oversubscribe them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _exit_with_parent()
    try:
        handler = pickle.loads(setup)()
    except BaseException as exc:
        conn.send(("failed", _portable(exc)))
        return
    conn.send(("ready",))
    while True:
        try:
            index, task = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = handler(task)
            conn.send(("done", index, result))
        except BaseException as exc:
            conn.send(("error", index, _portable(exc)))


def _exit_with_parent() -> None:
    """Exit when the ingesting process is gone, also in the middle of a job: a watcher thread
    waits on the parent's sentinel (a pipe that the kernel closes when the parent dies)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError that carries its traceback."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        text = "".join(traceback.format_exception(exc))
        return RuntimeError(f"in an ingest worker: {text}")
