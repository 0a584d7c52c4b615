"""Long-lived threads that serve the HTTP server's connections.

Starting a thread per connection costs the accept loop a ``Thread.start`` (it waits until
the new thread runs) on every scrape. Here the accept loop hands a connection to a worker
that is waiting for one, through a :class:`queue.SimpleQueue`; only when none is waiting
does it start another. Workers beyond a few that have waited ``idle_timeout`` seconds for
a connection end, so a burst does not leave its threads behind.

The pool knows nothing of sockets or of the server's bound on connections: the server
decides whether a connection may be served at all before handing it over, so the number of
workers never exceeds that bound (a worker counts itself waiting before ``done`` frees the
connection's place).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from typing import Any, Callable, List, Optional, Set, Tuple

log = logging.getLogger(__name__)

Job = Tuple[Any, Any]  # (accepted socket, client address)


class WorkerPool:
    """Threads named ``<name>-1``, ``<name>-2``… each running ``serve(*job)`` then
    ``done(*job)`` for one job at a time."""

    def __init__(self, serve: Callable[[Any, Any], None], done: Callable[[Any, Any], None],
                 name: str, *, daemon: bool = True, keep_idle: int = 4,
                 idle_timeout: float = 60.0) -> None:
        self._serve = serve
        self._done = done
        self._name = name
        self._daemon = daemon
        self.keep_idle = keep_idle
        self.idle_timeout = idle_timeout
        self._jobs: "queue.SimpleQueue[Optional[Job]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Workers waiting for a job and not yet promised one: a job put on the queue
        # takes one of them (under the lock), so there is always a worker for each job.
        self._idle = 0
        self._workers: Set[threading.Thread] = set()
        self._ended = threading.Condition(self._lock)  # notified as each worker ends
        self._numbers = itertools.count(1)
        self._closed = False

    def submit(self, request: Any, client_address: Any) -> None:
        """Hand a job to a waiting worker, or start one for it. Raises ``RuntimeError``
        once the pool is closed (the caller still owns the job then)."""
        job = (request, client_address)
        with self._lock:
            if self._closed:
                raise RuntimeError("worker pool closed")
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
            worker = threading.Thread(target=self._work, args=(job,), daemon=self._daemon,
                                      name="%s-%d" % (self._name, next(self._numbers)))
            self._workers.add(worker)
        try:
            worker.start()
        except BaseException:
            with self._lock:
                self._workers.discard(worker)
            raise

    def threads(self) -> List[threading.Thread]:
        """The workers alive now, busy or waiting."""
        with self._lock:
            return list(self._workers)

    def close(self, wait_for_busy: bool = False) -> None:
        """End the waiting workers now, and wait until they have; busy ones (and any
        promised a job already) end after their job, waited for only with
        ``wait_for_busy``."""
        with self._lock:
            self._closed = True
            waking, self._idle = self._idle, 0
            remaining = 0 if wait_for_busy else len(self._workers) - waking
        for _ in range(waking):
            self._jobs.put(None)
        with self._ended:
            self._ended.wait_for(lambda: len(self._workers) <= remaining,
                                 None if wait_for_busy else 5.0)

    def _work(self, job: Optional[Job]) -> None:
        try:
            while job is not None:
                try:
                    self._serve(*job)
                except BaseException:
                    self._finish(job)
                    raise
                with self._lock:
                    open_ = not self._closed
                    if open_:  # waiting before the job's place is freed: see the docstring
                        self._idle += 1
                self._finish(job)
                job = self._next_job() if open_ else None
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())
                self._ended.notify_all()

    def _finish(self, job: Job) -> None:
        try:
            self._done(*job)
        except Exception:  # the worker has been promised its next job: it must live
            log.exception("error while closing a connection from %s", job[1])

    def _next_job(self) -> Optional[Job]:
        """Wait for a job; None when this worker should end (pool closed, or idle too
        long while enough others wait)."""
        while True:
            try:
                return self._jobs.get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._closed:
                        return None
                    if self._idle > self.keep_idle:
                        self._idle -= 1
                        return None
