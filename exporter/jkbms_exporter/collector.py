"""Prometheus collector: reads every pack when scraped, builds fresh metric families.

* Packs on different ports are read concurrently, packs on one port one after another.
* A scrape never takes longer than ``scrape_timeout``: packs that run out of budget are
  reported down with reason ``timeout``.
* Concurrent scrapes share one read (single flight), and a result younger than
  ``min_interval`` is reused, so two Prometheus servers do not double the bus traffic.
* Nothing polls in the background.
* Each port's first request is written by the scrape itself, all ports one after another,
  before the port threads wake; each thread then waits for its replies.
* A pack's samples are rendered to exposition text in its port worker as soon as its reply
  is in (:mod:`.exposition`); the scrape joins finished text. Whatever
  :func:`~.metrics.reading_groups` yields for a reading, and :func:`status_groups` for a
  pack's state, is rendered: a new per-pack family needs no change here.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from queue import Empty, SimpleQueue
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple,
)

from . import __version__
from .energy import EnergyIntegrator
from .exposition import RenderedFamily, join_families
from .errors import READ_ERROR_REASONS, FrameError, ReadTimeout, TransportError, reason_of
from .links.serial import Reception
from .links.serial_together import receive_together
from .metrics import (
    ALL_SPECS,
    BUILD_INFO,
    CHEMISTRY_INFO,
    LAST_SUCCESS,
    READ_ERRORS,
    SCRAPE_DURATION,
    UP,
    MetricSpec,
    Group,
    NO_LABELS,
    energy_groups,
    flatten,
    reading_groups,
)
from .pack import DEFAULT_CHEMISTRY, Pack
from .reading import READING_AGE_KEY, Reading
from .series import RenderedPart, SeriesLabels, SpecSample

if TYPE_CHECKING:  # only a prometheus_client registry asks for descriptions
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL = 1.0
DEFAULT_SCRAPE_TIMEOUT = 8.0
#: How long past the deadline we wait for a port worker before giving up on it.
_DEADLINE_GRACE = 0.25
#: Repeated failures of one pack are logged at most this often.
_LOG_REPEAT_INTERVAL = 300.0


@dataclass(frozen=True)
class PackResult:
    """The outcome of one pack in one poll."""

    name: str
    port: str
    reading: Optional[Reading]
    duration_seconds: float
    error: str = ""
    reason: str = ""
    frame: bytes = b""
    #: ``time.monotonic()`` when the values were measured (streamed values: less their age).
    read_at: float = 0.0
    #: The pack's samples (its status's, then its reading's) as exposition text, rendered
    #: in the port worker.
    rendered: Tuple[Tuple[MetricSpec, RenderedPart], ...] = ()

    @property
    def up(self) -> bool:
        return self.reading is not None


@dataclass
class PackStatus:
    """What outlives a poll: counters and the last good read of a pack."""

    errors: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(READ_ERROR_REASONS, 0))
    last_success_time: Optional[float] = None
    last_reading: Optional[Reading] = None
    consecutive_failures: int = 0
    last_logged: float = float("-inf")
    energy: EnergyIntegrator = field(default_factory=EnergyIntegrator)
    #: True once the pack's protocol streamed a record: the stream feeds ``energy`` then.
    streamed: bool = False
    #: Held while a result is recorded and the status rendered.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(frozen=True)
class Snapshot:
    started: float
    finished: float
    results: Tuple[PackResult, ...]


class Poller:
    """Reads all packs, at most once per ``min_interval``, sharing reads between scrapes."""

    def __init__(
        self,
        packs: Sequence[Pack],
        min_interval: float = DEFAULT_MIN_INTERVAL,
        scrape_timeout: float = DEFAULT_SCRAPE_TIMEOUT,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        names = [pack.name for pack in packs]
        if len(set(names)) != len(names):
            raise ValueError("pack names must be unique, got %s" % names)
        self.packs = list(packs)
        self.min_interval = min_interval
        self.scrape_timeout = scrape_timeout
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._snapshot: Optional[Snapshot] = None
        self.status: Dict[str, PackStatus] = {
            pack.name: PackStatus(energy=EnergyIntegrator(pack.energy_max_gap))
            for pack in self.packs}
        #: Every pack-scoped series carries ``pack`` and the union of the packs' extra
        #: labels (empty where a pack does not set one, which Prometheus treats as absent).
        extra_names = tuple(sorted({name for pack in self.packs for name, _ in pack.labels}))
        self.label_names = ("pack",) + extra_names
        self.series_labels: Dict[str, SeriesLabels] = {
            pack.name: SeriesLabels(
                self.label_names,
                (pack.name,) + tuple(dict(pack.labels).get(name, "") for name in extra_names))
            for pack in self.packs
        }
        for pack in self.packs:
            pack.subscribe(self._stream_sink(self.status[pack.name]),
                           self.status[pack.name].energy.fail)
        # one group (and worker) per port: the port's packs are read in order
        self._groups: Dict[int, List[Pack]] = {}
        for pack in self.packs:
            self._groups.setdefault(id(pack.transport), []).append(pack)
        # one worker per port, and at most one read in flight per port: a port stuck in a
        # blocking call past its deadline can never hold up another port's read
        #: Every worker's finished reads: (poll number, group key, results).
        self._finished: "SimpleQueue[Tuple[int, int, List[PackResult]]]" = SimpleQueue()
        self._workers = {
            key: _PortWorker("jkbms-port-%d" % number, key, group, self._read_group,
                             self._finished)
            for number, (key, group) in enumerate(self._groups.items())}
        self._polls = 0

    @staticmethod
    def _stream_sink(status: PackStatus) -> Callable[[float, Reading], None]:
        def on_record(at: float, reading: Reading) -> None:
            status.streamed = True
            status.energy.add_reading(at, reading)

        return on_record

    @property
    def snapshot(self) -> Optional[Snapshot]:
        return self._snapshot

    def poll(self) -> Snapshot:
        arrived = time.monotonic()
        with self._lock:
            current = self._snapshot
            if current is not None and (
                current.finished >= arrived or arrived - current.finished < self.min_interval
            ):
                return current
            started = time.monotonic()
            # reads get the budget less the grace, so the whole scrape fits scrape_timeout
            budget = max(0.05, self.scrape_timeout - _DEADLINE_GRACE)
            results = self._read_all(started + budget)
            self._snapshot = Snapshot(started, time.monotonic(), tuple(results))
            return self._snapshot

    def _read_all(self, deadline: float) -> List[PackResult]:
        self._polls += 1
        number = self._polls
        by_name: Dict[str, PackResult] = {}
        together: Dict[Reception, Tuple[int, Pack, float]] = {}
        threaded: List[int] = []
        # Every idle port's first request is written from here, one after another in a
        # fraction of a millisecond, before any port thread wakes: the replies then come
        # back together instead of one port thread's turn after another's. A port with
        # one pack of a request-reply protocol on a local serial port is then received
        # here too, with all such ports at once (receive_together).
        for key, worker in self._workers.items():
            if worker.busy:
                continue  # an earlier read is still stuck in the driver: reported below
            group = self._groups[key]
            started = time.monotonic()
            if len(group) == 1:
                reception = group[0].start_read(deadline)
                if reception is not None:
                    together[reception] = (key, group[0], started)
                    continue
            else:
                group[0].send_ahead()
            threaded.append(key)
        for key in threaded:
            self._workers[key].start(number, deadline)
        if together:
            threaded += self._receive_together(together, by_name)
        waiting = set(threaded)
        give_up = deadline + _DEADLINE_GRACE
        while waiting:
            try:
                answer, key, results = self._finished.get(
                    timeout=max(0.0, give_up - time.monotonic()))
            except Empty:
                break
            if answer == number:  # else a read of an earlier poll, stuck until now
                waiting.discard(key)
                for result in results:
                    by_name[result.name] = result
        for pack in self.packs:  # a port still busy: its packs are down, never waited for
            if pack.name not in by_name:
                by_name[pack.name] = self._finish(pack, PackResult(
                    pack.name, pack.port, None, self.scrape_timeout,
                    "port still busy past the scrape timeout", "timeout",
                ))
        return [by_name[pack.name] for pack in self.packs]

    def _receive_together(self, together: Dict[Reception, Tuple[int, Pack, float]],
                          by_name: Dict[str, PackResult]) -> List[int]:
        """Receive the replies of ``together`` on this thread, each decoded and rendered
        the moment it is whole; the keys of ports whose reply was garbled, which their
        own threads read again (with the protocol's retries), are returned."""
        again: List[int] = []
        settled = set()

        def on_frame(reception: Reception, frame: bytes) -> None:
            settled.add(reception)
            key, pack, started = together[reception]
            try:
                reading = pack.finish_read(frame)
            except Exception as error:  # every failure is reported per pack, never raised
                if isinstance(error, FrameError) and getattr(pack.protocol, "retries", 0):
                    again.append(key)
                    self._workers[key].start(self._polls, reception.deadline)
                    return
                on_error(reception, error, locked=False)
                return
            by_name[pack.name] = self._succeeded(pack, started, reading, frame)

        def on_error(reception: Reception, error: BaseException, locked: bool = True) -> None:
            settled.add(reception)
            _, pack, started = together[reception]
            if locked:
                pack.abandon_read()
            by_name[pack.name] = self._failed(pack, started, error)

        try:
            receive_together(together, on_frame, on_error)
        except Exception:  # a bug: the ports left are reported down, their locks freed
            log.error("receiving the replies together failed", exc_info=True)
            for reception in together:
                if reception not in settled:
                    on_error(reception, TransportError("receiving failed unexpectedly"))
        return again

    def busy_ports(self) -> int:
        """How many ports still have a read in flight (stuck past an earlier scrape)."""
        return sum(worker.busy for worker in self._workers.values())

    def _read_group(self, group: Sequence[Pack], deadline: float) -> List[PackResult]:
        return [self._read_one(pack, deadline) for pack in group]

    def _read_one(self, pack: Pack, deadline: float) -> PackResult:
        started = time.monotonic()
        try:
            if started >= deadline:
                raise ReadTimeout("scrape timeout reached before this pack's turn")
            reading, frame = pack.read(deadline)
        except Exception as error:  # every failure is reported per pack, never raised
            return self._failed(pack, started, error)
        return self._succeeded(pack, started, reading, frame)

    def _succeeded(self, pack: Pack, started: float, reading: Reading, frame: bytes
                   ) -> PackResult:
        """The finished result of a read that began at ``started`` and gave ``reading``."""
        finished = time.monotonic()
        age = float(reading.extra.get(READING_AGE_KEY, 0.0))  # type: ignore[arg-type]
        return self._finish(pack, PackResult(pack.name, pack.port, reading, finished - started,
                                             frame=frame, read_at=finished - age))

    def _failed(self, pack: Pack, started: float, error: BaseException) -> PackResult:
        """The finished result of a read that began at ``started`` and raised ``error``."""
        if not hasattr(error, "reason"):
            log.debug("unexpected error reading %s", pack.name, exc_info=error)
        return self._finish(pack, PackResult(
            pack.name, pack.port, None, time.monotonic() - started,
            str(error) or type(error).__name__, reason_of(error),
        ))

    def _finish(self, pack: Pack, result: PackResult) -> PackResult:
        """``result`` recorded in the pack's status, with all its samples (the status's,
        then the reading's) rendered into it: in the port worker, as soon as the reply is
        in. ``result`` is new and seen by nobody else yet."""
        status = self.status[pack.name]
        with status.lock:  # a port stuck past one scrape may finish during the next
            self._record(result, status)
            groups = status_groups(result, status, pack.chemistry)
            if result.reading is not None:
                groups += reading_groups(result.reading, pack.port)
            object.__setattr__(result, "rendered",
                               self.series_labels[pack.name].render_groups(groups))
        return result

    def _record(self, result: PackResult, status: PackStatus) -> None:
        now = time.monotonic()
        if result.up:
            if status.consecutive_failures:
                log.info(
                    "pack %s: reading again after %d failed read(s)",
                    result.name, status.consecutive_failures,
                )
            status.consecutive_failures = 0
            status.last_success_time = self._wall_clock()
            status.last_reading = result.reading
            if not status.streamed:  # a stream fed every record already
                status.energy.add_reading(result.read_at, result.reading)  # type: ignore[arg-type]
            return
        status.energy.fail(now)
        status.errors[result.reason] += 1
        status.consecutive_failures += 1
        if status.consecutive_failures == 1 or now - status.last_logged >= _LOG_REPEAT_INTERVAL:
            status.last_logged = now
            suffix = "" if status.consecutive_failures == 1 else (
                " (%d failures in a row; repeats are logged every %d s)"
                % (status.consecutive_failures, _LOG_REPEAT_INTERVAL)
            )
            log.warning("pack %s: read failed (%s): %s%s", result.name, result.reason,
                        result.error, suffix)

    def close(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        for pack in self.packs:
            pack.close()


class _PortWorker:
    """One port's thread: runs the reads it is handed, one at a time, and hands back the
    results. Started on first use; ends on :meth:`stop`."""

    def __init__(self, name: str, key: int, group: Sequence[Pack],
                 read: Callable[[Sequence[Pack], float], List[PackResult]],
                 finished: "SimpleQueue[Tuple[int, int, List[PackResult]]]") -> None:
        self.name = name
        self.key = key
        self.group = group
        self._read = read
        self._finished = finished
        self._jobs: "SimpleQueue[Optional[Tuple[int, float]]]" = SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        #: True from :meth:`start` until the results are handed back.
        self.busy = False

    def start(self, number: int, deadline: float) -> None:
        """Read the group for poll ``number``; (number, key, results) go to ``finished``."""
        self.busy = True
        self._jobs.put((number, deadline))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        get = self._jobs.get
        while True:
            job = get()
            if job is None:
                return
            number, deadline = job
            try:
                results = self._read(self.group, deadline)
            except Exception:  # a bug: the port's packs are reported down, the thread lives
                log.error("%s: reading failed unexpectedly", self.name, exc_info=True)
                results = []
            self.busy = False
            self._finished.put((number, self.key, results))

    def stop(self) -> None:
        self._jobs.put(None)


def _family(spec: MetricSpec, pack_labels: Tuple[str, ...]) -> Metric:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    labels = list(pack_labels + spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.full_name[: -len("_total")], spec.help, labels=labels)
    return GaugeMetricFamily(spec.full_name, spec.help, labels=labels)


_REASON_LABELS = tuple((reason,) for reason in READ_ERROR_REASONS)


def status_groups(result: PackResult, status: PackStatus,
                  chemistry: str = DEFAULT_CHEMISTRY) -> List[Group]:
    """A pack's samples that do not come from its reading, present whether it read or
    not, as runs of one spec each."""
    groups: List[Group] = [
        (UP, NO_LABELS, [1 if result.up else 0]),
        (CHEMISTRY_INFO, ((chemistry,),), [1]),
        (SCRAPE_DURATION, NO_LABELS, [result.duration_seconds]),
    ]
    if status.last_success_time is not None:
        groups.append((LAST_SUCCESS, NO_LABELS, [status.last_success_time]))
    errors = status.errors
    groups.append((READ_ERRORS, _REASON_LABELS, [errors[reason] for reason in READ_ERROR_REASONS]))
    groups += energy_groups(status.energy.totals())
    return groups


def status_samples(result: PackResult, status: PackStatus,
                   chemistry: str = DEFAULT_CHEMISTRY) -> Iterator[SpecSample]:
    """:func:`status_groups`, sample by sample."""
    return flatten(status_groups(result, status, chemistry))


class JkbmsCollector:
    """The exporter's metric families, read on each :meth:`collect`.

    Families come out as :class:`~.exposition.RenderedFamily`: pre-rendered text to
    :func:`~.exposition.make_metrics_app`, which serves the collector directly. It is also a
    prometheus_client custom collector (``describe``, ``collect``), for registries that want
    ordinary samples (the tests compare both).
    """

    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self._build_info = SeriesLabels((), ()).render(
            [(BUILD_INFO, (__version__, platform.python_version()), 1)])

    def describe(self) -> Iterable[Metric]:
        # Families without samples: registering the collector never touches a port.
        for spec in ALL_SPECS:
            yield _family(spec, () if spec is BUILD_INFO else self.poller.label_names)

    def collect(self) -> Iterator[RenderedFamily]:
        snapshot = self.poller.poll()
        families: Dict[str, RenderedFamily] = {}
        for result in snapshot.results:
            join_families(result.rendered, families)
        yield from families.values()
        yield from join_families(self._build_info).values()
