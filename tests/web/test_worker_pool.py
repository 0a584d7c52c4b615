"""The HTTP server's worker threads: connections are served by long-lived threads, a burst
is answered in full, the extra threads of a burst end once idle, and ``server_close`` leaves
none behind.

Real sockets and HTTP against an in-process ``make_http_server``. Worker threads are told
apart from the rest of the process by name (``jkbms-http-N``) and by not existing before
the server was made.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator, List, Set, Tuple

import pytest

from jkbms_exporter.web.server import ThreadingServer, make_http_server
from test_http_hardening import get

BODY = b"jkbms_up 1\n"


class ThreadRecordingApp:
    """Answers every request; records the thread that ran it. ``gate``, when set, holds
    each answer until it is opened."""

    def __init__(self) -> None:
        self.threads: List[threading.Thread] = []
        self.gate: "threading.Event | None" = None
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response) -> List[bytes]:
        with self.lock:
            self.threads.append(threading.current_thread())
        if self.gate is not None:
            self.gate.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(BODY)))])
        return [BODY]


def worker_threads(before: Set[threading.Thread]) -> List[threading.Thread]:
    """This server's workers alive now: HTTP worker threads that did not exist before."""
    return [thread for thread in threading.enumerate()
            if thread not in before and thread.name.startswith("jkbms-http-")]


@contextmanager
def serving(**options) -> Iterator[Tuple[int, ThreadRecordingApp, ThreadingServer, Set]]:
    before = set(threading.enumerate())
    app = ThreadRecordingApp()
    server = make_http_server(app, "127.0.0.1:0", **options)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], app, server, before
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def burst(port: int, clients: int, app: ThreadRecordingApp) -> List[Tuple[int, bytes]]:
    """``clients`` requests at once, all held in the application until every one has
    reached it (so each has its own worker), then answered."""
    app.gate = threading.Event()
    answers: List[Tuple[int, bytes]] = []
    lock = threading.Lock()

    def client() -> None:
        answer = get(port, timeout=10.0)
        with lock:
            answers.append(answer)

    arrived = len(app.threads) + clients
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    all_arrived = wait_for(lambda: len(app.threads) >= arrived)
    app.gate.set()
    for thread in threads:
        thread.join(15)
    app.gate = None
    assert all_arrived, "%d of %d requests reached the application at once" \
        % (clients - arrived + len(app.threads), clients)
    return answers


def test_a_burst_of_clients_is_answered_in_full() -> None:
    with serving() as (port, app, _, before):
        answers = burst(port, 40, app)
        assert answers == [(200, BODY)] * 40
        assert len(set(app.threads)) == 40  # held at once: each on its own worker
        assert len(worker_threads(before)) <= 40
        # and once more, on the same workers
        answers = burst(port, 40, app)
        assert answers == [(200, BODY)] * 40
        assert set(app.threads[40:]) == set(app.threads[:40])


def test_sequential_requests_reuse_the_same_few_threads() -> None:
    with serving() as (port, app, _, before):
        for _ in range(200):
            assert get(port, timeout=10.0) == (200, BODY)
        used = set(app.threads)
        alive = worker_threads(before)
    assert len(app.threads) == 200
    # a thread per connection would be 200 threads; a worker may be between two
    # connections when the next arrives, so a second (rarely a third) one is started
    assert len(used) <= 3, sorted(thread.name for thread in used)
    assert all(thread.name.startswith("jkbms-http-") for thread in used)
    assert 1 <= len(alive) <= 3


def test_idle_workers_beyond_the_kept_ones_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ThreadingServer, "workers_kept", 2)
    monkeypatch.setattr(ThreadingServer, "worker_idle_timeout", 0.3)
    with serving() as (port, app, _, before):
        assert burst(port, 12, app) == [(200, BODY)] * 12
        assert len(set(app.threads)) == 12
        assert wait_for(lambda: len(worker_threads(before)) <= 2), \
            [thread.name for thread in worker_threads(before)]
        time.sleep(1.0)  # the kept ones stay, however long they wait
        kept = worker_threads(before)
        assert len(kept) == 2
        assert get(port, timeout=10.0) == (200, BODY)
        assert app.threads[-1] in kept
        # a second burst finds two workers waiting and starts the other ten
        assert burst(port, 12, app) == [(200, BODY)] * 12
        assert len(set(app.threads[-12:])) == 12


def test_server_close_ends_every_waiting_worker() -> None:
    app = ThreadRecordingApp()
    before = set(threading.enumerate())
    server = make_http_server(app, "127.0.0.1:0")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        assert burst(server.server_address[1], 10, app) == [(200, BODY)] * 10
        assert wait_for(lambda: len(worker_threads(before)) == 10)  # waiting for more
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert worker_threads(before) == []  # at once: server_close waited for them
