"""The one pool of worker threads of a mount.

Every blocking call the daemon makes (store and cache reads, chunk fetches,
draft engine calls, disk and kernel calls that may wait) runs in a worker
thread through `Threads.run`, never on the trio loop, and every such thread is
counted by one CapacityLimiter sized by the mount option `--threads`
(MountOptions.threads).  The one exception is pagecache.PageFeeder's own
thread: its stores wait for the loop, so they must not hold a pool thread.

Outside the pool, the patched pyfuse3 (third_party/pyfuse3) reads /dev/fuse in
one native thread, which answers IOCTLs itself ("native_answers" in stats).

A call hands its job to an idle worker through a queue and sleeps until the
worker reschedules it (TrioToken.run_sync_soon), as trio.to_thread.run_sync
does, with less on the way: about half its CPU per call (~40 us instead of
~70-100 us on a 2-vCPU machine), which counts when every small file copied
into a draft takes two calls."""
from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import outcome
import pyfuse3
import trio

T = TypeVar("T")
IDLE_SECONDS = 10.0  # a worker without a job this long ends (a new one starts when needed)


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[object, ...]
    context: contextvars.Context  # the caller's (who the request is from: context.CALLER)
    task: trio.lowlevel.Task
    token: trio.lowlevel.TrioToken


class Threads:
    """Worker threads for blocking calls, at most `size` at a time."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a mount needs at least one worker thread, not {size}")
        self.limiter = trio.CapacityLimiter(size)
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()  # _workers, and a worker's decision to end
        self._workers = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in a worker thread (waiting for a free one); its result or
        exception.  Like trio.to_thread.run_sync, not cancellable once started."""
        try:
            self.limiter.acquire_nowait()
        except trio.WouldBlock:
            await self.limiter.acquire()
        try:
            job = _Job(fn, args, contextvars.copy_context(), trio.lowlevel.current_task(),
                       trio.lowlevel.current_trio_token())
            with self._lock:
                if self._workers < self.limiter.borrowed_tokens:  # every job holding a token has a thread
                    self._workers += 1
                    threading.Thread(target=self._work, name="artifactfs worker", daemon=True).start()
                self._jobs.put(job)
            del job
            return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        finally:
            self.limiter.release()

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:  # (a job put meanwhile keeps this worker)
                    if self._jobs.empty():
                        self._workers -= 1
                        return
                continue
            result = outcome.capture(job.context.run, job.fn, *job.args)
            try:
                job.token.run_sync_soon(trio.lowlevel.reschedule, job.task, result)
            except trio.RunFinishedError:
                pass  # (the trio run ended: nobody waits for this result)
            del job, result

    def stats(self) -> dict[str, int]:
        """Threads busy now, callers waiting for one, and the requests the native
        reader thread answered without Python (0 with a stock pyfuse3) (the stats xattr)."""
        answered = getattr(pyfuse3, "fastpath_answered", None)
        return {"threads": int(self.limiter.total_tokens), "threads_busy": self.limiter.borrowed_tokens,
                "threads_waiting": self.limiter.statistics().tasks_waiting,
                "native_answers": int(answered()) if answered is not None else 0}
