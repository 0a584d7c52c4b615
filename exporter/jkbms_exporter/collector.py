"""Prometheus collector: reads every pack when scraped, builds fresh metric families.

* Packs on different ports are read concurrently, packs on one port one after another.
* A scrape never takes longer than ``scrape_timeout``: packs that run out of budget are
  reported down with reason ``timeout``.
* Concurrent scrapes share one read (single flight), and a result younger than
  ``min_interval`` is reused, so two Prometheus servers do not double the bus traffic.
* Nothing polls in the background.
* A pack's samples are rendered to exposition text in its port worker as soon as its reply
  is in (:mod:`.exposition`); the scrape joins finished text. Whatever
  :func:`~.metrics.reading_samples` yields for a reading, and :func:`status_samples` for a
  pack's state, is rendered: a new per-pack family needs no change here.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple,
)

from . import __version__
from .energy import EnergyIntegrator
from .exposition import RenderedFamily, join_families
from .errors import READ_ERROR_REASONS, ReadTimeout, reason_of
from .metrics import (
    ALL_SPECS,
    BUILD_INFO,
    CHEMISTRY_INFO,
    LAST_SUCCESS,
    READ_ERRORS,
    SCRAPE_DURATION,
    UP,
    MetricSpec,
    energy_samples,
    reading_samples,
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
    #: The reading's samples as exposition text, rendered in the port worker.
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
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, len(self._groups)), thread_name_prefix="jkbms-port"
        )
        self._in_flight: Dict[int, "Future[List[PackResult]]"] = {}

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
        futures: Dict[int, "Future[List[PackResult]]"] = {}
        stuck: List[int] = []
        for key, group in self._groups.items():
            previous = self._in_flight.get(key)
            if previous is not None and not previous.done():
                stuck.append(key)  # an earlier read is still blocked in the driver
                continue
            futures[key] = self._in_flight[key] = self._executor.submit(
                self._read_group, group, deadline)
        wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()) + _DEADLINE_GRACE)
        by_name: Dict[str, PackResult] = {}
        for key, future in futures.items():
            if future.done():
                for result in future.result():
                    by_name[result.name] = result
            else:
                stuck.append(key)
        for key in stuck:  # report the port's packs down, never wait for them
            for pack in self._groups[key]:
                by_name[pack.name] = PackResult(
                    pack.name, pack.port, None, self.scrape_timeout,
                    "port still busy past the scrape timeout", "timeout",
                )
        results = [by_name[pack.name] for pack in self.packs]
        for result in results:
            self._record(result)
        return results

    def _read_group(self, group: Sequence[Pack], deadline: float) -> List[PackResult]:
        return [self._read_one(pack, deadline) for pack in group]

    def _read_one(self, pack: Pack, deadline: float) -> PackResult:
        started = time.monotonic()
        try:
            if started >= deadline:
                raise ReadTimeout("scrape timeout reached before this pack's turn")
            reading, frame = pack.read(deadline)
        except Exception as error:  # every failure is reported per pack, never raised
            if not hasattr(error, "reason"):
                log.debug("unexpected error reading %s", pack.name, exc_info=True)
            return PackResult(
                pack.name, pack.port, None, time.monotonic() - started,
                str(error) or type(error).__name__, reason_of(error),
            )
        finished = time.monotonic()
        age = float(reading.extra.get(READING_AGE_KEY, 0.0))  # type: ignore[arg-type]
        rendered = self.series_labels[pack.name].render(reading_samples(reading, pack.port))
        return PackResult(pack.name, pack.port, reading, finished - started, frame=frame,
                          read_at=finished - age, rendered=rendered)

    def _record(self, result: PackResult) -> None:
        status = self.status[result.name]
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
        self._executor.shutdown(wait=False)
        for pack in self.packs:
            pack.close()


def _family(spec: MetricSpec, pack_labels: Tuple[str, ...]) -> Metric:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    labels = list(pack_labels + spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.full_name[: -len("_total")], spec.help, labels=labels)
    return GaugeMetricFamily(spec.full_name, spec.help, labels=labels)


def status_samples(result: PackResult, status: PackStatus,
                   chemistry: str = DEFAULT_CHEMISTRY) -> Iterator[SpecSample]:
    """A pack's samples that do not come from its reading: present whether it read or not."""
    yield UP, (), 1 if result.up else 0
    yield CHEMISTRY_INFO, (chemistry,), 1
    yield SCRAPE_DURATION, (), result.duration_seconds
    if status.last_success_time is not None:
        yield LAST_SUCCESS, (), status.last_success_time
    for reason in READ_ERROR_REASONS:
        yield READ_ERRORS, (reason,), status.errors[reason]
    yield from energy_samples(status.energy.totals())


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
        self._chemistry = {pack.name: pack.chemistry for pack in poller.packs}

    def describe(self) -> Iterable[Metric]:
        # Families without samples: registering the collector never touches a port.
        for spec in ALL_SPECS:
            yield _family(spec, () if spec is BUILD_INFO else self.poller.label_names)

    def collect(self) -> Iterator[RenderedFamily]:
        snapshot = self.poller.poll()
        families: Dict[str, RenderedFamily] = {}
        for result in snapshot.results:
            status = self.poller.status[result.name]
            labels = self.poller.series_labels[result.name]
            join_families(labels.render(status_samples(result, status, self._chemistry[result.name])),
                          families)
            join_families(result.rendered, families)
        yield from families.values()
        yield from join_families(self._build_info).values()
