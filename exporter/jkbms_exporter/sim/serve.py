"""Serving a simulated board on a real link: :class:`PtySimulator` on a pseudo-terminal and
:class:`TcpSimulator` as a transparent TCP serial gateway, both with a BMS-like answer latency
(~90 ms), optional pacing at the baud rate, and the transmission faults of :data:`FAULTS`.
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import threading
import time
from typing import Callable, List, Optional, Tuple

from .bms import ReplayBms, SimulatedBms
from .faults import FAULTS, fault_help  # noqa: F401 (part of this module's interface)
from .pb_bus import PbBusBms


DEFAULT_LATENCY = 0.09


DEFAULT_BAUDRATE = 115200


#: Where every request frame a simulator receives is appended in hex (one per line), when
#: the environment names a file: the test suite checks that only read requests were sent.
REQUEST_LOG_ENV = "JKBMS_SIMULATOR_REQUEST_LOG"


def _log_request(frame: bytes) -> None:
    path = os.environ.get(REQUEST_LOG_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(frame.hex() + "\n")


def apply_fault(fault: str, reply: bytes, rng: random.Random) -> List[Tuple[bytes, float]]:
    """The reply as (bytes, pause after them) pieces with ``fault`` applied."""
    if fault not in FAULTS:
        raise ValueError("unknown fault %r (choose from %s)" % (fault, ", ".join(FAULTS)))
    if fault == "silent":
        return []
    if fault == "partial":
        return [(reply[: len(reply) // 2], 0.0)]
    if fault == "junk-before":
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(3, 40))).replace(b"N", b"n")
        return [(junk + reply, 0.0)]
    if fault == "bad-checksum":
        return [(reply[:-1] + bytes(((reply[-1] + 1) & 0xFF,)), 0.0)]
    if fault == "bad-length":
        size = int.from_bytes(reply[2:4], "big") + 7
        return [(reply[:2] + size.to_bytes(2, "big") + reply[4:], 0.0)]
    if fault == "chunked":
        pieces: List[Tuple[bytes, float]] = []
        position = 0
        while position < len(reply):
            step = rng.randint(1, 7)
            pieces.append((reply[position : position + step], rng.uniform(0.001, 0.02)))
            position += step
        return pieces
    if fault == "trailing-junk":
        return [(reply + bytes(rng.randrange(256) for _ in range(rng.randint(1, 30))), 0.0)]
    if fault == "trickle":
        return [(reply[i : i + 4], 0.05) for i in range(0, len(reply), 4)]
    return [(reply, 0.0)]


class _StreamServer:
    """Answers request frames found in a byte stream, like a BMS on a UART.

    :attr:`fault` may be changed at any time, from any thread.
    """

    def __init__(self, bms: "SimulatedBms | ReplayBms | PbBusBms", latency: float = DEFAULT_LATENCY,
                 baudrate: Optional[int] = DEFAULT_BAUDRATE, fault: str = "none",
                 seed: Optional[int] = None) -> None:
        self.bms = bms
        self.latency = latency
        #: ``None`` sends replies at once; a baud rate paces them like a real UART.
        self.baudrate = baudrate
        if fault not in FAULTS:
            raise ValueError("unknown fault %r (choose from %s)" % (fault, ", ".join(FAULTS)))
        self.fault = fault
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        #: Requests seen and replies sent, for tests and benchmarks.
        self.requests_received = 0
        self.replies_sent = 0

    def _answer(self, buffer: bytearray, write: Callable[[bytes], None]) -> None:
        while True:
            start, size = self.bms.locate(bytes(buffer))
            del buffer[:start]
            if size is None or len(buffer) < size:
                return
            frame = bytes(buffer[:size])
            del buffer[:size]
            self.requests_received += 1
            _log_request(frame)
            reply = self.bms.handle(frame)
            if reply is None:
                continue
            fault = self.fault
            if self.latency:
                time.sleep(self.latency)
            for piece, pause in apply_fault(fault, reply, self._random):
                self._send(piece, write)
                if pause:
                    time.sleep(pause)
            if fault != "silent":
                self.replies_sent += 1

    def _send(self, data: bytes, write: Callable[[bytes], None]) -> None:
        if not self.baudrate:
            write(data)
            return
        chunk = 32
        byte_time = 10.0 / self.baudrate  # 8N1: ten bit times per byte
        for i in range(0, len(data), chunk):
            piece = data[i : i + chunk]
            write(piece)
            time.sleep(len(piece) * byte_time)

    def _start_master(self) -> None:
        """A bus master in the simulated device puts its own traffic on the line (it may
        join or leave at run time through ``bms.master``)."""
        if hasattr(self.bms, "master_traffic"):
            self._spawn(self._run_master)

    def _run_master(self) -> None:
        while not self._stop.is_set():
            if not self.bms.master:  # type: ignore[union-attr]  # the master left the bus
                time.sleep(0.05)
                continue
            for data, pause in self.bms.master_traffic():  # type: ignore[union-attr]
                if self._stop.is_set():
                    return
                self._send(data, self._broadcast)
                time.sleep(pause)

    def _broadcast(self, data: bytes) -> None:
        raise NotImplementedError

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="jkbms-sim")
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)

    def __enter__(self) -> "_StreamServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LinkRefused(OSError):
    """``link`` names a path the simulator did not make: it is never replaced."""


def make_own_link(target: str, link: str) -> None:
    """Create the symlink ``link`` -> ``target``; never replace what is already there.

    ``os.symlink`` fails when anything (a file, a directory, a dangling or foreign link, a
    real adapter's ``/dev/serial/by-id`` entry) exists at ``link``; no temporary file is
    left anywhere. OSError (LinkRefused for an existing path) names what is wrong.
    """
    try:
        os.symlink(target, link)
    except FileExistsError:
        what = ("a symlink to %s" % os.readlink(link) if os.path.islink(link)
                else "a directory" if os.path.isdir(link) else "a file")
        raise LinkRefused("%s already exists (%s) and was not made by this simulator: "
                          "choose another path or remove it yourself" % (link, what)) from None
    except FileNotFoundError:
        directory = os.path.dirname(link) or "."
        if os.path.isdir(directory):
            raise
        raise FileNotFoundError("%s: directory %s does not exist" % (link, directory)) from None


def remove_own_link(target: str, link: str) -> None:
    """Remove ``link`` only while it is still the symlink to ``target`` this process made."""
    try:
        if os.path.islink(link) and os.readlink(link) == target:
            os.unlink(link)
    except OSError:
        pass


class PtySimulator(_StreamServer):
    """The simulated BMS behind a pseudo-terminal.

    :attr:`path` is the device to open. With ``link`` it is that symlink to the current
    pseudo-terminal, like ``/dev/serial/by-id/…``: :meth:`unplug` closes the terminal and
    removes the link (the adapter vanished), :meth:`replug` creates a new terminal behind
    the same link (the adapter is back).
    """

    def __init__(self, bms: "SimulatedBms | ReplayBms | PbBusBms", link: Optional[str] = None,
                 **kwargs: object) -> None:
        super().__init__(bms, **kwargs)  # type: ignore[arg-type]
        self._link = link
        self._fds_lock = threading.Lock()
        self._master = self._slave = -1
        self._plugged = threading.Event()
        self._open_pty()

    def _open_pty(self) -> None:
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        with self._fds_lock:
            self._master, self._slave = master, slave
        self.tty_path = os.ttyname(slave)
        if self._link:
            try:
                make_own_link(self.tty_path, self._link)
            except OSError:
                self._close_fds()
                raise
        self._plugged.set()

    @property
    def path(self) -> str:
        return self._link or self.tty_path

    def start(self) -> "PtySimulator":
        self._spawn(self._run)
        self._start_master()
        return self

    def _broadcast(self, data: bytes) -> None:
        if self._plugged.is_set():
            self._write(data)

    def unplug(self) -> None:
        """The adapter vanishes: the terminal closes (readers get an error) and the path goes."""
        self._plugged.clear()
        if self._link:
            remove_own_link(self.tty_path, self._link)
        self._close_fds()

    def replug(self) -> None:
        self._open_pty()

    def _close_fds(self) -> None:
        with self._fds_lock:
            fds, (self._master, self._slave) = (self._master, self._slave), (-1, -1)
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except OSError:
                return  # unplugged mid-reply
            view = view[written:]

    def _run(self) -> None:
        buffer = bytearray()
        try:
            while not self._stop.is_set():
                if not self._plugged.wait(0.1):
                    buffer.clear()
                    continue
                master = self._master
                try:
                    ready, _, _ = select.select([master], [], [], 0.1)
                except (OSError, ValueError):
                    continue  # closed under us by unplug()
                if not ready:
                    continue
                try:
                    data = os.read(master, 4096)
                except OSError:
                    time.sleep(0.05)  # no client has the slave open right now
                    continue
                buffer += data
                self._answer(buffer, self._write)
        finally:
            self._close_fds()
            if self._link:
                remove_own_link(self.tty_path, self._link)


class TcpSimulator(_StreamServer):
    """The simulated BMS behind a transparent TCP serial gateway (``socket://host:port``).

    ``max_clients=1`` behaves like the many gateways that serve one TCP client at a time:
    a second connection is closed at once. :meth:`reset` drops every connection and stops
    listening (gateway rebooting); :meth:`restore` listens on the same port again.
    """

    def __init__(self, bms: "SimulatedBms | ReplayBms | PbBusBms", host: str = "127.0.0.1",
                 port: int = 0,
                 max_clients: Optional[int] = None, **kwargs: object) -> None:
        super().__init__(bms, **kwargs)  # type: ignore[arg-type]
        self.max_clients = max_clients
        self._clients: List[socket.socket] = []
        self._clients_lock = threading.Lock()
        self._server = self._listen(host, port)
        self.host, self.port = self._server.getsockname()[:2]
        self.rejected_clients = 0

    @staticmethod
    def _listen(host: str, port: int) -> socket.socket:
        server = socket.create_server((host, port), reuse_port=False)
        server.settimeout(0.1)
        return server

    @property
    def url(self) -> str:
        return "socket://%s:%d" % (self.host, self.port)

    def start(self) -> "TcpSimulator":
        self._spawn(self._accept, self._server)
        self._start_master()
        return self

    def _broadcast(self, data: bytes) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            try:
                client.sendall(data)
            except OSError:
                pass

    def reset(self) -> None:
        """Drop every client with a TCP reset and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:  # SO_LINGER 0: close sends RST, as a rebooting gateway does
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
            except OSError:
                pass

    def restore(self) -> None:
        """Listen on the same port again."""
        self._server = self._listen(self.host, self.port)
        self._spawn(self._accept, self._server)

    def _accept(self, server: socket.socket) -> None:
        while not self._stop.is_set() and server is self._server:
            try:
                client, _ = server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._clients_lock:
                busy = self.max_clients is not None and len(self._clients) >= self.max_clients
                if not busy:
                    self._clients.append(client)
            if busy:
                self.rejected_clients += 1
                client.close()
                continue
            self._spawn(self._serve_client, client)
        try:
            server.close()
        except OSError:
            pass

    def _serve_client(self, client: socket.socket) -> None:
        buffer = bytearray()
        client.settimeout(0.1)
        try:
            while not self._stop.is_set():
                try:
                    data = client.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                self._answer(buffer, client.sendall)
        except OSError:
            return
        finally:
            with self._clients_lock:
                if client in self._clients:
                    self._clients.remove(client)
            client.close()

    def stop(self) -> None:
        super().stop()
        self.reset()
