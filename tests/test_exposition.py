"""Pre-rendered exposition: the same bytes prometheus_client writes for the same families."""

from __future__ import annotations

import gzip
import math
import threading
import urllib.request
from typing import Dict, Iterator, List, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.utils import floatToGoString

from jkbms_exporter.collector import JkbmsCollector, Poller, status_samples
from jkbms_exporter.exposition import join_families, render_registry
from jkbms_exporter.series import SeriesLabels, format_value
from jkbms_exporter.metrics import MetricSpec, reading_samples
from jkbms_exporter.pack import JkSerialProtocol, Pack
from jkbms_exporter.protocols import jk_serial
from jkbms_exporter.sim.bms import SimulatedBms
from jkbms_exporter.web.server import ExporterApp, make_http_server, serve_in_thread

OPENMETRICS = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
               "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


class FrameTransport:
    """Answers every request with the next of the given frames (no I/O)."""

    def __init__(self, frames: Sequence[bytes]) -> None:
        self.url = "test://frames"
        self.lock = threading.Lock()
        self.frames = list(frames)
        self.index = 0

    def exchange(self, request: bytes, framer: object, timeout: float) -> bytes:
        frame = self.frames[min(self.index, len(self.frames) - 1)]
        self.index += 1
        return frame

    def close(self) -> None:
        pass


class ReferenceCollector:
    """The families as prometheus_client's own classes hold them (the collector before
    pre-rendering): the oracle the rendered bytes are compared with."""

    def __init__(self, poller: Poller) -> None:
        self.poller = poller

    def collect(self) -> Iterator[Metric]:
        families: Dict[str, Metric] = {}
        for result in self.poller.snapshot.results:  # type: ignore[union-attr]
            fixed = self.poller.series_labels[result.name].values
            status = self.poller.status[result.name]
            samples = list(status_samples(result, status))
            if result.reading is not None:
                samples += reading_samples(result.reading, result.port)
            for spec, labels, value in samples:
                family = families.get(spec.name)
                if family is None:
                    names = list(self.poller.label_names + spec.labels)
                    family = families[spec.name] = (
                        CounterMetricFamily(spec.full_name[:-6], spec.help, labels=names)
                        if spec.kind == "counter" else
                        GaugeMetricFamily(spec.full_name, spec.help, labels=names))
                family.add_metric(list(fixed + labels), float(value))
        yield from families.values()


def frames(count: int, cells: int = 16) -> List[bytes]:
    bms = SimulatedBms(cells=cells, seed=7)
    return [jk_serial.encode_reading(bms.reading()) for _ in range(count)]


def registries(packs: List[Pack]) -> Tuple[Poller, CollectorRegistry, CollectorRegistry]:
    poller = Poller(packs, min_interval=3600)
    ours, reference = CollectorRegistry(), CollectorRegistry()
    ours.register(JkbmsCollector(poller))
    reference.register(ReferenceCollector(poller))
    return poller, ours, reference


def without_build_info(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "exporter_build_info" not in line)


def assert_same_bytes(ours: CollectorRegistry, reference: CollectorRegistry) -> None:
    text, content_type = render_registry(ours, None)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert without_build_info(text.decode()) == without_build_info(
        generate_latest(reference).decode())
    text, content_type = render_registry(ours, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    expected = openmetrics_latest(reference).decode()
    assert without_build_info(text.decode()) == without_build_info(expected)
    assert text.decode().endswith("# EOF\n")


AWKWARD = 'quote " backslash \\ newline \n percent %s %% unicode \u00e9\u2603'


def test_rendered_text_is_prometheus_clients_for_packs_with_awkward_labels() -> None:
    packs = [
        Pack("house", FrameTransport(frames(3)), JkSerialProtocol(), labels=(("site", AWKWARD),)),
        Pack("shed", FrameTransport(frames(3, cells=4)), JkSerialProtocol()),
        Pack("gone", FrameTransport([b"NW junk"]), JkSerialProtocol(retries=0),
             labels=(("rack", "r1"),)),
    ]
    poller, ours, reference = registries(packs)
    for _ in range(3):  # new values each time, so the reuse of unchanged parts is exercised
        poller.min_interval = 0
        poller.poll()
        poller.min_interval = 3600
        assert_same_bytes(ours, reference)
    assert 'site="quote \\" backslash \\\\ newline \\n percent %s %% unicode' in \
        render_registry(ours, None)[0].decode()


def test_generate_latest_and_name_filters_still_see_ordinary_samples() -> None:
    poller, ours, reference = registries(
        [Pack("a", FrameTransport(frames(1)), JkSerialProtocol())])
    poller.poll()
    assert without_build_info(generate_latest(ours).decode()) == without_build_info(
        generate_latest(reference).decode())
    restricted = generate_latest(ours.restricted_registry(["jkbms_up"])).decode()
    assert 'jkbms_up{pack="a"} 1.0' in restricted and "jkbms_cells" not in restricted


SPEC = MetricSpec("x", "gauge", "x", ("cell",))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.floats(allow_nan=True)), max_size=6),
       st.text(max_size=8))
