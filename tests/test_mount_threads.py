"""The mount's one pool of worker threads (mount/threads.py), on its own: what
every blocking call of the daemon goes through."""
from __future__ import annotations

import threading
from contextvars import ContextVar

import pytest
import trio
import trio.testing

from artifactfs.mount.threads import Threads


def test_worker_threads_keep_the_callers_context_and_the_limit():
    """Threads.run: the caller's context variables (who made the request: the owner
    of a new draft entry) reach the worker, results and exceptions come back, and at
    most `size` calls run at once."""
    pool = Threads(2)
    who: ContextVar[str] = ContextVar("who")
    release = threading.Event()
    running: list[int] = []
    lock = threading.Lock()

    def job() -> int:
        with lock:
            running.append(len(running) + 1)
        release.wait(60)
        with lock:
            running.pop()
        return threading.get_ident()

    async def main() -> None:
        who.set("uid 1000")
        assert await pool.run(who.get) == "uid 1000"
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 // 0)
        idents: list[int] = []

        async def call() -> None:
            idents.append(await pool.run(job))
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            while len(running) < 2:  # (the two workers reach the job)
                await trio.sleep(0.01)
            assert len(running) == 2 and pool.stats()["threads_waiting"] == 3
            release.set()
        assert len(idents) == 5
    trio.run(main)
