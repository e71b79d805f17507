"""A burst of uploads does not starve questions: writes wait for the index on the event loop,
not in the worker threads that questions need (rag.serve.writes)."""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import httpx

from tests.serve.conftest import Server

BURST = 50  # more than the server's 40 worker threads


def test_questions_are_answered_during_a_burst_of_uploads(server: Server) -> None:
    done: list[int] = []
    lock = threading.Lock()

    def upload(i: int) -> httpx.Response:
        r = httpx.post(
            f"{server.url}/v1/documents",
            files=[
                ("files", (f"burst-{i}.txt", f"Burst note {i}: the heron counts {i}.".encode()))
            ],
            headers=server.headers,
            timeout=600.0,
        )
        with lock:
            done.append(r.status_code)
        return r

    with ThreadPoolExecutor(BURST) as pool:
        futures = [pool.submit(upload, i) for i in range(BURST)]
        # The first upload answered: the burst is under way, the others sent and waiting.
        wait(futures, timeout=600.0, return_when=FIRST_COMPLETED)
        with lock:
            before = sum(1 for s in done if s == 200)
        r = httpx.post(
            f"{server.url}/v1/retrieve",
            json={"question": "What does the Transformer use instead of recurrence?", "k": 3},
            headers=server.headers,
            timeout=600.0,
        )
        with lock:
            during = sum(1 for s in done if s == 200) - before
        print(f"uploads answered before the question: {before}, while it waited: {during}")
        responses = [f.result(timeout=600.0) for f in futures]
    assert r.status_code == 200, r.text
    # One upload is ingested at a time; a question waits for at most the one being written, not
    # for every upload queued before it (with writes holding worker threads: 10 or more).
    assert during <= 5, during
    statuses = {resp.status_code for resp in responses}
    assert statuses <= {200, 429}, statuses
    refused = [resp for resp in responses if resp.status_code == 429]
    assert all(resp.headers.get("retry-after") for resp in refused)
    for resp in responses:
        if resp.status_code == 200:
            name = resp.json()["documents"][0]["name"]
            gone = httpx.delete(
                f"{server.url}/v1/documents/{name}", headers=server.headers, timeout=600.0
            )
            assert gone.status_code == 200, gone.text


def test_writes_beyond_the_queue_are_refused_with_retry_after() -> None:
    import asyncio

    from rag.serve.errors import ApiError
    from rag.serve.writes import WriteQueue

    async def scenario() -> tuple[list[str], ApiError]:
        queue = WriteQueue(max_waiting=2)
        order: list[str] = []
        release = asyncio.Event()

        async def write(name: str) -> None:
            async with queue.turn():
                order.append(name)
                await release.wait()

        first = asyncio.create_task(write("first"))
        await asyncio.sleep(0)  # first holds the turn
        waiting = [asyncio.create_task(write(n)) for n in ("second", "third")]
        await asyncio.sleep(0)  # both wait
        try:
            async with queue.turn():
                raise AssertionError("a third waiter was queued")
        except ApiError as exc:
            refused = exc
        release.set()
        await asyncio.gather(first, *waiting)
        return order, refused

    order, refused = asyncio.run(scenario())
    assert order == ["first", "second", "third"]  # one at a time, in arrival order
    assert refused.status == 429 and refused.headers["Retry-After"]
    assert "--max-queued-writes" in refused.message