def test_any_label_value_and_float_renders_as_prometheus_client_does(
        samples: List[Tuple[str, float]], pack: str) -> None:
    labels = SeriesLabels(("pack",), (pack,))
    for _ in range(2):  # the second render reuses the first's text
        rendered = join_families(labels.render((SPEC, (label,), value)
                                               for label, value in samples))
        family = GaugeMetricFamily("jkbms_x", "x", labels=["pack", "cell"])
        for label, value in samples:
            family.add_metric([pack, label], value)
        expected = generate_latest(OneMetric(family)).decode().split("\n", 2)[2]
        got = "".join(part.text for f in rendered.values() for part in f.parts)
        if any(value == 0 for _, value in samples):  # 0.0 == -0.0: compare as numbers
            got, expected = got.replace("-0.0", "0.0"), expected.replace("-0.0", "0.0")
        assert got == expected


class OneMetric:
    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self.metric


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_format_value_is_go_formatting(value: float) -> None:
    assert format_value(value) == floatToGoString(value)
    assert format_value(value) == floatToGoString(value)  # from the cache
    assert format_value(-0.0) == "-0.0" and format_value(0.0) == "0.0"
    if math.isfinite(value) and value and value == int(value) and abs(value) < 2**53:
        assert format_value(int(value)) == floatToGoString(value)


def test_a_changed_value_is_rendered_again() -> None:
    labels = SeriesLabels(("pack",), ("p",))
    spec = MetricSpec("v", "gauge", "v", ("cell",))
    first = labels.render([(spec, ("01",), 3.3), (spec, ("02",), 3.4)])
    second = labels.render([(spec, ("01",), 3.3), (spec, ("02",), 3.5)])
    assert first[0][1].text.endswith('cell="02",pack="p"} 3.4\n')
    assert second[0][1].text.endswith('cell="02",pack="p"} 3.5\n')


def test_http_negotiation_gzip_and_name_filter() -> None:
    packs = [Pack("a", FrameTransport(frames(1)), JkSerialProtocol())]
    poller = Poller(packs, min_interval=0)
    registry = CollectorRegistry()
    registry.register(JkbmsCollector(poller))
    server = make_http_server(ExporterApp(registry, poller), "127.0.0.1:0")
    serve_in_thread(server)
    url = "http://127.0.0.1:%d/metrics" % server.server_address[1]

    def get(path: str = "", **headers: str) -> Tuple[str, str, bytes]:
        request = urllib.request.Request(url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return (response.headers["Content-Type"],
                    response.headers.get("Content-Encoding", ""), response.read())

    try:
        content_type, encoding, body = get(**{"Accept": OPENMETRICS, "Accept-Encoding": "gzip"})
        assert content_type.startswith("application/openmetrics-text") and encoding == "gzip"
        text = gzip.decompress(body).decode()
        families = {family.name: family for family in parse_om(text)}
        assert families["jkbms_read_errors"].type == "counter"
        assert len(families["jkbms_cell_voltage_volts"].samples) == 16
        content_type, encoding, body = get()
        assert content_type.startswith("text/plain; version=0.0.4") and encoding == ""
        assert b'jkbms_up{pack="a"} 1.0\n' in body and b"# EOF" not in body
        _, _, body = get("?name[]=jkbms_cells")
        assert body.decode().count("\njkbms_") == 1 and b'jkbms_cells{pack="a"} 16.0' in body
    finally:
        server.shutdown()
        server.server_close()
        poller.close()


@pytest.mark.parametrize("cells", [4, 32])
def test_promtool_accepts_the_rendered_text(promtool: str, cells: int) -> None:
    import subprocess

    poller, ours, _ = registries([Pack("p", FrameTransport(frames(1, cells)), JkSerialProtocol(),
                                       labels=(("site", AWKWARD),))])
    poller.poll()
    text = render_registry(ours, None)[0].decode()  # promtool reads the text format only
    result = subprocess.run([promtool, "check", "metrics"], input=text,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout + result.stderr, \
        result.stdout + result.stderr
    names = {family.name for family in parse_om(render_registry(ours, OPENMETRICS)[0].decode())}
    assert {"jkbms_up", "jkbms_read_errors", "jkbms_cell_voltage_volts"} <= names
