"""Worker processes that parse and chunk files while the ingesting process embeds and writes.

:class:`ParsePool` runs a job per file in a pool of processes and hands the results back in the
order of the files, so that an ingest with N workers writes what an ingest with one writes. A job
that runs past its time limit is stopped by killing its process (pypdf can spend an hour on one
page in pure Python, where no check between pages helps); a replacement is started when a job
needs one. :class:`ThreadSource` is the same interface on a thread of this process, without
kills, for ``--workers 0``.

Workers are forked from multiprocessing's fork server, a clean process started once that has
imported the loaders, pypdf and tokenizers, so that a worker starts in milliseconds and never
inherits the threads or locks of torch or ONNX Runtime. A worker exits as soon as the ingesting
process is gone, also when that one was killed with SIGKILL. Token counters cross to the workers
as Rust ``tokenizers`` objects, not as transformers tokenizers: unpickling one takes about 0.1 s
where importing transformers takes more than 1 s in each worker.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.worker_process import Worker, without_main

log = logging.getLogger(__name__)

# What a worker process imports before it is forked: everything a job needs.
_PRELOAD = ["ingest.workers", "ingest.parsing", "ingest.token_counters", "pypdf", "tokenizers"]
_context_lock = threading.Lock()


@dataclass(frozen=True)
class Job:
    """What triage hands to a worker: ``task`` goes to the worker's handler."""

    task: Any


@dataclass(frozen=True)
class Lost:
    """A job whose worker was killed at its time limit (``timed_out``) or died on its own."""

    task: Any
    timed_out: bool
    exitcode: int | None


# Triage runs in this process, in the order of the items: it returns a result at once (a file
# that needs no parsing) or a Job for a worker.
Triage = Callable[[Any], Any]
# Run once in each worker: it returns the function that turns a task into a result.
Setup = Callable[[], Callable[[Any], Any]]


def context() -> Any:
    """The fork-server context, preloaded with the parsing modules; spawn where there is none."""
    with _context_lock:
        if "forkserver" not in multiprocessing.get_all_start_methods():
            return multiprocessing.get_context("spawn")
        ctx = multiprocessing.get_context("forkserver")
        # Only takes effect before the fork server starts; later calls change nothing.
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx


def warm_up() -> None:
    """Start the fork server now (it imports the parsing modules in the background), so that the
    first worker of an ingest starts while this process still loads its models."""
    ctx = context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with without_main():
            forkserver.ensure_running()


class ParsePool:
    """Runs ``triage`` on each item here and the resulting jobs in up to ``processes`` worker
    processes; iterating gives one result per item, in the order of ``items``.

    At most ``window`` items are triaged beyond the one the consumer waits for, which bounds the
    results held here. Workers start when jobs need them, so a run whose files need no parsing
    starts none. A job not done ``timeout`` seconds after it reached its worker gives a
    :class:`Lost` result (its worker killed and, if needed, replaced); so does a job whose worker
    died. An exception of triage or of a job's handler is raised by the iteration at its item.
    """

    def __init__(
        self,
        items: Sequence[Any],
        triage: Triage,
        setup: Setup,
        *,
        processes: int,
        timeout: float,
        window: int,
    ) -> None:
        if processes < 1:
            raise ValueError("a pool needs at least one process")
        self._items = items
        self._triage = triage
        self._setup = pickle.dumps(setup)  # once, not per worker
        self._processes = processes
        self._timeout = timeout
        self._window = max(window, processes)
        self._ctx = context()
        self._cond = threading.Condition()
        self._results: dict[int, tuple[bool, Any]] = {}  # index -> (failed, result or exception)
        self._emitted = 0  # items handed to the consumer
        self._triaged = 0
        self._stalled = False  # triage waits for the consumer (the window is full)
        self._fatal: BaseException | None = None
        self._closing = False
        self._queue: list[tuple[int, Any]] = []  # jobs triaged, not yet sent to a worker
        self._workers: list[Worker] = []
        self.started = 0  # worker processes started, replacements included
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    # -- the consumer's side --
    def __iter__(self) -> Iterator[Any]:
        for index in range(len(self._items)):
            with self._cond:
                while index not in self._results and self._fatal is None:
                    self._cond.wait()
                if self._fatal is not None:
                    raise self._fatal
                failed, result = self._results.pop(index)
                self._emitted = index + 1
                stalled = self._stalled
            if stalled:
                self._wake()
            if failed:
                raise result
            yield result

    def ready(self) -> bool:
        """Whether the next result is already here (iterating would not wait)."""
        with self._cond:
            return self._emitted in self._results or self._emitted >= len(self._items)

    def close(self) -> None:
        """Stop triage, kill the workers and wait for the pool's thread. Idempotent."""
        with self._cond:
            self._closing = True
        self._wake()
        self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            os.write(self._wake_w, b"x")

    # -- the pool's thread --
    def _produce(self) -> None:
        try:
            while not self._closing and not self._finished():
                self._triage_more()
                self._dispatch()
                self._start_workers()
                self._handle_events()
        except BaseException as exc:  # hand it to the consumer instead of dying silently
            with self._cond:
                self._fatal = exc
                self._cond.notify_all()
        finally:
            for w in self._workers:
                w.stop()
            self._workers.clear()

    def _finished(self) -> bool:
        return self._triaged == len(self._items) and not self._queue and not self._busy()

    def _busy(self) -> list[Worker]:
        return [w for w in self._workers if w.index is not None]

    def _put(self, index: int, failed: bool, result: Any) -> None:
        with self._cond:
            self._results[index] = (failed, result)
            self._cond.notify_all()

    def _triage_more(self) -> None:
        # Jobs wait here for a worker, at most one per worker; results wait for the consumer, at
        # most `window` of them.
        while self._triaged < len(self._items) and len(self._queue) < self._processes:
            with self._cond:
                self._stalled = self._triaged >= self._emitted + self._window
                if self._stalled or self._closing:
                    return
            index = self._triaged
            self._triaged += 1
            try:
                outcome = self._triage(self._items[index])
            except Exception as exc:
                self._put(index, True, exc)
                continue
            if isinstance(outcome, Job):
                self._queue.append((index, outcome.task))
            else:
                self._put(index, False, outcome)

    def _dispatch(self) -> None:
        for w in self._workers:
            if not self._queue:
                return
            if w.ready and w.index is None and not w.closed:
                index, task = self._queue.pop(0)
                if not w.send(index, task, time.monotonic() + self._timeout):
                    self._queue.insert(0, (index, task))  # it died idle; another one takes it

    def _start_workers(self) -> None:
        idle = sum(1 for w in self._workers if w.index is None)
        while len(self._queue) > idle and len(self._workers) < self._processes:
            self._workers.append(Worker(self._ctx, self._setup))
            self.started += 1
            idle += 1

    def _handle_events(self) -> None:
        deadlines = [w.deadline for w in self._busy()]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        waits: list[Any] = [self._wake_r]
        for w in self._workers:
            waits += [w.conn, w.process.sentinel]
        ready = multiprocessing.connection.wait(waits, timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        for w in list(self._workers):
            gone = w.process.sentinel in ready
            if gone:
                while self._receive(w):  # a worker that exited may have sent its result first
                    pass
            elif w.conn in ready:
                self._receive(w)
            if gone or w.closed:
                self._lose(w, timed_out=False)
        now = time.monotonic()
        for w in self._busy():
            if w.deadline <= now and not w.conn.poll():
                self._lose(w, timed_out=True)

    def _receive(self, w: Worker) -> bool:
        """Handle one message of ``w``; False when its pipe has none left."""
        try:
            if not w.conn.poll():
                return False
            message = w.conn.recv()
        except (EOFError, OSError):
            w.closed = True  # it died; its sentinel says so too
            return False
        kind = message[0]
        if kind == "ready":
            w.ready = True
        elif kind == "failed":  # its setup raised: every worker would fail the same way
            raise message[1]
        else:
            _, index, result = message
            w.index = w.task = None
            self._put(index, kind == "error", result)
        return True

    def _lose(self, w: Worker, *, timed_out: bool) -> None:
        index, task = w.index, w.task
        exitcode = w.stop()
        self._workers.remove(w)
        if index is not None:
            self._put(index, False, Lost(task, timed_out, exitcode))
        elif not w.ready:
            raise RuntimeError(
                f"an ingest worker process exited while starting (exit code {exitcode})"
            )


class ThreadSource:
    """:class:`ParsePool`'s interface on one thread of this process (``--workers 0``): triage and
    jobs run in turn, and a job past its time limit is not stopped."""

    def __init__(self, items: Sequence[Any], triage: Triage, setup: Setup, *, window: int) -> None:
        self._items = items
        self._triage = triage
        self._handler = setup()
        self._out: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=window)
        self._stop = threading.Event()
        self.started = 0
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        for item in self._items:
            if self._stop.is_set():
                return
            try:
                outcome = self._triage(item)
                if isinstance(outcome, Job):
                    outcome = self._handler(outcome.task)
                self._out.put((False, outcome))
            except BaseException as exc:
                self._out.put((True, exc))
                return

    def __iter__(self) -> Iterator[Any]:
        for _ in range(len(self._items)):
            failed, result = self._out.get()
            if failed:
                raise result
            yield result

    def ready(self) -> bool:
        return not self._out.empty()

    def close(self) -> None:
        # Release the thread: it may be blocked on the full queue.
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._out.get(timeout=0.05)
        self._thread.join()

    def __enter__(self) -> ThreadSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
